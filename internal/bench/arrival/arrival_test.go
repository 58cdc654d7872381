package arrival

import (
	"math"
	"math/big"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// ksAlpha is the significance of the Kolmogorov–Smirnov tests: with fixed
// seeds a test either always passes or always fails, so this only sets how
// far off a distribution may be before the test notices. ksCrit is the
// asymptotic critical value c(α) = sqrt(-ln(α/2)/2) for α = 0.001.
const (
	ksAlpha = 0.001
	ksCrit  = 1.9495
)

// ksStat is the Kolmogorov–Smirnov statistic of the samples (sorted in
// place) against the continuous CDF cdf.
func ksStat(x []float64, cdf func(float64) float64) float64 {
	slices.Sort(x)
	n := float64(len(x))
	d := 0.0
	for i, v := range x {
		f := cdf(v)
		d = max(d, f-float64(i)/n, float64(i+1)/n-f)
	}
	return d
}

// ksRejects reports whether the samples are unlikely (p < ksAlpha) to come
// from cdf.
func ksRejects(x []float64, cdf func(float64) float64) (bool, float64, float64) {
	d := ksStat(x, cdf)
	crit := ksCrit / math.Sqrt(float64(len(x)))
	return d > crit, d, crit
}

func expCDF(rate float64) func(float64) float64 {
	return func(x float64) float64 {
		if x <= 0 {
			return 0
		}
		return -math.Expm1(-rate * x)
	}
}

func uniformCDF(lo, hi float64) func(float64) float64 {
	return func(x float64) float64 { return min(max((x-lo)/(hi-lo), 0), 1) }
}

// gaps draws n gaps in seconds.
func gaps(t *testing.T, kind Kind, rate float64, seed uint64, n int) []float64 {
	t.Helper()
	g, err := New(kind, rate, seed)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float64, n)
	for i := range out {
		d := g.Next()
		if d < 0 {
			t.Fatalf("negative gap %v", d)
		}
		out[i] = d.Seconds()
	}
	return out
}

func meanCV(x []float64) (mean, cv float64) {
	for _, v := range x {
		mean += v
	}
	mean /= float64(len(x))
	var ss float64
	for _, v := range x {
		ss += (v - mean) * (v - mean)
	}
	return mean, math.Sqrt(ss/float64(len(x)-1)) / mean
}

func TestExponential(t *testing.T) {
	const n = 100_000
	for _, tc := range []struct {
		rate float64
		seed uint64
	}{{1000, 1}, {3.7, 2}, {50_000, 3}} {
		x := gaps(t, Exponential, tc.rate, tc.seed, n)
		mean, cv := meanCV(x)
		if want := 1 / tc.rate; math.Abs(mean-want) > 0.02*want {
			t.Errorf("rate %v: mean gap %v, want %v ±2%%", tc.rate, mean, want)
		}
		if math.Abs(cv-1) > 0.03 {
			t.Errorf("rate %v: coefficient of variation %v, want 1 ±0.03", tc.rate, cv)
		}
		if rej, d, crit := ksRejects(x, expCDF(tc.rate)); rej {
			t.Errorf("rate %v: KS D=%.5f > %.5f: gaps are not exponential", tc.rate, d, crit)
		}
	}
}

func TestUniform(t *testing.T) {
	const n = 100_000
	for _, tc := range []struct {
		rate float64
		seed uint64
	}{{1000, 4}, {0.5, 5}} {
		x := gaps(t, Uniform, tc.rate, tc.seed, n)
		mean, cv := meanCV(x)
		if want := 1 / tc.rate; math.Abs(mean-want) > 0.02*want {
			t.Errorf("rate %v: mean gap %v, want %v ±2%%", tc.rate, mean, want)
		}
		if want := 1 / math.Sqrt(3); math.Abs(cv-want) > 0.02 {
			t.Errorf("rate %v: coefficient of variation %v, want %v", tc.rate, cv, want)
		}
		// Gaps are rounded to nanoseconds, so allow one on the upper bound.
		if lo, hi := slices.Min(x), slices.Max(x); lo < 0 || hi > 2/tc.rate+1e-9 {
			t.Errorf("rate %v: gaps in [%v, %v], want within [0, %v]", tc.rate, lo, hi, 2/tc.rate)
		}
		if rej, d, crit := ksRejects(x, uniformCDF(0, 2/tc.rate)); rej {
			t.Errorf("rate %v: KS D=%.5f > %.5f: gaps are not uniform", tc.rate, d, crit)
		}
	}
}

