package trace

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
)

// sampleStream separates the sampler's random stream from Schedule's for
// the same seed.
const sampleStream = 0x5a3b1e

// Sample picks n functions whose combined load resembles the whole trace,
// following In-Vitro (Ustiugov et al., 2023).
//
// A uniform random pick would almost only return rare functions, because
// the popularity of functions is heavy-tailed: a few functions receive most
// invocations. Instead the eligible functions are ranked by their
// invocations in the window [startMinute, startMinute+minutes) (ascending,
// ties by ID) and cut into n strata of equal count; stratum k holds ranks
// [k*m/n, (k+1)*m/n) of the m eligible functions, that is the k-th n-quantile
// of the popularity distribution. One function is drawn uniformly from each
// stratum, so the sample always spans the whole range from the rarest to the
// most popular functions in the proportions of the trace.
//
// Eligible functions have durations (HasDuration) and at least one
// invocation in the window; a replay cannot emulate the others. The window
// is what gets replayed, so it, not the whole day, defines popularity; for
// the whole day it is the ranking by Total.
//
// The draw is deterministic for a given trace, window and seed. The result
// is sorted by ID; its PerMinute and Points share memory with the trace.
func (t *Trace) Sample(n int, startMinute, minutes int, seed uint64) ([]Function, error) {
	if err := checkWindow(startMinute, minutes, t.Minutes); err != nil {
		return nil, err
	}
	if n <= 0 {
		return nil, fmt.Errorf("trace: sample size must be positive, got %d", n)
	}
	eligible := t.eligible(startMinute, minutes)
	m := len(eligible)
	if n > m {
		return nil, fmt.Errorf("trace: cannot sample %d functions: only %d of %d have durations and invocations in minutes [%d, %d)",
			n, m, len(t.Functions), startMinute, startMinute+minutes)
	}
	slices.SortFunc(eligible, func(a, b candidate) int {
		return cmp.Or(cmp.Compare(a.load, b.load), cmp.Compare(t.Functions[a.i].ID, t.Functions[b.i].ID))
	})
	r := rand.New(rand.NewPCG(seed, sampleStream))
	out := make([]Function, 0, n)
	for k := range n {
		// n <= m makes every stratum non-empty.
		lo, hi := k*m/n, (k+1)*m/n
		out = append(out, t.Functions[eligible[lo+r.IntN(hi-lo)].i])
	}
	slices.SortFunc(out, func(a, b Function) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// Eligible counts the functions Sample can pick for the window: those
// with durations and at least one invocation in it. Minutes outside the
// trace count none.
func (t *Trace) Eligible(startMinute, minutes int) int {
	if checkWindow(startMinute, minutes, t.Minutes) != nil {
		return 0
	}
	return len(t.eligible(startMinute, minutes))
}

type candidate struct {
	i    int
	load int64
}

func (t *Trace) eligible(startMinute, minutes int) []candidate {
	var out []candidate
	for i, f := range t.Functions {
		if !f.HasDuration {
			continue
		}
		if load := windowLoad(f, startMinute, minutes); load > 0 {
			out = append(out, candidate{i, load})
		}
	}
	return out
}

func windowLoad(f Function, start, minutes int) int64 {
	var sum int64
	for _, v := range f.PerMinute[start : start+minutes] {
		sum += int64(v)
	}
	return sum
}

func checkWindow(start, minutes, total int) error {
	if start < 0 || minutes <= 0 || start+minutes > total {
		return fmt.Errorf("trace: minutes [%d, %d) are outside the trace's [0, %d)", start, start+minutes, total)
	}
	return nil
}
