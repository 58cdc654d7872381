// Package stats summarises latency distributions for Baton's benchmark
// client.
//
// Percentiles use the nearest-rank definition and nothing else: every
// reported percentile is a value that was actually observed, with no
// interpolation or smoothing between samples. For n values sorted in
// ascending order, the p-th percentile (0 < p <= 100) is the value at
// 1-based rank ceil(p/100 * n), i.e. the smallest observed value such that
// at least p% of the values are less than or equal to it. The 0th
// percentile is the minimum. For the values 1..100 this gives P50 = 50,
// P99 = 99 and P99.9 = 100.
package stats

import (
	"math"
	"slices"
)

// Dist describes a distribution of values (milliseconds in practice).
type Dist struct {
	Count int     `json:"count"`
	Min   float64 `json:"min"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
	// TailRatio is P99/P50 (0 when P50 is 0).
	TailRatio float64 `json:"p99OverP50"`
}

// Describe summarises values without modifying them. An empty input (or
// one without finite values) gives the zero Dist.
//
// Values that are not finite numbers are ignored and not counted: NaN has
// no place in an order, ±Inf would make the mean meaningless, and neither
// can be encoded as JSON. A latency is never legitimately either, so
// callers that care should count them before calling.
func Describe(values []float64) Dist {
	sorted := make([]float64, 0, len(values))
	for _, v := range values {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			sorted = append(sorted, v)
		}
	}
	if len(sorted) == 0 {
		return Dist{}
	}
	slices.Sort(sorted)
	d := Dist{
		Count: len(sorted),
		Min:   sorted[0],
		Mean:  mean(sorted),
		P50:   Percentile(sorted, 50),
		P90:   Percentile(sorted, 90),
		P99:   Percentile(sorted, 99),
		P999:  Percentile(sorted, 99.9),
		Max:   sorted[len(sorted)-1],
	}
	if d.P50 != 0 {
		d.TailRatio = d.P99 / d.P50
	}
	return d
}

// Percentile returns the nearest-rank p-th percentile of sorted, which must
// be in ascending order (see the package comment for the definition).
// p is clamped to [0, 100]; p = 0 gives the minimum, p = 100 the maximum.
// An empty slice gives 0; a NaN p gives NaN.
func Percentile(sorted []float64, p float64) float64 {
	n := len(sorted)
	switch {
	case n == 0:
		return 0
	case math.IsNaN(p):
		return math.NaN()
	case p <= 0:
		return sorted[0]
	case p >= 100:
		return sorted[n-1]
	}
	return sorted[rank(p, n)-1]
}

// rank is the 1-based nearest rank ceil(p/100*n) for 0 < p < 100.
func rank(p float64, n int) int {
	// Multiply before dividing so that integral p is exact; then treat a
	// product within rounding error of an integer as that integer, because
	// p = 99.9 is meant as the decimal 99.9, not as its binary neighbour
	// (99.9*1000/100 is 999.0000000000001 in float64, and ceil would give
	// rank 1000 where 999 is right).
	r := p * float64(n) / 100
	k := math.Round(r)
	if math.Abs(r-k) > 1e-9*math.Max(1, r) {
		k = math.Ceil(r)
	}
	return min(max(int(k), 1), n)
}

// mean uses Neumaier's compensated sum so that a million samples of very
// different magnitudes (cold and warm latencies) do not lose precision.
func mean(values []float64) float64 {
	var sum, c float64
	for _, v := range values {
		t := sum + v
		if math.Abs(sum) >= math.Abs(v) {
			c += (sum - t) + v
		} else {
			c += (v - t) + sum
		}
		sum = t
	}
	return (sum + c) / float64(len(values))
}
