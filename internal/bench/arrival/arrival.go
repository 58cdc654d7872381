// Package arrival generates request arrival times for Baton's benchmark
// client: inter-arrival gaps for open-loop load at a target rate, and the
// placement of a known number of arrivals inside a window for trace replay
// (traces such as Azure Functions' give invocation counts per minute).
package arrival

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Kind is the distribution of inter-arrival gaps.
type Kind string

const (
	// Exponential gaps make a Poisson process: arrivals are independent of
	// each other, which is what many independent clients produce.
	Exponential Kind = "exponential"
	// Uniform gaps are drawn uniformly from [0, 2/rate]: random, but with
	// less variance than a Poisson process (coefficient of variation 1/√3).
	Uniform Kind = "uniform"
	// Fixed gaps are exactly 1/rate.
	Fixed Kind = "fixed"
)

// kinds lists the accepted kinds, in the order shown to users.
var kinds = []Kind{Exponential, Uniform, Fixed}

// ParseKind parses a kind name, case-insensitively. "poisson" is accepted
// as another name for exponential gaps, since that is the process they
// make.
func ParseKind(s string) (Kind, error) {
	k := Kind(strings.ToLower(strings.TrimSpace(s)))
	if k == "poisson" {
		return Exponential, nil
	}
	if slices.Contains(kinds, k) {
		return k, nil
	}
	return "", fmt.Errorf("unknown arrival distribution %q: want one of exponential (or poisson), uniform, fixed", s)
}

// Generator yields successive inter-arrival gaps. A Generator is not safe
// for concurrent use.
type Generator interface {
	// Next returns the gap to the next arrival. The mean gap is 1/rate.
	Next() time.Duration
}

// New returns a generator of gaps of the given kind (normalised as by
// ParseKind) with a mean of 1/ratePerSec seconds. The same seed gives the
// same sequence.
func New(kind Kind, ratePerSec float64, seed uint64) (Generator, error) {
	if math.IsNaN(ratePerSec) || math.IsInf(ratePerSec, 0) || ratePerSec <= 0 {
		return nil, fmt.Errorf("arrival rate must be a positive finite number of requests per second, got %v", ratePerSec)
	}
	meanNs := 1e9 / ratePerSec
	// Uniform gaps reach twice the mean; keep every gap representable.
	if 2*meanNs >= math.MaxInt64 {
		return nil, fmt.Errorf("arrival rate %v/s is too low: the mean gap does not fit a time.Duration", ratePerSec)
	}
	k, err := ParseKind(string(kind))
	if err != nil {
		return nil, err
	}
	// The second PCG word is a fixed odd constant so that callers only
	// manage one seed.
	return &gen{kind: k, r: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)), meanNs: meanNs}, nil
}

type gen struct {
	kind   Kind
	r      *rand.Rand
	meanNs float64
	carry  float64 // rounding error of the gaps returned so far, in ns
}

// draw returns the next gap in fractional nanoseconds.
func (g *gen) draw() float64 {
	switch g.kind {
	case Exponential:
		return g.r.ExpFloat64() * g.meanNs
	case Uniform:
		return g.r.Float64() * 2 * g.meanNs
	default:
		return g.meanNs
	}
}

// Next rounds the drawn gap to whole nanoseconds but carries the rounding
// error into the next gap, so that the schedule (the running sum of gaps)
// never drifts: at 3 req/s a fixed gap of 333333333.3 ns would otherwise
// lose a third of a nanosecond per request.
func (g *gen) Next() time.Duration {
	t := g.carry + g.draw()
	d := math.Round(t)
	if d >= math.MaxInt64 { // only in the exponential's far tail
		g.carry = 0
		return time.Duration(math.MaxInt64)
	}
	g.carry = t - d
	return time.Duration(d)
}

// Spread places n arrivals inside [0, window) and returns their offsets in
// ascending order.
//
// kind "poisson" (or "exponential") draws n independent uniform points,
// which is a Poisson process conditioned on having n events in the window:
// the natural way to replay a per-minute invocation count. "uniform" and
// "fixed" space them evenly at window*(i+0.5)/n, deterministic and without
// bursts. r is only used, and must only be non-nil, for "poisson".
func Spread(n int, window time.Duration, kind string, r *rand.Rand) ([]time.Duration, error) {
	k, err := ParseKind(kind)
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, fmt.Errorf("number of arrivals must not be negative, got %d", n)
	}
	if window <= 0 {
		return nil, fmt.Errorf("arrival window must be positive, got %v", window)
	}
	out := make([]time.Duration, n)
	if n == 0 {
		return out, nil
	}
	if k == Exponential {
		if r == nil {
			return nil, fmt.Errorf("poisson arrivals need a random source, got nil")
		}
		for i := range out {
			out[i] = time.Duration(r.Int64N(int64(window)))
		}
		slices.Sort(out)
		return out, nil
	}
	// window*(2i+1)/(2n) in 128-bit integer arithmetic: exact, and it
	// cannot overflow even for long windows and large n. The quotient is
	// below window, so Div64's precondition hi < 2n holds.
	den := 2 * uint64(n)
	for i := range out {
		hi, lo := bits.Mul64(uint64(window), 2*uint64(i)+1)
		q, _ := bits.Div64(hi, lo, den)
		out[i] = time.Duration(q)
	}
	return out, nil
}
