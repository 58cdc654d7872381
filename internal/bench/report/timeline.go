package report

import (
	"io"
	"math"
	"strconv"
)

// Point is one request on a timeline.
type Point struct {
	T            float64 // seconds since the start of the run
	Ms           float64 // latency in milliseconds
	Cold, Failed bool
}

// maxTimelinePoints bounds the markers drawn, which keeps the file a few
// hundred kilobytes and quick to render.
const maxTimelinePoints = 20000

// timelineClass is how a point is drawn; failure trumps a cold start.
type timelineClass struct {
	name   string
	marker func(s *svg, x, y float64)
	attrs  string // stroke attributes
}

var timelineClasses = []timelineClass{
	{"warm", dot, `stroke="#0072B2" stroke-width="3" stroke-linecap="round" stroke-opacity="0.45"`},
	{"cold", dot, `stroke="#E69F00" stroke-width="5" stroke-linecap="round" stroke-opacity="0.9"`},
	{"failed", cross, `stroke="#CC0000" stroke-width="1.6" stroke-opacity="0.9"`},
}

// dot is a zero-length segment with round caps: a circle in a few bytes.
func dot(s *svg, x, y float64) {
	s.raw("M")
	s.num(x)
	s.raw(" ")
	s.num(y)
	s.raw("h0")
}

// cross marks failures by shape as well as colour.
func cross(s *svg, x, y float64) {
	s.raw("M")
	s.num(x - 3)
	s.raw(" ")
	s.num(y - 3)
	s.raw("l6 6m0-6l-6 6")
}

// PlotTimeline writes a scatter plot of latency over time as an SVG. Warm,
// cold and failed requests (a failed cold start counts as failed) are drawn
// in distinct colours and listed in a legend with their counts. The latency
// axis is logarithmic when the positive latencies span more than about one
// and a half decades (the rule of WantLogX); latencies <= 0 are then drawn
// at its bottom.
//
// At most 20000 markers are drawn. If there are more points, cold and
// failed ones are all kept as long as they fit in three quarters of that
// (or in what warm points leave), and the rest are sampled evenly by
// index, which samples evenly in time when the points are in time order.
// The legend gives each class's count and, if sampled, how many were
// drawn. Points with a non-finite time or latency are left out.
func PlotTimeline(w io.Writer, title string, points []Point) error {
	byClass := make([][]Point, len(timelineClasses))
	tLo, tHi := 0.0, math.Inf(-1)
	msLo, msHi, msPos := math.Inf(1), math.Inf(-1), math.Inf(1)
	for _, p := range points {
		if !finite(p.T) || !finite(p.Ms) {
			continue
		}
		c := 0
		switch {
		case p.Failed:
			c = 2
		case p.Cold:
			c = 1
		}
		byClass[c] = append(byClass[c], p)
		tLo, tHi = min(tLo, p.T), max(tHi, p.T)
		msLo, msHi = min(msLo, p.Ms), max(msHi, p.Ms)
		if p.Ms > 0 {
			msPos = min(msPos, p.Ms)
		}
	}
	if math.IsInf(tHi, -1) {
		return errorf("timeline %q: no points with a finite time and latency to plot", title)
	}

	shown := thin(byClass, maxTimelinePoints)
	var entries []legendEntry
	for i, c := range timelineClasses {
		text := c.name + ": " + strconv.Itoa(len(byClass[i]))
		if len(shown[i]) < len(byClass[i]) {
			text += " (" + strconv.Itoa(len(shown[i])) + " drawn)"
		}
		entries = append(entries, legendEntry{name: text, swatch: func(s *svg, x, y float64) {
			s.raw(`<path fill="none" d="`)
			c.marker(s, x, y)
			s.raw(`" ` + c.attrs + "/>\n")
		}})
	}
	lw := legendWidth(entries)
	right := float64(plotWidth-marginRight) - lw - 10

	logY := msHi > 0 && msHi/msPos > logScaleRatio
	var y axis
	if logY {
		y = newAxis(msPos, msHi, true, 0)
	} else {
		y = newAxis(min(0, msLo), msHi, false, 6)
	}
	y.p0, y.p1 = plotHeight-marginBot, marginTop
	x := newAxis(tLo, tHi, false, 8)
	x.p0, x.p1 = marginLeft, right

	s := newSVG(plotWidth, plotHeight, title)
	yLabel := "latency (ms)"
	if logY {
		yLabel = logLabel(yLabel)
	}
	s.frame(x, y, "time since start (s)", yLabel)
	for i, c := range timelineClasses {
		if len(shown[i]) == 0 {
			continue
		}
		s.raw(`<path class="points ` + c.name + `" fill="none" ` + c.attrs + ` d="`)
		for _, p := range shown[i] {
			c.marker(s, x.pos(p.T), y.pos(p.Ms))
		}
		s.raw(`"/>` + "\n")
	}
	s.legend(right+20, marginTop+14, lw, entries)
	return s.finish(w)
}

// thin picks at most about budget points from the classes (warm, cold,
// failed). Cold and failed points share up to three quarters of the
// budget (more if there are few warm points), the smaller class first
// taking all it needs up to half of that share; warm points get the rest.
func thin(byClass [][]Point, budget int) [][]Point {
	total := 0
	for _, c := range byClass {
		total += len(c)
	}
	if total <= budget {
		return byClass
	}
	cold, failed := len(byClass[1]), len(byClass[2])
	share := min(cold+failed, max(budget*3/4, budget-len(byClass[0])))
	// Fill the smaller class first so that a few cold starts are not
	// thinned away by a flood of failures, or the other way round.
	small, large := &cold, &failed
	if *small > *large {
		small, large = large, small
	}
	*small = min(*small, share/2)
	*large = min(*large, share-*small)
	return [][]Point{
		evenly(byClass[0], budget-cold-failed),
		evenly(byClass[1], cold),
		evenly(byClass[2], failed),
	}
}

// evenly returns k points spread evenly over p by index, including the
// first and the last.
func evenly(p []Point, k int) []Point {
	if k >= len(p) {
		return p
	}
	if k <= 0 {
		return nil
	}
	if k == 1 {
		return p[:1]
	}
	out := make([]Point, k)
	for j := range out {
		out[j] = p[j*(len(p)-1)/(k-1)]
	}
	return out
}
