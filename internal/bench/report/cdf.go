package report

import (
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/baton-faas/baton/internal/bench/stats"
)

// Series is one named set of latencies in milliseconds.
type Series struct {
	Name   string
	Values []float64
}

// cdfResolution is how many steps per axis length a CDF keeps: points
// closer than 1/cdfResolution of the plot's width and height to the last
// one drawn are skipped, so a series has at most about twice this many
// points however many samples it has.
const cdfResolution = 1000

// PlotCDF writes the empirical CDFs of the series as an SVG: x is latency
// in ms (logarithmic if logX; see WantLogX), y the fraction of requests
// completed within it. Each series is drawn as the exact step function of
// its samples, thinned only below pixel resolution (see the package
// comment). Values that are not finite are left out. On a log axis, values
// <= 0 are drawn at its left end; if no value is positive the axis is
// linear after all.
func PlotCDF(w io.Writer, title string, series []Series, logX bool) error {
	return PlotCDFLabeled(w, title, "latency (ms)", series, logX)
}

// PlotCDFLabeled is PlotCDF for values other than latencies in ms (such as
// a slowdown ratio): xLabel names the x axis with its unit, e.g.
// "slowdown (response time / requested time)". A log axis adds "log scale"
// to it.
func PlotCDFLabeled(w io.Writer, title, xLabel string, series []Series, logX bool) error {
	if len(series) == 0 {
		return errorf("CDF %q: no series to plot", title)
	}
	sorted := make([][]float64, len(series))
	lo, hi, minPos := math.Inf(1), math.Inf(-1), math.Inf(1)
	for i, sr := range series {
		v := make([]float64, 0, len(sr.Values))
		for _, x := range sr.Values {
			if finite(x) {
				v = append(v, x)
				if x > 0 {
					minPos = min(minPos, x)
				}
			}
		}
		if len(v) == 0 {
			return errorf("CDF %q: series %q has no finite values", title, sr.Name)
		}
		slices.Sort(v)
		sorted[i] = v
		lo, hi = min(lo, v[0]), max(hi, v[len(v)-1])
	}
	if math.IsInf(minPos, 1) {
		logX = false
	}

	var entries []legendEntry
	if len(series) > 1 {
		for i, sr := range series {
			entries = append(entries, legendEntry{
				name:   sr.Name,
				detail: distSummary(sorted[i]),
				swatch: func(s *svg, x, y float64) {
					s.line(x-9, y, x+9, y, seriesStroke(i, 2.5))
				},
			})
		}
	}
	right := float64(plotWidth - marginRight)
	if len(entries) > 0 {
		right -= legendWidth(entries) + 10
	}

	var x axis
	if logX {
		x = newAxis(minPos, hi, true, 0)
	} else {
		x = newAxis(lo, hi, false, 8)
	}
	x.p0, x.p1 = marginLeft, right
	y := newAxis(0, 1, false, 5)
	y.p0, y.p1 = plotHeight-marginBot, marginTop

	s := newSVG(plotWidth, plotHeight, title)
	if len(series) == 1 {
		s.textAt(plotWidth/2, 44, "middle", `fill="#555555"`, series[0].Name+": "+strings.Join(distSummary(sorted[0]), ", "))
	}
	if x.log {
		xLabel = logLabel(xLabel)
	}
	s.frame(x, y, xLabel, "fraction of requests")
	for i, v := range sorted {
		s.raw(`<path class="series" fill="none" ` + seriesStroke(i, 1.8) + ` d="`)
		s.cdfPath(v, x, y)
		s.raw(`"><title>`)
		s.text(series[i].Name)
		s.raw("</title></path>\n")
	}
	if len(entries) > 0 {
		s.legend(right+20, marginTop+14, legendWidth(entries), entries)
	}
	return s.finish(w)
}

// seriesStroke returns the stroke attributes of series i.
func seriesStroke(i int, width float64) string {
	a := `stroke="` + palette[i%len(palette)] + `" stroke-width="` + strconv.FormatFloat(width, 'f', -1, 64) + `"`
	if d := dashes[(i/len(palette))%len(dashes)]; d != "" {
		a += ` stroke-dasharray="` + d + `"`
	}
	return a
}

// distSummary is the legend text for a sorted series, in two lines; the
// unit is on the axis.
func distSummary(sorted []float64) []string {
	d := stats.Describe(sorted)
	return []string{
		"n=" + strconv.Itoa(d.Count) + ", p50=" + formatValue(d.P50) + ", p99=" + formatValue(d.P99),
		"p99.9=" + formatValue(d.P999) + ", max=" + formatValue(d.Max),
	}
}

// cdfPath appends the path data of the empirical CDF of sorted (ascending,
// finite, non-empty) as a staircase: for each distinct value v, a
// horizontal run at the previous height, then a rise at v to the fraction
// of values <= v.
//
// A value is skipped when it is within 1/cdfResolution of the plot's
// width and height of the last point drawn; the staircase then runs
// straight to the next point drawn, which differs from the exact curve by
// less than that, i.e. by less than a pixel. The minimum, maximum and the
// nearest-rank percentiles of the legend are always drawn exactly.
func (s *svg) cdfPath(sorted []float64, x, y axis) {
	n := len(sorted)
	keep := map[float64]bool{sorted[0]: true, sorted[n-1]: true}
	for _, p := range []float64{50, 90, 99, 99.9} {
		keep[stats.Percentile(sorted, p)] = true
	}
	dx := math.Abs(x.p1-x.p0) / cdfResolution
	dy := math.Abs(y.p1-y.p0) / cdfResolution
	lastX, lastY := x.pos(sorted[0]), y.pos(0)
	s.raw("M")
	s.num(lastX)
	s.raw(" ")
	s.num(lastY)
	for i, v := range sorted {
		if i+1 < n && sorted[i+1] == v {
			continue // the step at v rises past all its duplicates
		}
		px, py := x.pos(v), y.pos(float64(i+1)/float64(n))
		if !keep[v] && math.Abs(px-lastX) < dx && math.Abs(py-lastY) < dy {
			continue
		}
		if px != lastX {
			s.raw("H")
			s.num(px)
		}
		s.raw("V")
		s.num(py)
		lastX, lastY = px, py
	}
}

// logLabel marks an axis label as logarithmic: "latency (ms)" becomes
// "latency (ms, log scale)", "slowdown" becomes "slowdown (log scale)".
func logLabel(label string) string {
	if strings.HasSuffix(label, ")") {
		return strings.TrimSuffix(label, ")") + ", log scale)"
	}
	return label + " (log scale)"
}
