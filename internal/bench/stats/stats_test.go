package stats

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

func seq(lo, hi int) []float64 {
	var v []float64
	for i := lo; i <= hi; i++ {
		v = append(v, float64(i))
	}
	return v
}

func TestPercentileOneToHundred(t *testing.T) {
	s := seq(1, 100)
	for _, tc := range []struct{ p, want float64 }{
		{0, 1}, {0.5, 1}, {1, 1}, {1.5, 2}, {7, 7}, {10, 10}, {25, 25},
		{50, 50}, {50.1, 51}, {90, 90}, {99, 99}, {99.1, 100}, {99.9, 100},
		{100, 100}, {-5, 1}, {150, 100},
	} {
		if got := Percentile(s, tc.p); got != tc.want {
			t.Errorf("Percentile(1..100, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
}

func TestPercentileDecimalP(t *testing.T) {
	// 99.9% of 1000 values is exactly rank 999 although 99.9*1000 is not
	// exactly 99900 in float64.
	s := seq(1, 1000)
	for _, tc := range []struct{ p, want float64 }{
		{99.9, 999}, {99.99, 1000}, {0.1, 1}, {0.3, 3}, {0.7, 7}, {57, 570}, {29, 290},
	} {
		if got := Percentile(s, tc.p); got != tc.want {
			t.Errorf("Percentile(1..1000, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	s = seq(1, 10)
	for _, tc := range []struct{ p, want float64 }{
		{10, 1}, {20, 2}, {30, 3}, {70, 7}, {70.0001, 8}, {90, 9}, {99, 10},
	} {
		if got := Percentile(s, tc.p); got != tc.want {
			t.Errorf("Percentile(1..10, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
}

func TestPercentileEdge(t *testing.T) {
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("empty: %v", got)
	}
	if got := Percentile([]float64{3}, 0); got != 3 {
		t.Errorf("single p0: %v", got)
	}
	if got := Percentile([]float64{3}, 99.9); got != 3 {
		t.Errorf("single p99.9: %v", got)
	}
	if got := Percentile([]float64{1, 2}, math.NaN()); !math.IsNaN(got) {
		t.Errorf("NaN p: %v", got)
	}
}

func TestDescribeKnown(t *testing.T) {
	d := Describe(seq(1, 100))
	want := Dist{Count: 100, Min: 1, Mean: 50.5, P50: 50, P90: 90, P99: 99, P999: 100, Max: 100, TailRatio: 99.0 / 50}
	if d != want {
		t.Errorf("Describe(1..100) = %+v, want %+v", d, want)
	}
}

func TestDescribeSingle(t *testing.T) {
	d := Describe([]float64{7.5})
	want := Dist{Count: 1, Min: 7.5, Mean: 7.5, P50: 7.5, P90: 7.5, P99: 7.5, P999: 7.5, Max: 7.5, TailRatio: 1}
	if d != want {
		t.Errorf("Describe([7.5]) = %+v, want %+v", d, want)
	}
}

func TestDescribeEmpty(t *testing.T) {
	if d := Describe(nil); d != (Dist{}) {
		t.Errorf("Describe(nil) = %+v", d)
	}
	if d := Describe([]float64{math.NaN(), math.Inf(1)}); d != (Dist{}) {
		t.Errorf("Describe(non-finite only) = %+v", d)
	}
}

func TestDescribeZeroMedian(t *testing.T) {
	d := Describe([]float64{0, 0, 0, 5})
	if d.P50 != 0 || d.TailRatio != 0 || d.P99 != 5 {
		t.Errorf("got %+v", d)
	}
}

func TestDescribeDoesNotModify(t *testing.T) {
	in := []float64{5, 3, math.NaN(), 9, 1, 7}
	cp := slices.Clone(in)
	d := Describe(in)
	for i := range in {
		if in[i] != cp[i] && !(math.IsNaN(in[i]) && math.IsNaN(cp[i])) {
			t.Fatalf("input modified: %v, was %v", in, cp)
		}
	}
	if d.Count != 5 || d.Min != 1 || d.Max != 9 || d.P50 != 5 || d.Mean != 5 {
		t.Errorf("got %+v", d)
	}
}

func TestDescribeIgnoresNonFinite(t *testing.T) {
	in := []float64{math.NaN(), 2, math.Inf(1), 4, math.Inf(-1), math.NaN()}
	d := Describe(in)
	want := Dist{Count: 2, Min: 2, Mean: 3, P50: 2, P90: 4, P99: 4, P999: 4, Max: 4, TailRatio: 2}
	if d != want {
		t.Errorf("got %+v, want %+v", d, want)
	}
}

// refPercentile implements the definition directly, independently of the
// ceil formula: the smallest observed value v such that at least pm/1000 %
// of the values are <= v. pm is in thousandths of a percent so that the
// comparison is exact integer arithmetic.
func refPercentile(sorted []float64, pm int) float64 {
	n := len(sorted)
	for i, v := range sorted {
		if i+1 < n && sorted[i+1] == v {
			continue // count(<= v) includes all duplicates
		}
		if (i+1)*100000 >= pm*n {
			return v
		}
	}
	return sorted[n-1]
}

func TestDescribeLargeRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 2, 3, 999, 1000, 1001, 123457, 1_000_000} {
		v := make([]float64, n)
		for i := range v {
			// Log-normal-ish latencies with deliberate duplicates.
			v[i] = math.Round(math.Exp(r.NormFloat64())*1000) / 100
		}
		d := Describe(v)
		sorted := slices.Clone(v)
		sort.Float64s(sorted)
		sum := 0.0
		for _, x := range sorted {
			sum += x
		}
		if d.Count != n || d.Min != sorted[0] || d.Max != sorted[n-1] {
			t.Errorf("n=%d: count/min/max %+v", n, d)
		}
		if math.Abs(d.Mean-sum/float64(n)) > 1e-9*math.Abs(d.Mean) {
			t.Errorf("n=%d: mean %v, want %v", n, d.Mean, sum/float64(n))
		}
		for _, c := range []struct {
			got float64
			pm  int
		}{{d.P50, 50000}, {d.P90, 90000}, {d.P99, 99000}, {d.P999, 99900}} {
			if want := refPercentile(sorted, c.pm); c.got != want {
				t.Errorf("n=%d: P%v = %v, want %v", n, float64(c.pm)/1000, c.got, want)
			}
		}
		for _, pm := range []int{0, 1, 100, 12345, 33333, 66667, 99999, 100000} {
			if got, want := Percentile(sorted, float64(pm)/1000), refPercentile(sorted, pm); got != want {
				t.Errorf("n=%d: Percentile(%v) = %v, want %v", n, float64(pm)/1000, got, want)
			}
		}
	}
}

func BenchmarkDescribe1e6(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	v := make([]float64, 1_000_000)
	for i := range v {
		v[i] = r.ExpFloat64() * 10
	}
	for b.Loop() {
		Describe(v)
	}
}
