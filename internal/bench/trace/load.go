package trace

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Options tunes Load.
type Options struct {
	// Day selects the day ("d01") when the directory holds several.
	Day string
	// MaxFunctions keeps only the first n functions of the invocation file
	// (0 keeps all). The rest is still validated.
	MaxFunctions int
}

// ParseError reports malformed input.
type ParseError struct {
	File   string // path of the file
	Line   int    // 1-based; the header is line 1; 0 for the whole file
	Column string // header name of the offending column, "" if not about one
	Err    error
}

func (e *ParseError) Error() string {
	switch {
	case e.Line == 0:
		return fmt.Sprintf("trace: %s: %v", e.File, e.Err)
	case e.Column == "":
		return fmt.Sprintf("trace: %s:%d: %v", e.File, e.Line, e.Err)
	default:
		return fmt.Sprintf("trace: %s:%d: column %q: %v", e.File, e.Line, e.Column, e.Err)
	}
}

func (e *ParseError) Unwrap() error { return e.Err }

// The three kinds of file of one day, as found in their names.
const (
	kindInvocations = "invocations_per_function_md"
	kindDurations   = "function_durations_percentiles"
	kindMemory      = "app_memory_percentiles"
)

var (
	durationCols = []string{"percentile_Average_0", "percentile_Average_1", "percentile_Average_25",
		"percentile_Average_50", "percentile_Average_75", "percentile_Average_99", "percentile_Average_100"}
	durationQs = []float64{0, .01, .25, .5, .75, .99, 1}

	memoryCols = []string{"AverageAllocatedMb_pct1", "AverageAllocatedMb_pct5", "AverageAllocatedMb_pct25",
		"AverageAllocatedMb_pct50", "AverageAllocatedMb_pct75", "AverageAllocatedMb_pct95",
		"AverageAllocatedMb_pct99", "AverageAllocatedMb_pct100"}
	memoryQs = []float64{.01, .05, .25, .5, .75, .95, .99, 1}
)

// maxWarnings caps per-row warnings: a dirty real day could otherwise
// produce thousands of lines nobody reads.
const maxWarnings = 20

// Load reads one day of the trace from dir. See the package documentation
// for the expected files and the cleaning rules.
func Load(dir string, o Options) (*Trace, error) {
	if o.MaxFunctions < 0 {
		return nil, fmt.Errorf("trace: MaxFunctions must be >= 0, got %d", o.MaxFunctions)
	}
	files, day, err := findFiles(dir, o.Day)
	if err != nil {
		return nil, err
	}
	l := &loader{t: &Trace{Day: day}, index: map[string]int{}}
	if err := l.invocations(files[kindInvocations], o.MaxFunctions); err != nil {
		return nil, err
	}
	if err := l.durations(files[kindDurations]); err != nil {
		return nil, err
	}
	if path, ok := files[kindMemory]; ok {
		if err := l.memory(path); err != nil {
			return nil, err
		}
	} else {
		l.warns = append(l.warns, fmt.Sprintf("no *%s*.csv file for day %q: functions get default memory", kindMemory, day))
	}
	l.finish()
	return l.t, nil
}

// dayPattern finds the day token ("d01") between separators in a file name.
var dayPattern = regexp.MustCompile(`(?:^|[._-])(d\d+)(?:[._-]|$)`)

func dayOf(name string) string {
	m := dayPattern.FindAllStringSubmatch(strings.TrimSuffix(name, filepath.Ext(name)), -1)
	if len(m) == 0 {
		return ""
	}
	return m[len(m)-1][1]
}

