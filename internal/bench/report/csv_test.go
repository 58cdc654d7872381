package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestCSVRoundTrip(t *testing.T) {
	in := []Sample{
		{Function: "hello", StartNs: 1_700_000_000_123_456_789, LatencyNs: 4_321_000, Status: 200, Cold: true,
			WaitMs: 0.125, InitMs: 3.5, ExecMs: 0.1 + 0.2, Instance: "i-1", LagNs: 17},
		{Function: "fn,with,commas", StartNs: -1, LatencyNs: math.MaxInt64, Status: 0,
			Error: "dial tcp: \"connection refused\", retrying\nsecond line\n", Instance: ""},
		{Function: `quote"d`, Status: 503, Error: `  leading spaces, "quotes" and a trailing comma,`,
			RequestedMs: 1e-7, ReportedMs: 123456789.000001, Instance: "ünïcødé ✓"},
		{Function: "", Error: "\\.", ExecMs: math.SmallestNonzeroFloat64, WaitMs: math.MaxFloat64},
	}
	var buf bytes.Buffer
	if err := WriteCSV(&buf, in); err != nil {
		t.Fatal(err)
	}
	header, _, _ := strings.Cut(buf.String(), "\n")
	if want := "function,start_ns,latency_ns,status,cold,wait_ms,init_ms,exec_ms,instance,lag_ns,error,requested_ms,reported_ms"; header != want {
		t.Errorf("header %q, want %q", header, want)
	}
	if strings.Contains(buf.String(), "e-") || strings.Contains(buf.String(), "e+") {
		t.Errorf("floats written with exponents:\n%s", buf.String())
	}
	out, err := ReadCSV(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip:\n got %#v\nwant %#v", out, in)
	}
}

func TestCSVEmptySamples(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteCSV(&buf, nil); err != nil {
		t.Fatal(err)
	}
	out, err := ReadCSV(&buf)
	if err != nil || len(out) != 0 {
		t.Errorf("header only: %v, %v", out, err)
	}
}

func TestReadCSVColumnOrder(t *testing.T) {
	in := "\ufefferror,extra,reported_ms,requested_ms,lag_ns,instance,exec_ms,init_ms,wait_ms,cold,status,latency_ns,start_ns,function\n" +
		"boom,x,1.5,2,3,i,4,5,6,true,500,7,8,f\n"
	out, err := ReadCSV(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Sample{{Function: "f", StartNs: 8, LatencyNs: 7, Status: 500, Cold: true, WaitMs: 6, InitMs: 5,
		ExecMs: 4, Instance: "i", LagNs: 3, Error: "boom", RequestedMs: 2, ReportedMs: 1.5}}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("got %+v, want %+v", out, want)
	}
}

func TestReadCSVErrors(t *testing.T) {
	header := strings.Join(csvColumns, ",") + "\n"
	for name, tc := range map[string]struct{ in, want string }{
		"empty":          {"", "empty CSV"},
		"missing column": {"function,start_ns\nf,1\n", `lacks column "latency_ns"`},
		"bad int":        {header + "f,1,2,3,false,0,0,0,i,0,,0,0\nf,x,2,3,false,0,0,0,i,0,,0,0\n", `line 3, column start_ns: bad value "x"`},
		"bad bool":       {header + "f,1,2,3,maybe,0,0,0,i,0,,0,0\n", `column cold: bad value "maybe"`},
		"bad float":      {header + "f,1,2,3,true,1..2,0,0,i,0,,0,0\n", `column wait_ms`},
		"short row":      {header + "f,1,2\n", "wrong number of fields"},
	} {
		_, err := ReadCSV(strings.NewReader(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, tc.want)
		}
	}
}

func TestWriteJSON(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "summary.json")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	v := map[string]any{"p50": 1.5, "name": "x"}
	if err := WriteJSON(path, v); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := "{\n  \"name\": \"x\",\n  \"p50\": 1.5\n}\n"; string(data) != want {
		t.Errorf("got %q, want %q", data, want)
	}
	var back map[string]any
	if err := json.Unmarshal(data, &back); err != nil || !reflect.DeepEqual(back, v) {
		t.Errorf("decode: %v, %v", back, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, %v", fi.Mode(), err)
	}

	// A value JSON cannot encode leaves the old file alone and no
	// temporary file behind.
	if err := WriteJSON(path, map[string]any{"x": math.NaN()}); err == nil {
		t.Error("NaN: no error")
	}
	if err := WriteJSON(filepath.Join(dir, "missing", "x.json"), 1); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing directory: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %v, want only summary.json", entries)
	}
	if data2, _ := os.ReadFile(path); !bytes.Equal(data, data2) {
		t.Errorf("file changed by a failed write: %q", data2)
	}
}
