package report

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/baton-faas/baton/internal/bench/stats"
)

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

func nearAll(got, want []float64) bool {
	return len(got) == len(want) && !slices.ContainsFunc(got, func(g float64) bool {
		return !near(g, want[slices.Index(got, g)])
	})
}

func TestNiceTicks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi float64
		target int
		want   []float64
		labels []string
	}{
		{0.37, 912, 5, []float64{0, 200, 400, 600, 800, 1000}, []string{"0", "200", "400", "600", "800", "1000"}},
		{0, 1, 5, []float64{0, 0.2, 0.4, 0.6, 0.8, 1}, []string{"0", "0.2", "0.4", "0.6", "0.8", "1"}},
		{0, 0.3, 3, []float64{0, 0.1, 0.2, 0.3}, []string{"0", "0.1", "0.2", "0.3"}},
		{-3, 7, 5, []float64{-4, -2, 0, 2, 4, 6, 8}, []string{"-4", "-2", "0", "2", "4", "6", "8"}},
		{101, 119, 4, []float64{100, 105, 110, 115, 120}, []string{"100", "105", "110", "115", "120"}},
		{0.0012, 0.0047, 4, []float64{0.001, 0.002, 0.003, 0.004, 0.005}, []string{"0.001", "0.002", "0.003", "0.004", "0.005"}},
		{5, 5, 5, []float64{4.4, 4.6, 4.8, 5, 5.2, 5.4, 5.6}, []string{"4.4", "4.6", "4.8", "5", "5.2", "5.4", "5.6"}},
		{0, 0, 5, []float64{0, 0.2, 0.4, 0.6, 0.8, 1}, nil},
		{0, 1e9, 8, []float64{0, 2e8, 4e8, 6e8, 8e8, 1e9}, nil},
	} {
		got, step := niceTicks(tc.lo, tc.hi, tc.target)
		if !nearAll(got, tc.want) {
			t.Errorf("niceTicks(%v, %v, %d) = %v, want %v", tc.lo, tc.hi, tc.target, got, tc.want)
		}
		if got[0] > tc.lo || got[len(got)-1] < tc.hi {
			t.Errorf("niceTicks(%v, %v): %v does not cover the range", tc.lo, tc.hi, got)
		}
		if tc.labels != nil {
			var labels []string
			for _, v := range got {
				labels = append(labels, formatTick(v, step))
			}
			if !slices.Equal(labels, tc.labels) {
				t.Errorf("labels of %v..%v = %q, want %q", tc.lo, tc.hi, labels, tc.labels)
			}
		}
	}
}

func TestLogTicks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi float64
		want   []string
	}{
		{0.37, 912, []string{"0.1", "1", "10", "100", "1000"}},
		{1, 1000, []string{"1", "10", "100", "1000"}},
		{20, 80, []string{"10", "20", "50", "100"}},
		{100, 100, []string{"100", "200", "500", "1000"}},
		{3, 90, []string{"1", "2", "5", "10", "20", "50", "100"}},
		{3, 250, []string{"1", "10", "100", "1000"}},
		{0.002, 3e6, []string{"0.001", "0.01", "0.1", "1", "10", "100", "1000", "10000", "100000", "1000000", "1e7"}},
		{1e-9, 1e9, []string{"1e-9", "1e-7", "1e-5", "0.001", "0.1", "10", "1000", "100000", "1e7", "1e9"}},
		{2e-9, 1e9, []string{"1e-9", "1e-7", "1e-5", "0.001", "0.1", "10", "1000", "100000", "1e7", "1e9"}},
		{0.5, 1e12, []string{"0.01", "1", "100", "10000", "1000000", "1e8", "1e10", "1e12"}},
	} {
		ticks, labels := logTicks(tc.lo, tc.hi)
		if !slices.Equal(labels, tc.want) {
			t.Errorf("logTicks(%v, %v) labels = %q, want %q", tc.lo, tc.hi, labels, tc.want)
		}
		for i, l := range labels {
			v, err := strconv.ParseFloat(l, 64)
			if err != nil || !near(ticks[i], v) {
				t.Errorf("logTicks(%v, %v): tick %v labelled %q", tc.lo, tc.hi, ticks[i], l)
			}
		}
		if ticks[0] > tc.lo || ticks[len(ticks)-1] < tc.hi {
			t.Errorf("logTicks(%v, %v) = %v does not cover the range", tc.lo, tc.hi, ticks)
		}
	}
}

// svgDoc is what checkSVG learns about a document.
type svgDoc struct {
	classes map[string]int // elements per class name
	texts   []string       // character data of all elements
	raw     string
}