// findFiles picks one file of each kind for the requested (or only) day.
func findFiles(dir, want string) (map[string]string, string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, "", fmt.Errorf("trace: %w", err)
	}
	kinds := []string{kindInvocations, kindDurations, kindMemory}
	found := map[string][]string{} // kind -> file names
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		for _, k := range kinds {
			if ok, _ := filepath.Match("*"+k+"*.csv", e.Name()); ok {
				found[k] = append(found[k], e.Name())
			}
		}
	}
	days := func(names []string) []string {
		var ds []string
		for _, n := range names {
			ds = append(ds, dayOf(n))
		}
		slices.Sort(ds)
		return slices.Compact(ds)
	}
	invDays := days(found[kindInvocations])
	if len(invDays) == 0 {
		return nil, "", fmt.Errorf("trace: no *%s*.csv file in %s", kindInvocations, dir)
	}
	day := want
	if day == "" {
		if len(invDays) > 1 {
			names := slices.Clone(invDays)
			if names[0] == "" {
				names[0] = "undated"
			}
			return nil, "", fmt.Errorf("trace: %s holds several days (%s): choose one (baton replay --day)",
				dir, strings.Join(names, ", "))
		}
		day = invDays[0]
	}
	files := map[string]string{}
	for _, k := range kinds {
		var match []string
		for _, n := range found[k] {
			if dayOf(n) == day {
				match = append(match, n)
			}
		}
		switch {
		case len(match) == 1:
			files[k] = filepath.Join(dir, match[0])
		case len(match) == 0 && k == kindMemory:
			// The public trace has no memory file for some days; functions
			// then run with default memory.
		case len(match) > 1:
			return nil, "", fmt.Errorf("trace: several *%s*.csv files for day %q in %s: %s",
				k, day, dir, strings.Join(match, ", "))
		case len(found[k]) == 0:
			return nil, "", fmt.Errorf("trace: no *%s*.csv file in %s", k, dir)
		default:
			return nil, "", fmt.Errorf("trace: no *%s*.csv file for day %q in %s (found: %s)",
				k, day, dir, strings.Join(found[k], ", "))
		}
	}
	return files, day, nil
}

// csvFile streams the records of one file and turns failures into
// ParseErrors.
type csvFile struct {
	path   string
	f      *os.File
	r      *csv.Reader
	header []string
}

func openCSV(path string) (*csvFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	r := csv.NewReader(bufio.NewReaderSize(f, 1<<20))
	// One record of 1440 fields at a time; nothing else is kept.
	r.ReuseRecord = true
	c := &csvFile{path: path, f: f, r: r}
	hdr, err := r.Read()
	if err == io.EOF {
		f.Close()
		return nil, &ParseError{File: path, Err: errors.New("empty file (no header line)")}
	}
	if err != nil {
		f.Close()
		return nil, c.wrap(err, 0)
	}
	c.header = slices.Clone(hdr)
	for i, h := range c.header {
		c.header[i] = strings.TrimSpace(h)
	}
	// Files saved by spreadsheet tools start with a byte order mark.
	c.header[0] = strings.TrimPrefix(c.header[0], "\ufeff")
	return c, nil
}

func (c *csvFile) Close() { c.f.Close() }

// next returns the next record, or io.EOF.
func (c *csvFile) next() ([]string, error) {
	rec, err := c.r.Read()
	if err != nil {
		return nil, c.wrap(err, len(rec))
	}
	return rec, nil
}

func (c *csvFile) wrap(err error, fields int) error {
	var pe *csv.ParseError
	switch {
	case err == io.EOF:
		return err
	case errors.As(err, &pe) && errors.Is(pe.Err, csv.ErrFieldCount):
		return &ParseError{File: c.path, Line: pe.Line,
			Err: fmt.Errorf("wrong number of fields: got %d, header has %d", fields, len(c.header))}
	case errors.As(err, &pe):
		return &ParseError{File: c.path, Line: pe.Line, Err: fmt.Errorf("%w (at byte %d)", pe.Err, pe.Column)}
	default:
		return fmt.Errorf("trace: %s: %w", c.path, err)
	}
}

// fieldErr reports a bad value in field i of the last record.
func (c *csvFile) fieldErr(i int, format string, args ...any) error {
	line, _ := c.r.FieldPos(i)
	return &ParseError{File: c.path, Line: line, Column: c.header[i], Err: fmt.Errorf(format, args...)}
}

// lineOf returns the line of the last record.
func (c *csvFile) lineOf() int {
	line, _ := c.r.FieldPos(0)
	return line
}

// columns returns the field indexes of the named columns.
func (c *csvFile) columns(names ...string) ([]int, error) {
	pos := make(map[string]int, len(c.header))
	for i, h := range c.header {
		if _, dup := pos[h]; dup {
			return nil, &ParseError{File: c.path, Line: 1, Column: h, Err: errors.New("duplicate column in header")}
		}
		pos[h] = i
	}
	idx := make([]int, len(names))
	for j, n := range names {
		i, ok := pos[n]
		if !ok {
			return nil, &ParseError{File: c.path, Line: 1, Column: n, Err: errors.New("missing from header")}
		}
		idx[j] = i
	}
	return idx, nil
}

