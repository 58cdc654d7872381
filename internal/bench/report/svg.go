package report

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strconv"
	"unicode/utf8"
)

// Plot geometry in SVG user units (pixels at 100% zoom).
const (
	plotWidth   = 960
	plotHeight  = 560
	marginTop   = 58 // title and subtitle
	marginLeft  = 78 // y tick labels and the y axis label
	marginBot   = 56 // x tick labels and the x axis label
	marginRight = 24
	charWidth   = 6.6 // rough width of a 12px sans-serif character, for layout
)

// palette is Okabe and Ito's colour-blind-safe palette (without yellow,
// which is unreadable on white).
var palette = []string{"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"}

// dashes tell series apart once the palette repeats.
var dashes = []string{"", "7 4", "2 3", "9 3 2 3"}

// svg accumulates a document in memory so that nothing is written to the
// caller's writer unless the whole plot could be built.
type svg struct{ b []byte }

func newSVG(width, height float64, title string) *svg {
	s := &svg{}
	s.raw(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	s.raw(`<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="`)
	s.num(width)
	s.raw(`" height="`)
	s.num(height)
	s.raw(`" viewBox="0 0 `)
	s.num(width)
	s.raw(" ")
	s.num(height)
	s.raw(`" font-family="sans-serif" font-size="12">` + "\n")
	s.raw("<title>")
	s.text(title)
	s.raw("</title>\n")
	// An opaque background keeps the plot readable in dark-themed viewers.
	s.raw(`<rect width="100%" height="100%" fill="#ffffff"/>` + "\n")
	s.textAt(width/2, 24, "middle", `font-size="16" font-weight="bold"`, title)
	return s
}

func (s *svg) raw(str string) { s.b = append(s.b, str...) }

// num appends a coordinate rounded to 0.01 px. Non-finite values cannot
// reach here (inputs are filtered), but if one did it would break the
// whole file, so it becomes 0.
func (s *svg) num(v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		v = 0
	}
	v = math.Round(v*100) / 100
	s.b = strconv.AppendFloat(s.b, v+0, 'f', -1, 64) // +0 turns -0 into 0
}

// text appends XML-escaped character data (EscapeText also replaces
// characters XML cannot hold).
func (s *svg) text(str string) {
	var buf bytes.Buffer
	xml.EscapeText(&buf, []byte(str))
	s.b = append(s.b, buf.Bytes()...)
}

// textAt draws a text element; attrs are trusted literal attributes.
func (s *svg) textAt(x, y float64, anchor, attrs, str string) {
	s.raw(`<text x="`)
	s.num(x)
	s.raw(`" y="`)
	s.num(y)
	s.raw(`"`)
	if anchor != "" && anchor != "start" {
		s.raw(` text-anchor="` + anchor + `"`)
	}
	if attrs != "" {
		s.raw(" " + attrs)
	}
	s.raw(">")
	s.text(str)
	s.raw("</text>\n")
}

// label draws text truncated to maxChars runes; a truncated label carries
// the full text as a tooltip.
func (s *svg) label(x, y float64, anchor, attrs, str string, maxChars int) {
	short := truncate(str, maxChars)
	if short == str {
		s.textAt(x, y, anchor, attrs, str)
		return
	}
	s.raw("<g><title>")
	s.text(str)
	s.raw("</title>")
	s.textAt(x, y, anchor, attrs, short)
	s.raw("</g>\n")
}

func (s *svg) line(x1, y1, x2, y2 float64, attrs string) {
	s.raw(`<line x1="`)
	s.num(x1)
	s.raw(`" y1="`)
	s.num(y1)
	s.raw(`" x2="`)
	s.num(x2)
	s.raw(`" y2="`)
	s.num(y2)
	s.raw(`" ` + attrs + "/>\n")
}

func (s *svg) rect(x, y, w, h float64, attrs string) {
	s.raw(`<rect x="`)
	s.num(x)
	s.raw(`" y="`)
	s.num(y)
	s.raw(`" width="`)
	s.num(max(w, 0))
	s.raw(`" height="`)
	s.num(max(h, 0))
	s.raw(`" ` + attrs + "/>\n")
}

func (s *svg) finish(w io.Writer) error {
	s.raw("</svg>\n")
	_, err := w.Write(s.b)
	return err
}

func truncate(str string, maxChars int) string {
	if utf8.RuneCountInString(str) <= maxChars {
		return str
	}
	r := []rune(str)
	return string(r[:max(maxChars-1, 1)]) + "…"
}