var coordAttrs = map[string]bool{"x": true, "y": true, "x1": true, "y1": true, "x2": true, "y2": true,
	"width": true, "height": true, "d": true, "transform": true, "viewBox": true}

// checkSVG parses the whole document as XML and checks that no coordinate
// is NaN or infinite.
func checkSVG(t *testing.T, data []byte) svgDoc {
	t.Helper()
	doc := svgDoc{classes: map[string]int{}, raw: string(data)}
	dec := xml.NewDecoder(bytes.NewReader(data))
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("invalid XML: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tok.Name.Local
				if root != "svg" || tok.Name.Space != "http://www.w3.org/2000/svg" {
					t.Fatalf("root element %v", tok.Name)
				}
			}
			for _, a := range tok.Attr {
				if coordAttrs[a.Name.Local] {
					if l := strings.ToLower(a.Value); strings.Contains(l, "nan") || strings.Contains(l, "inf") {
						t.Errorf("<%s %s=%q>", tok.Name.Local, a.Name.Local, a.Value)
					}
				}
				if a.Name.Local == "class" {
					for c := range strings.FieldsSeq(a.Value) {
						doc.classes[c]++
					}
				}
				if strings.Contains(a.Value, "url(") || a.Name.Local == "href" {
					t.Errorf("external reference: %s=%q", a.Name.Local, a.Value)
				}
			}
			if n := tok.Name.Local; n == "script" || n == "style" || n == "image" || n == "foreignObject" {
				t.Errorf("element <%s> in a self-contained plot", n)
			}
		case xml.CharData:
			if s := strings.TrimSpace(string(tok)); s != "" {
				doc.texts = append(doc.texts, s)
			}
		}
	}
	return doc
}

func (d svgDoc) hasText(s string) bool { return slices.Contains(d.texts, s) }

func TestPlotCDF(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	series := []Series{
		{Name: "warm <python>", Values: lognormal(r, 5000, 2, 0.3)},
		{Name: "cold & node", Values: lognormal(r, 300, 150, 0.5)},
		{Name: "mixed", Values: append(lognormal(r, 900, 3, 0.2), lognormal(r, 100, 200, 0.4)...)},
	}
	for _, logX := range []bool{false, true} {
		var buf bytes.Buffer
		if err := PlotCDF(&buf, "Latency CDF", series, logX); err != nil {
			t.Fatal(err)
		}
		doc := checkSVG(t, buf.Bytes())
		if !doc.hasText("Latency CDF") {
			t.Error("title missing")
		}
		if doc.classes["series"] != 3 || doc.classes["legend-entry"] != 3 {
			t.Errorf("logX=%v: %d series and %d legend entries, want 3 each", logX, doc.classes["series"], doc.classes["legend-entry"])
		}
		for _, s := range series {
			if !doc.hasText(s.Name) {
				t.Errorf("legend lacks %q", s.Name)
			}
		}
		if got := doc.hasText("latency (ms, log scale)"); got != logX {
			t.Errorf("logX=%v but log axis label present: %v", logX, got)
		}
		if !doc.hasText("fraction of requests") {
			t.Error("y axis label missing")
		}
	}

	// One series: no legend, the summary under the title instead.
	var buf bytes.Buffer
	if err := PlotCDF(&buf, "one", series[:1], false); err != nil {
		t.Fatal(err)
	}
	doc := checkSVG(t, buf.Bytes())
	if doc.classes["series"] != 1 || doc.classes["legend-entry"] != 0 || !strings.Contains(doc.raw, "n=5000") {
		t.Errorf("single series: %v", doc.classes)
	}
}

func TestPlotCDFLabeled(t *testing.T) {
	s := []Series{{Name: "slowdown", Values: []float64{1, 1.2, 3, 80}}}
	for logX, want := range map[bool]string{false: "slowdown", true: "slowdown (log scale)"} {
		var buf bytes.Buffer
		if err := PlotCDFLabeled(&buf, "Slowdown", "slowdown", s, logX); err != nil {
			t.Fatal(err)
		}
		doc := checkSVG(t, buf.Bytes())
		if !doc.hasText(want) || strings.Contains(doc.raw, "latency") || strings.Contains(doc.raw, "ms") {
			t.Errorf("logX=%v: axis label %q missing or latency units shown: %q", logX, want, doc.texts)
		}
	}
	if got := logLabel("latency (ms)"); got != "latency (ms, log scale)" {
		t.Errorf("logLabel: %q", got)
	}
}

