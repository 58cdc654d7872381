package trace

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestQuantile(t *testing.T) {
	p := Percentiles{Average: 7, Points: []Point{{.1, 10}, {.5, 20}, {.5, 30}, {.9, 70}}}
	for _, c := range []struct{ q, want float64 }{
		{0, 10}, {.1, 10}, {.3, 15}, {.5, 30}, {.7, 50}, {.9, 70}, {1, 70},
	} {
		if got := p.Quantile(c.q); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("Quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if got := (Percentiles{Average: 7}).Quantile(.5); got != 7 {
		t.Errorf("no points: Quantile = %v, want the average 7", got)
	}
	if got := (Percentiles{Points: []Point{{.5, 3}}}).Sample(rand.New(rand.NewPCG(1, 1))); got != 3 {
		t.Errorf("one point: Sample = %v, want 3", got)
	}
}

// The empirical distribution of many draws matches the given quantiles.
func TestPercentilesSample(t *testing.T) {
	const n = 100_000
	for _, p := range []Percentiles{
		{Points: points(durationQs, 3, 8, 45, 98, 170, 950, 4200)},
		{Points: points(memoryQs, 96, 101, 113, 124, 139, 168, 191, 212)},
	} {
		r := rand.New(rand.NewPCG(42, 0))
		draws := make([]float64, n)
		for i := range draws {
			draws[i] = p.Sample(r)
		}
		slices.Sort(draws)
		first, last := p.Points[0], p.Points[len(p.Points)-1]
		if draws[0] < first.V || draws[n-1] > last.V {
			t.Errorf("draws span [%v, %v] outside [%v, %v]", draws[0], draws[n-1], first.V, last.V)
		}
		// Fraction of draws at or below each point's value is its quantile
		// (the first point also carries the mass below its Q).
		for _, pt := range p.Points {
			below := float64(countLE(draws, pt.V)) / n
			if math.Abs(below-pt.Q) > 0.006 {
				t.Errorf("P(X <= %v) = %.4f, want %.2f", pt.V, below, pt.Q)
			}
		}
		// Piecewise linear: the mean is the trapezoid sum.
		want := first.Q * first.V
		for i := 1; i < len(p.Points); i++ {
			a, b := p.Points[i-1], p.Points[i]
			want += (b.Q - a.Q) * (a.V + b.V) / 2
		}
		var sum float64
		for _, d := range draws {
			sum += d
		}
		if got := sum / n; math.Abs(got-want)/want > 0.02 {
			t.Errorf("mean of draws = %.2f, want %.2f", got, want)
		}
		// Linear inside a segment: the median of the draws between two
		// points is their midpoint.
		a, b := p.Points[3], p.Points[4]
		lo, hi := countLE(draws, a.V), countLE(draws, b.V)
		if mid := draws[(lo+hi)/2]; math.Abs(mid-(a.V+b.V)/2) > 0.03*(b.V-a.V) {
			t.Errorf("median within [%v, %v] = %v, want %v", a.V, b.V, mid, (a.V+b.V)/2)
		}
	}
}

func countLE(sorted []float64, v float64) int {
	i, _ := slices.BinarySearchFunc(sorted, v, func(x, v float64) int {
		if x <= v {
			return -1
		}
		return 1
	})
	return i
}