// axis maps data values to pixels, linearly or logarithmically.
type axis struct {
	lo, hi float64 // data range shown: the first and last tick
	log    bool
	ticks  []float64
	labels []string
	p0, p1 float64 // pixels of lo and hi
}

// newAxis fits ticks around [lo, hi]. A log axis needs lo > 0.
func newAxis(lo, hi float64, log bool, target int) axis {
	a := axis{log: log}
	if log {
		a.ticks, a.labels = logTicks(lo, hi)
	} else {
		var step float64
		a.ticks, step = niceTicks(lo, hi, target)
		for _, t := range a.ticks {
			a.labels = append(a.labels, formatTick(t, step))
		}
	}
	a.lo, a.hi = a.ticks[0], a.ticks[len(a.ticks)-1]
	return a
}

// pos maps v to pixels, clamping to the axis (values <= 0 on a log axis go
// to its low end).
func (a axis) pos(v float64) float64 {
	var f float64
	if a.log {
		if v <= a.lo {
			f = 0
		} else {
			f = math.Log10(v/a.lo) / math.Log10(a.hi/a.lo)
		}
	} else {
		f = (v - a.lo) / (a.hi - a.lo)
	}
	f = min(max(f, 0), 1)
	return a.p0 + f*(a.p1-a.p0)
}

// niceTicks returns evenly spaced ticks at multiples of 1, 2 or 5 × 10^k
// that cover [lo, hi] with at most about target intervals, and the step.
// For 0.37..912 and a target of 5 that is 0, 200, ..., 1000.
func niceTicks(lo, hi float64, target int) ([]float64, float64) {
	if lo > hi {
		lo, hi = hi, lo
	}
	if hi == lo { // a single value: give it some room
		if lo == 0 {
			hi = 1
		} else {
			d := math.Abs(lo) / 10
			lo, hi = lo-d, hi+d
		}
	}
	target = max(target, 1)
	raw := (hi - lo) / float64(target)
	e := math.Floor(math.Log10(raw))
	step := math.Pow(10, e)
	for _, m := range []float64{1, 2, 5, 10} {
		if m*step >= raw*(1-1e-9) {
			step *= m
			break
		}
	}
	// The tolerance keeps a bound that is a multiple of step up to
	// rounding (0.3/0.1 = 2.9999999999999996) from growing a tick.
	k0 := math.Floor(lo/step + 1e-9)
	k1 := math.Ceil(hi/step - 1e-9)
	ticks := make([]float64, 0, int(k1-k0)+1)
	for k := k0; k <= k1; k++ {
		ticks = append(ticks, k*step)
	}
	return ticks, step
}

// logTicks returns ticks at the powers of ten covering [lo, hi] (lo > 0),
// with 2× and 5× ticks added when the range is under two decades, and
// every second or third power dropped when there are many.
func logTicks(lo, hi float64) ([]float64, []string) {
	e0 := int(math.Floor(math.Log10(lo) + 1e-9))
	e1 := int(math.Ceil(math.Log10(hi) - 1e-9))
	if e1 <= e0 {
		e1 = e0 + 1
	}
	var ticks []float64
	var labels []string
	add := func(m float64, e int) {
		ticks = append(ticks, m*math.Pow10(e))
		labels = append(labels, formatPow(m, e))
	}
	every := 1 + (e1-e0-1)/10
	// The axis ends on powers of ten, so keep the first and last power
	// even when thinning the middle out.
	e0 = e1 - (e1-e0+every-1)/every*every
	for e := e0; e <= e1; e += every {
		add(1, e)
		if e1-e0 <= 2 && e < e1 {
			add(2, e)
			add(5, e)
		}
	}
	return ticks, labels
}

// formatTick formats a linear tick with at most the decimals its step
// needs.
func formatTick(v, step float64) string {
	// Round to the step's decimals, then print the shortest form, so that
	// 3*0.2 reads 0.6 and 0 reads 0, not 0.0.
	scale := math.Pow10(max(0, int(-math.Floor(math.Log10(step)+1e-9))))
	return strconv.FormatFloat(math.Round(v*scale)/scale+0, 'f', -1, 64)
}

// formatPow formats m×10^e plainly for everyday magnitudes and in
// exponent form beyond them.
func formatPow(m float64, e int) string {
	if e >= -4 && e <= 6 {
		return strconv.FormatFloat(m*math.Pow10(e), 'f', max(0, -e), 64)
	}
	if m == 1 {
		return "1e" + strconv.Itoa(e)
	}
	return strconv.FormatFloat(m, 'f', 0, 64) + "e" + strconv.Itoa(e)
}