func TestPlotCDFDegenerate(t *testing.T) {
	for name, s := range map[string][]Series{
		"single value":     {{Name: "a", Values: []float64{3}}},
		"constant":         {{Name: "a", Values: []float64{0, 0, 0}}, {Name: "b", Values: []float64{0}}},
		"zeros on log":     {{Name: "a", Values: []float64{0, 0, 5, 50, 500}}},
		"negative and NaN": {{Name: "a", Values: []float64{-1, math.NaN(), 1, math.Inf(1)}}},
	} {
		for _, logX := range []bool{false, true} {
			var buf bytes.Buffer
			if err := PlotCDF(&buf, name, s, logX); err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			checkSVG(t, buf.Bytes())
		}
	}
}

func TestPlotErrors(t *testing.T) {
	for name, f := range map[string]func(io.Writer) error{
		"CDF no series": func(w io.Writer) error { return PlotCDF(w, "t", nil, false) },
		"CDF empty series": func(w io.Writer) error {
			return PlotCDF(w, "t", []Series{{Name: "a", Values: []float64{1}}, {Name: "b"}}, false)
		},
		"CDF only NaN": func(w io.Writer) error {
			return PlotCDF(w, "t", []Series{{Name: "a", Values: []float64{math.NaN()}}}, true)
		},
		"timeline no points": func(w io.Writer) error { return PlotTimeline(w, "t", nil) },
		"timeline only NaN":  func(w io.Writer) error { return PlotTimeline(w, "t", []Point{{T: math.NaN(), Ms: 1}}) },
		"bars none":          func(w io.Writer) error { return PlotBars(w, "t", "ms", nil, nil) },
		"bars mismatch":      func(w io.Writer) error { return PlotBars(w, "t", "ms", []string{"a"}, []float64{1, 2}) },
		"bars NaN":           func(w io.Writer) error { return PlotBars(w, "t", "ms", []string{"a"}, []float64{math.NaN()}) },
	} {
		var buf bytes.Buffer
		err := f(&buf)
		if err == nil || !strings.HasPrefix(err.Error(), "report: ") {
			t.Errorf("%s: error %v", name, err)
		}
		if buf.Len() != 0 {
			t.Errorf("%s: wrote %d bytes despite the error", name, buf.Len())
		}
	}
}

// staircase parses cdfPath output ("M x y" then H/V commands) into vertices.
func staircase(t *testing.T, d string) [][2]float64 {
	t.Helper()
	re := regexp.MustCompile(`([MHV])([-0-9.]+)(?: ([-0-9.]+))?`)
	var pts [][2]float64
	var x, y float64
	for _, m := range re.FindAllStringSubmatch(d, -1) {
		a, _ := strconv.ParseFloat(m[2], 64)
		switch m[1] {
		case "M":
			x = a
			y, _ = strconv.ParseFloat(m[3], 64)
		case "H":
			x = a
		case "V":
			y = a
		}
		pts = append(pts, [2]float64{x, y})
	}
	return pts
}

// distToStaircase is the distance from p to the nearest of the path's
// axis-parallel segments.
func distToStaircase(pts [][2]float64, p [2]float64) float64 {
	best := math.Inf(1)
	for i := 1; i < len(pts); i++ {
		a, b := pts[i-1], pts[i]
		cx := min(max(p[0], min(a[0], b[0])), max(a[0], b[0]))
		cy := min(max(p[1], min(a[1], b[1])), max(a[1], b[1]))
		best = min(best, math.Hypot(p[0]-cx, p[1]-cy))
	}
	return best
}

