package trace

import (
	"cmp"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// ranked returns the IDs of the eligible functions by ascending load in the
// window, ties by ID: the ranking Sample documents.
func ranked(tr *Trace, start, minutes int) []string {
	type fl struct {
		id   string
		load int
	}
	var fs []fl
	for _, f := range tr.Functions {
		load := 0
		for _, v := range f.PerMinute[start : start+minutes] {
			load += v
		}
		if f.HasDuration && load > 0 {
			fs = append(fs, fl{f.ID, load})
		}
	}
	slices.SortFunc(fs, func(a, b fl) int { return cmp.Or(cmp.Compare(a.load, b.load), cmp.Compare(a.id, b.id)) })
	ids := make([]string, len(fs))
	for i, f := range fs {
		ids[i] = f.id
	}
	return ids
}

func TestSampleStrata(t *testing.T) {
	tr := loadMini(t)
	for _, w := range []struct{ start, minutes int }{{0, 1440}, {600, 60}} {
		rank := ranked(tr, w.start, w.minutes)
		m := len(rank)
		if w.minutes == 1440 && m != 27 { // 30 minus no row, two Count=0
			t.Fatalf("%d eligible functions, want 27", m)
		}
		for n := 1; n <= m; n++ {
			for seed := range uint64(5) {
				s, err := tr.Sample(n, w.start, w.minutes, seed)
				if err != nil {
					t.Fatal(err)
				}
				if len(s) != n || !slices.IsSortedFunc(s, func(a, b Function) int { return cmp.Compare(a.ID, b.ID) }) {
					t.Fatalf("n=%d: %d functions, sorted %v", n, len(s), s)
				}
				// Exactly one function from each stratum; this also makes
				// them distinct and eligible.
				perStratum := make([]int, n)
				for i, f := range s {
					if i > 0 && s[i-1].ID == f.ID {
						t.Fatalf("n=%d: %s twice", n, f.ID)
					}
					r := slices.Index(rank, f.ID)
					if r < 0 {
						t.Fatalf("n=%d: %s is not eligible", n, f.ID)
					}
					perStratum[stratum(r, n, m)]++
				}
				for k, c := range perStratum {
					if c != 1 {
						t.Errorf("window %v n=%d seed=%d: stratum %d has %d functions", w, n, seed, k, c)
					}
				}
			}
		}
	}
}

func TestSampleCoversPopularity(t *testing.T) {
	tr := loadMini(t)
	rank := ranked(tr, 0, 1440)
	m := len(rank)
	for _, n := range []int{10, 15} {
		for seed := range uint64(30) {
			s, err := tr.Sample(n, 0, 1440, seed)
			if err != nil {
				t.Fatal(err)
			}
			top, bottom := false, false
			for _, f := range s {
				r := slices.Index(rank, f.ID)
				top = top || r >= m-(m+9)/10 // the top tenth, rounded up
				bottom = bottom || r < m/2
			}
			if !top || !bottom {
				t.Errorf("n=%d seed=%d: top decile %v, bottom half %v", n, seed, top, bottom)
			}
		}
	}
}

func TestSampleDeterministic(t *testing.T) {
	tr := loadMini(t)
	a, _ := tr.Sample(8, 0, 1440, 99)
	b, _ := tr.Sample(8, 0, 1440, 99)
	if !reflect.DeepEqual(a, b) {
		t.Error("same seed, different samples")
	}
	distinct := map[string]bool{}
	for seed := range uint64(20) {
		s, _ := tr.Sample(8, 0, 1440, seed)
		var ids []string
		for _, f := range s {
			ids = append(ids, f.ID)
		}
		distinct[strings.Join(ids, ",")] = true
	}
	if len(distinct) < 5 {
		t.Errorf("20 seeds gave only %d distinct samples", len(distinct))
	}
}

func TestSampleErrors(t *testing.T) {
	tr := loadMini(t)
	all, err := tr.Sample(27, 0, 1440, 1)
	if err != nil || len(all) != 27 {
		t.Fatalf("n = all eligible: %d functions, err %v", len(all), err)
	}
	for _, c := range []struct {
		n, start, minutes int
		want              string
	}{
		{28, 0, 1440, "cannot sample 28 functions: only 27 of 30 have durations and invocations in minutes [0, 1440)"},
		{0, 0, 1440, "sample size must be positive"},
		{1, 1400, 41, "minutes [1400, 1441) are outside the trace's [0, 1440)"},
		{1, -1, 10, "outside the trace"},
		{1, 0, 0, "outside the trace"},
	} {
		_, err := tr.Sample(c.n, c.start, c.minutes, 1)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Sample(%d, %d, %d): err = %v, want %q", c.n, c.start, c.minutes, err, c.want)
		}
	}
}

// stratum returns k with k*m/n <= r < (k+1)*m/n.
func stratum(r, n, m int) int {
	for k := range n {
		if r < (k+1)*m/n {
			return k
		}
	}
	return -1
}