// ident returns a non-empty identifier field.
func (c *csvFile) ident(rec []string, i int) (string, error) {
	s := strings.TrimSpace(rec[i])
	if s == "" {
		return "", c.fieldErr(i, "empty value")
	}
	return s, nil
}

// number parses a finite, non-negative value.
func (c *csvFile) number(rec []string, i int) (float64, error) {
	s := strings.TrimSpace(rec[i])
	v, err := strconv.ParseFloat(s, 64)
	switch {
	case err != nil || math.IsNaN(v) || math.IsInf(v, 0):
		return 0, c.fieldErr(i, "invalid number %q", rec[i])
	case v < 0:
		return 0, c.fieldErr(i, "negative value %s", s)
	}
	return v, nil
}

// percentiles reads the values at cols as points at qs, made monotone.
func (c *csvFile) percentiles(rec []string, avg int, cols []int, qs []float64) (Percentiles, bool, error) {
	a, err := c.number(rec, avg)
	if err != nil {
		return Percentiles{}, false, err
	}
	p := Percentiles{Average: a, Points: make([]Point, len(cols))}
	repaired := false
	for j, i := range cols {
		v, err := c.number(rec, i)
		if err != nil {
			return Percentiles{}, false, err
		}
		if j > 0 && v < p.Points[j-1].V {
			v = p.Points[j-1].V // running max keeps the inverse CDF valid
			repaired = true
		}
		p.Points[j] = Point{Q: qs[j], V: v}
	}
	return p, repaired, nil
}

type loader struct {
	t     *Trace
	index map[string]int // owner\x00app\x00function -> index in t.Functions
	warns []string
	more  int // warnings beyond maxWarnings
	// Summaries, reported once each.
	skipped, unknownDur, unknownMem, monotone int
}

func (l *loader) warn(format string, args ...any) {
	if len(l.warns) >= maxWarnings {
		l.more++
		return
	}
	l.warns = append(l.warns, fmt.Sprintf(format, args...))
}

func key(parts ...string) string { return strings.Join(parts, "\x00") }

func (l *loader) invocations(path string, max int) error {
	c, err := openCSV(path)
	if err != nil {
		return err
	}
	defer c.Close()
	idx, err := c.columns("HashOwner", "HashApp", "HashFunction", "Trigger")
	if err != nil {
		return err
	}
	// Minute columns are the headers 1..N, in any order.
	byMinute := map[int]int{}
	for i, h := range c.header {
		if m, err := strconv.Atoi(h); err == nil && m >= 1 {
			byMinute[m] = i
		}
	}
	if len(byMinute) == 0 {
		return &ParseError{File: path, Line: 1, Err: errors.New("no minute columns (1, 2, ..., 1440) in header")}
	}
	minuteCols := make([]int, len(byMinute))
	for m := range minuteCols {
		i, ok := byMinute[m+1]
		if !ok {
			return &ParseError{File: path, Line: 1, Column: strconv.Itoa(m + 1),
				Err: fmt.Errorf("missing from header (minute columns must be 1..%d)", len(byMinute))}
		}
		minuteCols[m] = i
	}
	l.t.Minutes = len(minuteCols)
	ids := map[string]string{} // ID -> key, to catch the (unlikely) collision of short ids

	scratch := make([]int, len(minuteCols))
	rows := 0
	for {
		rec, err := c.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		rows++
		var names [3]string
		for j := range names {
			if names[j], err = c.ident(rec, idx[j]); err != nil {
				return err
			}
		}
		trigger := strings.TrimSpace(rec[idx[3]])
		var total int64
		for m, i := range minuteCols {
			s := strings.TrimSpace(rec[i])
			v, err := strconv.Atoi(s)
			switch {
			case err != nil:
				return c.fieldErr(i, "invalid count %q", rec[i])
			case v < 0:
				return c.fieldErr(i, "negative count %d", v)
			}
			scratch[m] = v
			total += int64(v)
		}
		k := key(names[0], names[1], names[2])
		if fi, ok := l.index[k]; ok {
			f := &l.t.Functions[fi]
			for m, v := range scratch {
				f.PerMinute[m] += v
			}
			f.Total += total
			l.warn("%s:%d: duplicate invocation row for function %s: counts summed", filepath.Base(path), c.lineOf(), f.ID)
			continue
		}
		if max > 0 && len(l.t.Functions) >= max {
			l.skipped++
			continue
		}
		id := FunctionID(names[0], names[1], names[2])
		if other, ok := ids[id]; ok && other != k {
			return c.fieldErr(idx[2], "short function id %s collides with an earlier function", id)
		}
		ids[id] = k
		l.index[k] = len(l.t.Functions)
		l.t.Functions = append(l.t.Functions, Function{
			ID: id, Owner: names[0], App: names[1], Name: names[2], Trigger: trigger,
			PerMinute: slices.Clone(scratch), Total: total,
		})
	}
	if rows == 0 {
		return &ParseError{File: path, Err: errors.New("no data rows after the header")}
	}
	return nil
}