// TestKSHasPower makes sure the distribution tests above would fail if the
// generators drew from the wrong distribution or at a slightly wrong rate.
func TestKSHasPower(t *testing.T) {
	const n = 100_000
	exp := gaps(t, Exponential, 1000, 1, n)
	uni := gaps(t, Uniform, 1000, 4, n)
	for name, c := range map[string]struct {
		x   []float64
		cdf func(float64) float64
	}{
		"exponential vs uniform CDF":     {slices.Clone(exp), uniformCDF(0, 2e-3)},
		"uniform vs exponential CDF":     {slices.Clone(uni), expCDF(1000)},
		"exponential vs 3% faster rate":  {slices.Clone(exp), expCDF(1030)},
		"exponential vs 3% slower rate":  {slices.Clone(exp), expCDF(970)},
		"uniform vs 3% narrower support": {slices.Clone(uni), uniformCDF(0, 2e-3*0.97)},
	} {
		if rej, d, crit := ksRejects(c.x, c.cdf); !rej {
			t.Errorf("%s: KS D=%.5f <= %.5f, the test cannot tell them apart", name, d, crit)
		}
	}
}

func TestFixed(t *testing.T) {
	g, err := New(Fixed, 4, 0)
	if err != nil {
		t.Fatal(err)
	}
	for range 1000 {
		if d := g.Next(); d != 250*time.Millisecond {
			t.Fatalf("fixed gap %v, want 250ms", d)
		}
	}
}

