package report

import (
	"io"
	"math"
	"unicode/utf8"
)

// Bar chart geometry.
const (
	barRow      = 20 // pixels per bar
	barValueGap = 64 // room right of the longest bar for its value
)

// PlotBars writes a horizontal bar chart as an SVG, one bar per label
// (per-function summaries in replay), in the order given. unit labels the
// value axis, e.g. "ms" or "p99 latency (ms)". Each bar is annotated with
// its value; labels too long for the label column are shortened, with the
// full text as a tooltip. Values must be finite.
func PlotBars(w io.Writer, title, unit string, labels []string, values []float64) error {
	if len(labels) != len(values) {
		return errorf("bar chart %q: %d labels but %d values", title, len(labels), len(values))
	}
	if len(values) == 0 {
		return errorf("bar chart %q: no bars to plot", title)
	}
	lo, hi := 0.0, 0.0 // bars start at zero, so zero is always on the axis
	chars := 0
	for i, v := range values {
		if !finite(v) {
			return errorf("bar chart %q: value of %q is %v, want a finite number", title, labels[i], v)
		}
		lo, hi = min(lo, v), max(hi, v)
		chars = max(chars, utf8.RuneCountInString(labels[i]))
	}
	labelW := min(max(float64(chars)*charWidth+12, 60), 300)
	maxChars := int((labelW - 12) / charWidth)

	top := float64(marginTop)
	height := top + float64(len(values))*barRow + marginBot
	x := newAxis(lo, hi, false, 8)
	labelRight := marginLeft/2 + labelW
	x.p0, x.p1 = labelRight, plotWidth-marginRight-barValueGap
	if lo < 0 {
		x.p0 += barValueGap // room for the value left of a negative bar
	}
	y := axis{lo: 0, hi: 1, p0: height - marginBot, p1: top} // frame only; no ticks

	s := newSVG(plotWidth, height, title)
	s.frame(x, y, unit, "")
	x0 := x.pos(0)
	s.raw(`<g class="bars">` + "\n")
	for i, v := range values {
		yTop := top + float64(i)*barRow
		mid := yTop + barRow/2 + 4
		s.raw(`<g class="bar">`)
		s.label(labelRight-8, mid, "end", "", labels[i], maxChars)
		xv := x.pos(v)
		s.rect(min(x0, xv), yTop+3, math.Abs(xv-x0), barRow-6, `fill="`+palette[0]+`"`)
		if v < 0 {
			s.textAt(xv-4, mid, "end", `fill="#333333"`, formatValue(v))
		} else {
			s.textAt(xv+4, mid, "", `fill="#333333"`, formatValue(v))
		}
		s.raw("</g>\n")
	}
	s.raw("</g>\n")
	if lo < 0 {
		s.line(x0, top, x0, height-marginBot, `stroke="#333333"`)
	}
	return s.finish(w)
}