func (l *loader) durations(path string) error {
	c, err := openCSV(path)
	if err != nil {
		return err
	}
	defer c.Close()
	idx, err := c.columns(append([]string{"HashOwner", "HashApp", "HashFunction", "Average", "Count"}, durationCols...)...)
	if err != nil {
		return err
	}
	seen := make([]bool, len(l.t.Functions))
	for {
		rec, err := c.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		// Validate the whole row before looking it up: a bad line is an
		// error even when it belongs to no kept function.
		var names [3]string
		for j := range names {
			if names[j], err = c.ident(rec, idx[j]); err != nil {
				return err
			}
		}
		count, err := c.number(rec, idx[4])
		if err != nil {
			return err
		}
		p, repaired, err := c.percentiles(rec, idx[3], idx[5:], durationQs)
		if err != nil {
			return err
		}
		fi, ok := l.index[key(names[0], names[1], names[2])]
		if !ok {
			l.unknownDur++
			continue
		}
		f := &l.t.Functions[fi]
		if seen[fi] {
			l.warn("%s:%d: duplicate duration row for function %s: first row kept", filepath.Base(path), c.lineOf(), f.ID)
			continue
		}
		seen[fi] = true
		if count == 0 {
			continue
		}
		if repaired {
			l.monotone++
		}
		f.Duration, f.HasDuration = p, true
	}
}

func (l *loader) memory(path string) error {
	c, err := openCSV(path)
	if err != nil {
		return err
	}
	defer c.Close()
	idx, err := c.columns(append([]string{"HashOwner", "HashApp", "SampleCount", "AverageAllocatedMb"}, memoryCols...)...)
	if err != nil {
		return err
	}
	apps := map[string][]int{} // owner\x00app -> function indexes
	for i, f := range l.t.Functions {
		k := key(f.Owner, f.App)
		apps[k] = append(apps[k], i)
	}
	seen := map[string]bool{}
	for {
		rec, err := c.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		var names [2]string
		for j := range names {
			if names[j], err = c.ident(rec, idx[j]); err != nil {
				return err
			}
		}
		samples, err := c.number(rec, idx[2])
		if err != nil {
			return err
		}
		p, repaired, err := c.percentiles(rec, idx[3], idx[4:], memoryQs)
		if err != nil {
			return err
		}
		k := key(names[0], names[1])
		fns, ok := apps[k]
		if !ok {
			l.unknownMem++
			continue
		}
		if seen[k] {
			l.warn("%s:%d: duplicate memory row for app %.12s: first row kept", filepath.Base(path), c.lineOf(), names[1])
			continue
		}
		seen[k] = true
		if samples == 0 {
			continue
		}
		if repaired {
			l.monotone++
		}
		for _, i := range fns {
			l.t.Functions[i].MemoryMB, l.t.Functions[i].HasMemory = p, true
		}
	}
}

// finish appends the summary warnings, which are never dropped by the cap.
func (l *loader) finish() {
	if l.more > 0 {
		l.warns = append(l.warns, fmt.Sprintf("%d more warnings not shown", l.more))
	}
	if l.skipped > 0 {
		l.warns = append(l.warns, fmt.Sprintf("%d functions beyond MaxFunctions skipped", l.skipped))
	}
	if l.unknownDur > 0 {
		l.warns = append(l.warns, fmt.Sprintf("%d duration rows ignored: their functions are not loaded", l.unknownDur))
	}
	if l.unknownMem > 0 {
		l.warns = append(l.warns, fmt.Sprintf("%d memory rows ignored: their apps have no loaded function", l.unknownMem))
	}
	if l.monotone > 0 {
		l.warns = append(l.warns, fmt.Sprintf("%d rows had decreasing percentiles, made monotone", l.monotone))
	}
	l.t.Warnings = l.warns
}