// TestCDFPathShape checks that thinning a large series keeps the curve
// within a pixel of the exact empirical CDF, bounds the number of points,
// and keeps the percentile points exactly.
func TestCDFPathShape(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, tc := range []struct {
		name string
		v    []float64
		log  bool
	}{
		{"small exact", []float64{1, 2, 2, 2, 7}, false},
		{"1e6 lognormal, log axis", lognormal(r, 1_000_000, 10, 1), true},
		{"1e6 bimodal, linear", append(lognormal(r, 900_000, 3, 0.1), lognormal(r, 100_000, 300, 0.1)...), false},
		{"1e5 quantised", quantised(r, 100_000), false},
	} {
		v := slices.Clone(tc.v)
		slices.Sort(v)
		n := len(v)
		var x axis
		if tc.log {
			x = newAxis(v[0], v[n-1], true, 0)
		} else {
			x = newAxis(v[0], v[n-1], false, 8)
		}
		x.p0, x.p1 = 0, 1000
		y := newAxis(0, 1, false, 5)
		y.p0, y.p1 = 1000, 0
		s := &svg{}
		s.cdfPath(v, x, y)
		pts := staircase(t, string(s.b))
		if len(pts) > 2*2*cdfResolution+20 {
			t.Errorf("%s: %d vertices", tc.name, len(pts))
		}
		// Every distinct value's corner (x(v), y(F(v))) lies within a pixel
		// of the drawn curve; check a sample of them and all percentiles.
		check := func(i int) float64 {
			for i+1 < n && v[i+1] == v[i] {
				i++
			}
			return distToStaircase(pts, [2]float64{x.pos(v[i]), y.pos(float64(i+1) / float64(n))})
		}
		worst := 0.0
		for range 500 {
			worst = max(worst, check(r.IntN(n)))
		}
		if worst > 1.5 {
			t.Errorf("%s: the drawn curve is %.2f px from the exact CDF", tc.name, worst)
		}
		for _, p := range []float64{0, 50, 90, 99, 99.9, 100} {
			pv := stats.Percentile(v, p)
			last, _ := slices.BinarySearch(v, math.Nextafter(pv, math.Inf(1)))
			corner := [2]float64{math.Round(x.pos(pv)*100) / 100, math.Round(y.pos(float64(last)/float64(n))*100) / 100}
			if !slices.Contains(pts, corner) {
				t.Errorf("%s: P%v corner %v not drawn exactly", tc.name, p, corner)
			}
		}
		if tc.name == "small exact" {
			x2 := math.Round(x.pos(2)*100) / 100
			want := [][2]float64{{0, 1000}, {0, 800}, {x2, 800}, {x2, 200}, {1000, 200}, {1000, 0}}
			if !slices.Equal(pts, want) {
				t.Errorf("small: %v, want %v", pts, want)
			}
		}
	}
}

func lognormal(r *rand.Rand, n int, median, sigma float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = median * math.Exp(sigma*r.NormFloat64())
	}
	return v
}

// quantised latencies have many duplicates, as with a coarse clock.
func quantised(r *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = math.Round(r.ExpFloat64() * 5)
	}
	return v
}

func TestPlotTimeline(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	var pts []Point
	cold, failed := 0, 0
	for i := range 50_000 {
		p := Point{T: float64(i) / 500, Ms: 3 * math.Exp(0.3*r.NormFloat64())}
		switch {
		case i%97 == 0:
			p.Cold, p.Ms = true, 250+r.Float64()*100
			cold++
		case i%251 == 0:
			p.Failed, p.Ms = true, 0
			failed++
		case i%1009 == 0:
			p.Failed, p.Cold, p.Ms = true, true, 5000
			failed++
		}
		pts = append(pts, p)
	}
	pts = append(pts, Point{T: math.NaN(), Ms: 1}, Point{T: 1, Ms: math.Inf(1)})
	var buf bytes.Buffer
	if err := PlotTimeline(&buf, "Latency over time", pts); err != nil {
		t.Fatal(err)
	}
	doc := checkSVG(t, buf.Bytes())
	if !doc.hasText("Latency over time") || !doc.hasText("time since start (s)") || !doc.hasText("latency (ms, log scale)") {
		t.Errorf("title or axis labels missing: %q", doc.texts)
	}
	if doc.classes["legend-entry"] != 3 {
		t.Errorf("%d legend entries, want 3", doc.classes["legend-entry"])
	}
	warm := len(pts) - 2 - cold - failed
	markers := func(class string) int {
		m := regexp.MustCompile(`class="points ` + class + `"[^>]* d="([^"]*)"`).FindStringSubmatch(doc.raw)
		if m == nil {
			t.Fatalf("no %s points", class)
		}
		return strings.Count(m[1], "M")
	}
	nw, nc, nf := markers("warm"), markers("cold"), markers("failed")
	if nc != cold || nf != failed {
		t.Errorf("drew %d cold and %d failed points, want all %d and %d", nc, nf, cold, failed)
	}
	if total := nw + nc + nf; total > maxTimelinePoints || total < maxTimelinePoints-10 {
		t.Errorf("drew %d points, want about %d", total, maxTimelinePoints)
	}
	for _, want := range []string{
		"warm: " + strconv.Itoa(warm) + " (" + strconv.Itoa(nw) + " drawn)",
		"cold: " + strconv.Itoa(cold), "failed: " + strconv.Itoa(failed),
	} {
		if !doc.hasText(want) {
			t.Errorf("legend lacks %q: %q", want, doc.texts)
		}
	}

	// Few points, narrow range: everything drawn, linear axis, a legend
	// that says there were no failures.
	buf.Reset()
	if err := PlotTimeline(&buf, "small", []Point{{T: 0, Ms: 4}, {T: 1.5, Ms: 6}, {T: 3, Ms: 5, Cold: true}}); err != nil {
		t.Fatal(err)
	}
	doc = checkSVG(t, buf.Bytes())
	if !doc.hasText("latency (ms)") || !doc.hasText("failed: 0") || !doc.hasText("warm: 2") || doc.classes["points"] != 2 {
		t.Errorf("small timeline: %q %v", doc.texts, doc.classes)
	}
}

