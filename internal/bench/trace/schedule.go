package trace

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"time"
)

// Placements of the invocations inside a minute, for Schedule.
const (
	// PlacementPoisson places a minute's n invocations at n independent
	// uniform times, which is a Poisson process conditioned on its count:
	// realistic burstiness within the minute.
	PlacementPoisson = "poisson"
	// PlacementUniform spaces them evenly, (i+½)·minute/n: the smoothest
	// load with the same per-minute counts.
	PlacementUniform = "uniform"
)

// Schedule generates the arrivals of fns for the trace minutes
// [startMinute, startMinute+minutes). Each function gets exactly
// PerMinute[m] arrivals inside minute m, placed according to placement
// (PlacementPoisson or PlacementUniform). compress >= 1 replays faster:
// every minute lasts 60s/compress, the counts stay the same.
//
// Arrival times are measured from the start of the window. The result is
// sorted by At (then by function ID). Each function draws from its own
// random stream derived from seed and its ID, so its arrivals do not depend
// on which other functions were chosen.
func Schedule(fns []Function, startMinute, minutes int, placement string, compress float64, seed uint64) ([]Arrival, error) {
	if placement != PlacementPoisson && placement != PlacementUniform {
		return nil, fmt.Errorf("trace: unknown placement %q (want %q or %q)", placement, PlacementPoisson, PlacementUniform)
	}
	if !(compress >= 1) || math.IsInf(compress, 0) {
		return nil, fmt.Errorf("trace: compress must be a finite number >= 1, got %v", compress)
	}
	minute := time.Duration(float64(time.Minute) / compress)
	if minute <= 0 {
		return nil, fmt.Errorf("trace: compress %v leaves no time per minute", compress)
	}
	if startMinute < 0 || minutes <= 0 {
		return nil, fmt.Errorf("trace: invalid window: start minute %d, %d minutes", startMinute, minutes)
	}
	total := 0
	ids := map[string]bool{}
	for _, f := range fns {
		if ids[f.ID] {
			return nil, fmt.Errorf("trace: function %s given twice", f.ID)
		}
		ids[f.ID] = true
		if startMinute+minutes > len(f.PerMinute) {
			return nil, fmt.Errorf("trace: minutes [%d, %d) are outside function %s's %d minutes",
				startMinute, startMinute+minutes, f.ID, len(f.PerMinute))
		}
		for _, c := range f.PerMinute[startMinute : startMinute+minutes] {
			if c < 0 {
				return nil, fmt.Errorf("trace: function %s has a negative count", f.ID)
			}
			total += c
		}
	}

	out := make([]Arrival, 0, total)
	var offs []int64
	for _, f := range fns {
		r := rand.New(rand.NewPCG(seed, streamOf(f.ID)))
		for m := startMinute; m < startMinute+minutes; m++ {
			c := f.PerMinute[m]
			if c == 0 {
				continue
			}
			offs = offs[:0]
			switch placement {
			case PlacementPoisson:
				for range c {
					// Integer draw: a float in [0,1) scaled by the minute can
					// round up to the minute's end.
					offs = append(offs, r.Int64N(int64(minute)))
				}
				slices.Sort(offs)
			case PlacementUniform:
				for i := range c {
					offs = append(offs, evenOffset(i, c, minute))
				}
			}
			base := time.Duration(m-startMinute) * minute
			for _, o := range offs {
				out = append(out, Arrival{Function: f.ID, At: base + time.Duration(o), Minute: m})
			}
		}
	}
	slices.SortStableFunc(out, func(a, b Arrival) int {
		return cmp.Or(cmp.Compare(a.At, b.At), cmp.Compare(a.Function, b.Function))
	})
	return out, nil
}

// evenOffset returns floor((2i+1)·minute / 2c), exact in 128 bits: the
// product overflows int64 for a few million arrivals per minute.
func evenOffset(i, c int, minute time.Duration) int64 {
	hi, lo := bits.Mul64(uint64(2*i+1), uint64(minute))
	q, _ := bits.Div64(hi, lo, uint64(2*c)) // hi < 2c because 2i+1 < 2c
	return int64(q)
}

// streamOf derives a function's random stream from its ID.
func streamOf(id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	return h.Sum64()
}
