package report

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Sample is one request as the client saw it.
type Sample struct {
	Function string // function name (replay has many)
	// StartNs is the intended send time in Unix nanoseconds: in an open
	// loop the schedule's time, not when the request was actually sent.
	StartNs int64
	// LatencyNs runs from the intended send time to the full response, so
	// that a client falling behind its schedule shows up as latency
	// (coordinated omission) instead of hiding it.
	LatencyNs int64
	Status    int // HTTP status; 0 when the request failed without one
	Cold      bool
	// Phases from the Server-Timing header (0 if absent).
	WaitMs, InitMs, ExecMs float64
	Instance               string
	// LagNs is how late the client actually sent the request compared
	// with its schedule.
	LagNs int64
	Error string // empty on success
	// Replay only (0 otherwise):
	RequestedMs float64 // execution time asked of the function
	ReportedMs  float64 // execution time the function itself reported
}

// csvColumns are the CSV header names, in the order WriteCSV writes them.
var csvColumns = []string{
	"function", "start_ns", "latency_ns", "status", "cold", "wait_ms", "init_ms", "exec_ms",
	"instance", "lag_ns", "error", "requested_ms", "reported_ms",
}

// WriteCSV writes a header row and one row per sample. Text fields are
// quoted as RFC 4180 requires; floats use the shortest decimal form that
// reads back to the same value.
func WriteCSV(w io.Writer, samples []Sample) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(csvColumns); err != nil {
		return err
	}
	rec := make([]string, len(csvColumns))
	for _, s := range samples {
		rec[0] = s.Function
		rec[1] = strconv.FormatInt(s.StartNs, 10)
		rec[2] = strconv.FormatInt(s.LatencyNs, 10)
		rec[3] = strconv.Itoa(s.Status)
		rec[4] = strconv.FormatBool(s.Cold)
		rec[5] = formatCSVFloat(s.WaitMs)
		rec[6] = formatCSVFloat(s.InitMs)
		rec[7] = formatCSVFloat(s.ExecMs)
		rec[8] = s.Instance
		rec[9] = strconv.FormatInt(s.LagNs, 10)
		rec[10] = s.Error
		rec[11] = formatCSVFloat(s.RequestedMs)
		rec[12] = formatCSVFloat(s.ReportedMs)
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// formatCSVFloat avoids exponents, which some spreadsheet locales misread.
func formatCSVFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// ReadCSV reads what WriteCSV wrote. Columns are found by their header
// names, so their order does not matter and extra columns are ignored, but
// every column WriteCSV writes must be present. As with any CSV reader,
// a carriage return before a line feed inside a quoted field reads back as
// a bare line feed.
func ReadCSV(r io.Reader) ([]Sample, error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("report: empty CSV, want a header row")
	}
	if err != nil {
		return nil, fmt.Errorf("report: CSV header: %w", err)
	}
	idx := map[string]int{}
	for i, name := range header {
		if i == 0 {
			name = strings.TrimPrefix(name, "\ufeff") // spreadsheets add a byte order mark
		}
		idx[strings.TrimSpace(name)] = i
	}
	col := make([]int, len(csvColumns))
	for i, name := range csvColumns {
		j, ok := idx[name]
		if !ok {
			return nil, fmt.Errorf("report: CSV header lacks column %q (want %s)", name, strings.Join(csvColumns, ","))
		}
		col[i] = j
	}

	// Fields of one record share one string; intern the repetitive ones
	// so that a million samples do not each keep their whole line alive.
	intern := map[string]string{}
	internStr := func(s string) string {
		if v, ok := intern[s]; ok {
			return v
		}
		s = strings.Clone(s)
		intern[s] = s
		return s
	}

	var samples []Sample
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return samples, nil
		}
		if err != nil {
			return nil, fmt.Errorf("report: %w", err)
		}
		var s Sample
		var perr error
		field := func(i int) string { return rec[col[i]] }
		parseInt := func(i int) int64 {
			v, err := strconv.ParseInt(field(i), 10, 64)
			if err != nil && perr == nil {
				perr = fieldError(cr, col[i], csvColumns[i], field(i), err)
			}
			return v
		}
		parseFloat := func(i int) float64 {
			v, err := strconv.ParseFloat(field(i), 64)
			if err != nil && perr == nil {
				perr = fieldError(cr, col[i], csvColumns[i], field(i), err)
			}
			return v
		}
		s.Function = internStr(field(0))
		s.StartNs = parseInt(1)
		s.LatencyNs = parseInt(2)
		s.Status = int(parseInt(3))
		cold, err := strconv.ParseBool(field(4))
		if err != nil && perr == nil {
			perr = fieldError(cr, col[4], csvColumns[4], field(4), err)
		}
		s.Cold = cold
		s.WaitMs = parseFloat(5)
		s.InitMs = parseFloat(6)
		s.ExecMs = parseFloat(7)
		s.Instance = internStr(field(8))
		s.LagNs = parseInt(9)
		if e := field(10); e != "" {
			s.Error = strings.Clone(e)
		}
		s.RequestedMs = parseFloat(11)
		s.ReportedMs = parseFloat(12)
		if perr != nil {
			return nil, perr
		}
		samples = append(samples, s)
	}
}

func fieldError(cr *csv.Reader, field int, name, value string, err error) error {
	line, _ := cr.FieldPos(field)
	// The NumError's own text names strconv's function, not the column.
	if ne, ok := errors.AsType[*strconv.NumError](err); ok {
		err = ne.Err
	}
	return fmt.Errorf("report: CSV line %d, column %s: bad value %q: %w", line, name, value, err)
}