func TestThinMostlyFailures(t *testing.T) {
	classes := [][]Point{make([]Point, 1000), make([]Point, 10), make([]Point, 100_000)}
	out := thin(classes, maxTimelinePoints)
	total := len(out[0]) + len(out[1]) + len(out[2])
	if total != maxTimelinePoints || len(out[0]) != 1000 || len(out[1]) != 10 {
		t.Errorf("thinned to %d warm, %d cold, %d failed", len(out[0]), len(out[1]), len(out[2]))
	}
	// Many warm points keep at least a quarter of the budget.
	classes = [][]Point{make([]Point, 100_000), make([]Point, 30_000), make([]Point, 500)}
	out = thin(classes, maxTimelinePoints)
	total = len(out[0]) + len(out[1]) + len(out[2])
	if total != maxTimelinePoints || len(out[0]) != maxTimelinePoints/4 || len(out[2]) != 500 {
		t.Errorf("thinned to %d warm, %d cold, %d failed", len(out[0]), len(out[1]), len(out[2]))
	}
}

func TestPlotBars(t *testing.T) {
	labels := []string{"hello", "a-very-long-function-name-that-goes-on-and-on-and-on-forever-and-ever-more", "x<y>&z", "zero"}
	values := []float64{12.5, 830, 0.42, 0}
	var buf bytes.Buffer
	if err := PlotBars(&buf, "p99 per function", "p99 latency (ms)", labels, values); err != nil {
		t.Fatal(err)
	}
	doc := checkSVG(t, buf.Bytes())
	if doc.classes["bar"] != 4 || !doc.hasText("p99 per function") || !doc.hasText("p99 latency (ms)") {
		t.Errorf("bars: %v %q", doc.classes, doc.texts)
	}
	for _, want := range []string{"hello", "x<y>&z", labels[1], "12.5", "830", "0.42"} {
		if !doc.hasText(want) {
			t.Errorf("missing text %q", want)
		}
	}
	// Negative values and a single bar.
	buf.Reset()
	if err := PlotBars(&buf, "delta", "ms", []string{"a", "b"}, []float64{-5, 20}); err != nil {
		t.Fatal(err)
	}
	checkSVG(t, buf.Bytes())
	buf.Reset()
	if err := PlotBars(&buf, "one", "ms", []string{"a"}, []float64{0}); err != nil {
		t.Fatal(err)
	}
	checkSVG(t, buf.Bytes())
}

func TestWantLogX(t *testing.T) {
	if WantLogX([]Series{{Values: []float64{2, 5, 40}}}) {
		t.Error("2..40 wants a log axis")
	}
	if !WantLogX([]Series{{Values: []float64{2, 5}}, {Values: []float64{0, 300, math.Inf(1)}}}) {
		t.Error("2..300 does not want a log axis")
	}
	if WantLogX([]Series{{Values: []float64{0, -1}}}) {
		t.Error("no positive values want a log axis")
	}
}

func BenchmarkPlotCDF1e6(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	s := []Series{{Name: "a", Values: lognormal(r, 1_000_000, 5, 1)}}
	for b.Loop() {
		if err := PlotCDF(io.Discard, "t", s, true); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteCSV1e6(b *testing.B) {
	s := make([]Sample, 1_000_000)
	for i := range s {
		s[i] = Sample{Function: "fn", StartNs: int64(i) * 1e6, LatencyNs: 4_200_000 + int64(i), Status: 200, ExecMs: 1.25, Instance: "i-3"}
	}
	for b.Loop() {
		if err := WriteCSV(io.Discard, s); err != nil {
			b.Fatal(err)
		}
	}
}

func TestFormatValue(t *testing.T) {
	for v, want := range map[float64]string{
		0: "0", 2: "2", 2.004: "2", 4.0123: "4.01", 12.345: "12.3", 99.94: "99.9", 830: "830",
		1234.4: "1234", 0.000123456: "0.000123", -5: "-5", -0.5: "-0.5", 1e9: "1000000000",
	} {
		if got := formatValue(v); got != want {
			t.Errorf("formatValue(%v) = %q, want %q", v, got, want)
		}
	}
}