// TestNoDrift checks that rounding gaps to nanoseconds does not make the
// schedule drift: after n gaps at 3/s the sum is n/3 s to the nanosecond.
func TestNoDrift(t *testing.T) {
	g, err := New(Fixed, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	var sum time.Duration
	for i := 1; i <= 3_000_000; i++ {
		d := g.Next()
		if d != 333333333 && d != 333333334 {
			t.Fatalf("gap %d is %v", i, d)
		}
		sum += d
		if want := int64(math.Round(float64(i) * 1e9 / 3)); i%1000 == 0 && math.Abs(float64(int64(sum)-want)) > 1 {
			t.Fatalf("after %d gaps the schedule is at %d ns, want %d", i, sum, want)
		}
	}
}

func TestDeterministic(t *testing.T) {
	for _, k := range kinds {
		a, b, c := gaps(t, k, 100, 7, 100), gaps(t, k, 100, 7, 100), gaps(t, k, 100, 8, 100)
		if !slices.Equal(a, b) {
			t.Errorf("%s: same seed, different gaps", k)
		}
		if k != Fixed && slices.Equal(a, c) {
			t.Errorf("%s: different seeds, same gaps", k)
		}
	}
}

func TestParseKind(t *testing.T) {
	for in, want := range map[string]Kind{
		"exponential": Exponential, "Poisson": Exponential, " uniform ": Uniform, "FIXED": Fixed,
	} {
		if got, err := ParseKind(in); err != nil || got != want {
			t.Errorf("ParseKind(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "gamma", "expo"} {
		_, err := ParseKind(in)
		if err == nil {
			t.Errorf("ParseKind(%q): no error", in)
			continue
		}
		for _, k := range kinds {
			if !strings.Contains(err.Error(), string(k)) {
				t.Errorf("ParseKind(%q): error %q does not name %q", in, err, k)
			}
		}
	}
}

func TestNewErrors(t *testing.T) {
	for _, rate := range []float64{0, -1, math.NaN(), math.Inf(1), math.Inf(-1), 1e-12} {
		if _, err := New(Exponential, rate, 1); err == nil || !strings.Contains(err.Error(), "rate") {
			t.Errorf("New(rate %v): error %v, want one about the rate", rate, err)
		}
	}
	if _, err := New("gamma", 10, 1); err == nil || !strings.Contains(err.Error(), "exponential") {
		t.Errorf("New(gamma): error %v", err)
	}
	if _, err := New("Poisson", 10, 1); err != nil {
		t.Errorf("New(Poisson): %v", err)
	}
}

func TestSpreadPoisson(t *testing.T) {
	const n = 100_000
	window := time.Minute
	r := rand.New(rand.NewPCG(9, 10))
	out, err := Spread(n, window, "poisson", r)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != n {
		t.Fatalf("got %d arrivals, want %d", len(out), n)
	}
	if !slices.IsSorted(out) {
		t.Error("arrivals not sorted")
	}
	if out[0] < 0 || out[n-1] >= window {
		t.Errorf("arrivals span [%v, %v], want inside [0, %v)", out[0], out[n-1], window)
	}
	x := make([]float64, n)
	for i, d := range out {
		x[i] = d.Seconds()
	}
	if rej, d, crit := ksRejects(slices.Clone(x), uniformCDF(0, window.Seconds())); rej {
		t.Errorf("KS D=%.5f > %.5f: arrivals are not uniform over the window", d, crit)
	}
	// Power: the same points must not pass as uniform over a window 3%
	// shorter or longer.
	for _, w := range []float64{0.97, 1.03} {
		if rej, d, crit := ksRejects(slices.Clone(x), uniformCDF(0, window.Seconds()*w)); !rej {
			t.Errorf("KS D=%.5f <= %.5f against a window of %v×", d, crit, w)
		}
	}
	// Conditioned on n events the gaps are (nearly) exponential with
	// rate n/window; a test of the process, not only of the positions.
	g := make([]float64, n-1)
	for i := range g {
		g[i] = x[i+1] - x[i]
	}
	if rej, d, crit := ksRejects(g, expCDF(n/window.Seconds())); rej {
		t.Errorf("KS D=%.5f > %.5f: gaps are not exponential", d, crit)
	}
}

func TestSpreadEven(t *testing.T) {
	for _, kind := range []string{"uniform", "fixed"} {
		out, err := Spread(4, time.Second, kind, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := []time.Duration{125 * time.Millisecond, 375 * time.Millisecond, 625 * time.Millisecond, 875 * time.Millisecond}
		if !slices.Equal(out, want) {
			t.Errorf("%s: %v, want %v", kind, out, want)
		}
	}
	// Long window and many arrivals: window*(2i+1) overflows int64 but the
	// result must still be exact.
	const n = 3_000_000
	window := 1000 * time.Hour
	out, err := Spread(n, window, "fixed", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != n || !slices.IsSorted(out) || out[0] < 0 || out[n-1] >= window {
		t.Fatalf("bad spread: len %d, first %v, last %v", len(out), out[0], out[n-1])
	}
	for _, i := range []int{0, 1, n / 2, n - 2, n - 1} {
		num := new(big.Int).Mul(big.NewInt(int64(window)), big.NewInt(int64(2*i+1)))
		want := num.Div(num, big.NewInt(2*n)).Int64()
		if int64(out[i]) != want {
			t.Errorf("arrival %d at %d, want %d", i, out[i], want)
		}
	}
}

func TestSpreadEdge(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	if out, err := Spread(0, time.Minute, "poisson", r); err != nil || len(out) != 0 {
		t.Errorf("n=0: %v, %v", out, err)
	}
	out, err := Spread(5, 3*time.Nanosecond, "poisson", r)
	if err != nil || len(out) != 5 || slices.Max(out) >= 3 {
		t.Errorf("tiny window: %v, %v", out, err)
	}
	for name, f := range map[string]func() error{
		"negative n":    func() error { _, err := Spread(-1, time.Minute, "fixed", nil); return err },
		"zero window":   func() error { _, err := Spread(3, 0, "fixed", nil); return err },
		"bad kind":      func() error { _, err := Spread(3, time.Minute, "bursty", r); return err },
		"nil rand":      func() error { _, err := Spread(3, time.Minute, "poisson", nil); return err },
		"negative wind": func() error { _, err := Spread(3, -time.Second, "poisson", r); return err },
	} {
		if f() == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