// formatValue formats a measured value for legends and bar labels: at
// least three significant digits (all of them at and above 100), without
// trailing zeros.
func formatValue(v float64) string {
	dec := 0
	if a := math.Abs(v); a > 0 && a < 100 {
		dec = 2 - int(math.Floor(math.Log10(a)))
	}
	scale := math.Pow10(dec)
	return strconv.FormatFloat(math.Round(v*scale)/scale+0, 'f', -1, 64)
}

// frame draws grid lines, ticks, tick labels and axis labels for the plot
// area bounded by the two axes (x.p0..x.p1, y.p1..y.p0 top to bottom).
func (s *svg) frame(x, y axis, xLabel, yLabel string) {
	top, bot := y.p1, y.p0
	left, right := x.p0, x.p1
	s.raw(`<g class="grid" stroke="#e3e3e3" stroke-width="1">` + "\n")
	for _, t := range x.ticks {
		px := x.pos(t)
		s.line(px, top, px, bot, "")
	}
	for _, t := range y.ticks {
		py := y.pos(t)
		s.line(left, py, right, py, "")
	}
	s.raw("</g>\n")
	s.raw(`<g class="axes" fill="#333333">` + "\n")
	s.rect(left, top, right-left, bot-top, `fill="none" stroke="#888888"`)
	for i, t := range x.ticks {
		px := x.pos(t)
		s.line(px, bot, px, bot+5, `stroke="#888888"`)
		s.textAt(px, bot+18, "middle", "", x.labels[i])
	}
	for i, t := range y.ticks {
		py := y.pos(t)
		s.line(left-5, py, left, py, `stroke="#888888"`)
		s.textAt(left-8, py+4, "end", "", y.labels[i])
	}
	s.textAt((left+right)/2, bot+42, "middle", `font-size="13"`, xLabel)
	cy := (top + bot) / 2
	s.raw(`<text transform="translate(`)
	s.num(left - 58)
	s.raw(" ")
	s.num(cy)
	s.raw(`) rotate(-90)" text-anchor="middle" font-size="13">`)
	s.text(yLabel)
	s.raw("</text>\n</g>\n")
}

// legendEntry is one entry of a legend: a swatch, a name and optional
// lines of detail in smaller type.
type legendEntry struct {
	name   string
	detail []string
	swatch func(s *svg, x, y float64) // draws the swatch centred on (x, y)
}

// legendWidth estimates the width a legend needs, within limits.
func legendWidth(entries []legendEntry) float64 {
	chars := 0
	for _, e := range entries {
		chars = max(chars, utf8.RuneCountInString(e.name))
		for _, d := range e.detail {
			chars = max(chars, utf8.RuneCountInString(d))
		}
	}
	return min(max(float64(chars)*charWidth+36, 110), 280)
}

// legend draws entries in a column starting at (x, y) with the given width.
func (s *svg) legend(x, y, width float64, entries []legendEntry) {
	maxChars := int((width - 36) / charWidth)
	s.raw(`<g class="legend">` + "\n")
	for _, e := range entries {
		s.raw(`<g class="legend-entry">` + "\n")
		e.swatch(s, x+12, y-4)
		s.label(x+30, y, "", "", e.name, maxChars)
		y += 15
		for _, d := range e.detail {
			s.label(x+30, y, "", `font-size="11" fill="#555555"`, d, maxChars)
			y += 14
		}
		s.raw("</g>\n")
		y += 6
	}
	s.raw("</g>\n")
}

// finite reports whether v is neither NaN nor infinite.
func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// logScaleRatio is the max/min ratio above which a log axis shows data
// better: beyond about one and a half decades the low end of a linear
// axis (warm requests beside cold starts) shrinks to a few pixels.
const logScaleRatio = 30

// WantLogX reports whether the positive finite values of the series span
// more than about one and a half decades (max/min > 30), the rule by which
// PlotTimeline chooses a log latency axis. Callers of PlotCDF use it to
// choose logX the same way.
func WantLogX(series []Series) bool {
	lo, hi := math.Inf(1), 0.0
	for _, sr := range series {
		for _, v := range sr.Values {
			if v > 0 && finite(v) {
				lo, hi = min(lo, v), max(hi, v)
			}
		}
	}
	return hi > 0 && hi/lo > logScaleRatio
}

// errorf prefixes plot errors with the package name.
func errorf(format string, args ...any) error {
	return fmt.Errorf("report: "+format, args...)
}
