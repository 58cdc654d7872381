package cli

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/baton-faas/baton/internal/bench/loadgen"
	"github.com/baton-faas/baton/internal/bench/report"
	"github.com/baton-faas/baton/internal/bench/trace"
	"github.com/baton-faas/baton/test/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.RemoveBinary()
	os.Exit(code)
}

func requirePython(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed: bench and replay deploy Python synthetic functions")
	}
}

// runCLI runs the command tree in-process and returns stdout and stderr.
func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	root := NewRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(harness.Context(t))
	return out.String(), errOut.String(), err
}

func readSummary(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func checkSVG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := xml.NewDecoder(f)
	for {
		if _, err := dec.Token(); err == io.EOF {
			return
		} else if err != nil {
			t.Fatalf("%s is not well-formed SVG: %v", path, err)
		}
	}
}

func readSamples(t *testing.T, path string) []report.Sample {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := report.ReadCSV(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return s
}

func TestBenchAgainstRealServer(t *testing.T) {
	requirePython(t)
	srv := harness.Start(t, harness.Options{})
	t.Setenv("BATON_TOKEN", srv.Token)
	out := t.TempDir()

	stdout, stderr, err := runCLI(t, "bench", "--server", srv.URL, "--mode", "warm", "-c", "2", "-n", "60",
		"--sleep-ms", "2", "--baseline", "--out", out)
	if err != nil {
		t.Fatalf("bench: %v\n%s\n%s", err, stdout, stderr)
	}
	var sum loadgen.Summary
	readSummary(t, filepath.Join(out, "summary.json"), &sum)
	if sum.Count != 60 || sum.Errors != 0 || sum.LatencyMs.P50 < 2 || sum.ExecMs.P50 < 2 {
		t.Fatalf("summary: count %d errors %d p50 %.2f exec p50 %.2f", sum.Count, sum.Errors, sum.LatencyMs.P50, sum.ExecMs.P50)
	}
	if sum.Baseline == nil || sum.Baseline.Count != 60 || sum.Overhead == nil {
		t.Fatalf("baseline missing from summary: %+v", sum.Baseline)
	}
	if samples := readSamples(t, filepath.Join(out, "requests.csv")); len(samples) != 60 {
		t.Fatalf("requests.csv has %d rows, want 60", len(samples))
	}
	for _, name := range []string{"latency-cdf.svg", "latency-timeline.svg"} {
		checkSVG(t, filepath.Join(out, name))
	}
	if !strings.Contains(stdout, "p99/p50") || !strings.Contains(stdout, "Baton's overhead") {
		t.Fatalf("no readable summary on stdout:\n%s", stdout)
	}

	// Cold sweep: every measured request must be a cold start.
	coldOut := t.TempDir()
	if _, stderr, err := runCLI(t, "bench", "--server", srv.URL, "--mode", "cold", "-n", "4", "--out", coldOut); err != nil {
		t.Fatalf("cold bench: %v\n%s", err, stderr)
	}
	for i, s := range readSamples(t, filepath.Join(coldOut, "requests.csv")) {
		if !s.Cold || s.Error != "" || s.InitMs <= 0 {
			t.Fatalf("cold sweep request %d: cold=%v init=%.2f err=%q", i, s.Cold, s.InitMs, s.Error)
		}
	}

	// A chain of three with per-hop timing, sent through the function URL
	// path is not possible for chains, so through the invoke API.
	chainOut := t.TempDir()
	if _, stderr, err := runCLI(t, "bench", "--server", srv.URL, "--chain", "3", "-n", "10", "--out", chainOut); err != nil {
		t.Fatalf("chain bench: %v\n%s", err, stderr)
	}
	var chainSum loadgen.Summary
	readSummary(t, filepath.Join(chainOut, "summary.json"), &chainSum)
	if len(chainSum.Hops) != 3 || chainSum.Hops[2].ExecMs.Count != 10 || chainSum.Hops[1].OverheadMs.Count != 10 {
		t.Fatalf("chain hops: %+v", chainSum.Hops)
	}
	hops, err := os.ReadFile(filepath.Join(chainOut, "hops.csv"))
	if err != nil || strings.Count(string(hops), "\n") != 1+3*10 {
		t.Fatalf("hops.csv: %v, %d lines", err, strings.Count(string(hops), "\n"))
	}

	// Open loop through the function URL with a large payload.
	if _, stderr, err := runCLI(t, "bench", "--server", srv.URL, "--mode", "open", "--rate", "50", "--arrival", "uniform",
		"-n", "20", "--http", "--payload-bytes", "200000"); err != nil {
		t.Fatalf("open-loop bench: %v\n%s", err, stderr)
	}

	// Everything bench deployed is gone.
	fns, err := srv.Client.List(harness.Context(t))
	if err != nil || len(fns) != 0 {
		t.Fatalf("functions left after bench: %v %v", fns, err)
	}
}

func TestBenchBadFlags(t *testing.T) {
	cases := map[string][]string{
		"no bound":      {"bench", "--mode", "closed"},
		"bad mode":      {"bench", "--mode", "zigzag", "-n", "1"},
		"bad arrival":   {"bench", "--mode", "open", "--rate", "1", "--arrival", "gaussian", "-n", "1"},
		"bad server":    {"bench", "--server", "not a url", "-n", "1"},
		"data no fn":    {"bench", "-n", "1", "--data", "{}", "--server", "http://127.0.0.1:1"},
		"replay no dir": {"replay", "--functions", "1"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			if _, _, err := runCLI(t, args...); err == nil {
				t.Fatalf("%v accepted", args)
			}
		})
	}
}

func TestReplayAgainstRealServer(t *testing.T) {
	requirePython(t)
	srv := harness.Start(t, harness.Options{})
	t.Setenv("BATON_TOKEN", srv.Token)
	dir := filepath.Join("..", "bench", "trace", "testdata", "azure-mini")
	out := t.TempDir()
	// Seed 1 samples 219 invocations in that minute (seed 3: 554, 503 of
	// them to one function that touches 60 MB each). Two seconds of them
	// at once overload a busy 2-core host until calls time out; at most 4
	// in flight keeps them all answerable, and the client reports the lag.
	args := []string{"replay", "--server", srv.URL, "--trace", dir, "--functions", "4", "--minutes", "1",
		"--start-minute", "600", "--compress", "30", "--seed", "1", "--max-exec", "300ms", "--max-inflight", "4", "--out", out}
	stdout, stderr, err := runCLI(t, args...)
	if err != nil {
		t.Fatalf("replay: %v\n%s\n%s", err, stdout, stderr)
	}
	// The invocations replayed are exactly the trace's for that minute.
	tr, err := trace.Load(dir, trace.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fns, err := tr.Sample(4, 600, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, f := range fns {
		want += f.PerMinute[600]
	}
	samples := readSamples(t, filepath.Join(out, "invocations.csv"))
	if len(samples) != want {
		t.Fatalf("replayed %d invocations, the trace has %d", len(samples), want)
	}
	for _, s := range samples {
		if s.Error != "" {
			t.Fatalf("replayed invocation failed: %s", s.Error)
		}
		if s.ReportedMs < s.RequestedMs*0.9 {
			t.Fatalf("function reported %.2f ms for a requested %.2f ms", s.ReportedMs, s.RequestedMs)
		}
	}
	var sum replaySummary
	readSummary(t, filepath.Join(out, "summary.json"), &sum)
	if sum.Invocations != want || sum.SchedulingLatencyMs.Count != want || len(sum.Functions) == 0 {
		t.Fatalf("summary: %+v", sum)
	}
	for _, name := range []string{"scheduling-cdf.svg", "slowdown-cdf.svg", "functions-p99.svg", "response-timeline.svg"} {
		checkSVG(t, filepath.Join(out, name))
	}
	if left, err := srv.Client.List(harness.Context(t)); err != nil || len(left) != 0 {
		t.Fatalf("functions left after replay: %v %v", left, err)
	}
}

// fakeAPI answers just enough of Baton's API for bench --function: the
// function exists and every invocation answers {}.
func fakeAPI(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var invokes atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/v1/functions/echo":
			_, _ = io.WriteString(w, `{"name":"echo"}`)
		case r.Method == http.MethodPost && r.URL.Path == "/v1/functions/echo/invoke":
			invokes.Add(1)
			_, _ = io.WriteString(w, `{}`)
		default:
			http.Error(w, `{"code":"not_found","message":"no such path"}`, http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &invokes
}

func TestBenchRateImpliesOpenLoop(t *testing.T) {
	srv, invokes := fakeAPI(t)
	out := t.TempDir()
	_, stderr, err := runCLI(t, "bench", "--server", srv.URL, "--function", "echo", "--rate", "200", "-n", "20", "--out", out)
	if err != nil {
		t.Fatalf("bench --rate: %v\n%s", err, stderr)
	}
	var sum loadgen.Summary
	readSummary(t, filepath.Join(out, "summary.json"), &sum)
	if sum.Mode != string(loadgen.Open) || sum.Count != 20 || invokes.Load() != 20 {
		t.Fatalf("--rate without --mode ran mode %q, %d requests (%d invocations); want the open loop, 20", sum.Mode, sum.Count, invokes.Load())
	}

	// An explicit open mode with a rate is fine; any other mode conflicts.
	if _, stderr, err := runCLI(t, "bench", "--server", srv.URL, "--function", "echo", "--mode", "open", "--rate", "200", "-n", "5"); err != nil {
		t.Fatalf("--mode open --rate: %v\n%s", err, stderr)
	}
	for _, mode := range []string{"closed", "burst", "cold", "warm"} {
		_, _, err := runCLI(t, "bench", "--server", srv.URL, "--function", "echo", "--mode", mode, "--rate", "200", "-n", "5")
		if err == nil || !strings.Contains(err.Error(), "--rate") || !strings.Contains(err.Error(), "--mode "+mode) {
			t.Fatalf("--mode %s --rate 200: got %v, want an error naming both flags", mode, err)
		}
	}
}

// writeSmallTrace writes a copy of the mini Azure trace that keeps only
// the first n functions of the invocations file.
func writeSmallTrace(t *testing.T, n int) string {
	t.Helper()
	src := filepath.Join("..", "bench", "trace", "testdata", "azure-mini")
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	keep := map[string]bool{}
	for _, name := range []string{"invocations_per_function_md.anon.d01.csv", "function_durations_percentiles.anon.d01.csv"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitAfter(string(b), "\n")
		out := lines[0]
		for _, l := range lines[1:] {
			f := strings.SplitN(l, ",", 4)
			if len(f) < 4 {
				continue
			}
			id := f[0] + f[1] + f[2]
			if strings.HasPrefix(name, "invocations") && len(keep) < n {
				keep[id] = true
			}
			if keep[id] {
				out += l
			}
		}
		if err := os.WriteFile(filepath.Join(dst, name), []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "app_memory") {
			b, err := os.ReadFile(filepath.Join(src, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dst
}

func TestReplayUsesAllFunctionsOfASmallTrace(t *testing.T) {
	dir := writeSmallTrace(t, 3)
	tr, err := trace.Load(dir, trace.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The window is one where all three functions were invoked.
	start := -1
	for m := 0; m < tr.Minutes && start < 0; m++ {
		if tr.Eligible(m, 1) == 3 {
			start = m
		}
	}
	if start < 0 {
		t.Skip("the mini trace has no minute where its first three functions all ran")
	}
	// No server listens on port 1: the run gets as far as deploying.
	_, stderr, err := runCLI(t, "replay", "--server", "http://127.0.0.1:1", "--trace", dir,
		"--start-minute", strconv.Itoa(start), "--minutes", "1")
	if err == nil || strings.Contains(err.Error(), "cannot sample") {
		t.Fatalf("replay with the default --functions on a 3-function trace: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "only 3 functions") || !strings.Contains(stderr, "replaying all of them") {
		t.Fatalf("stderr does not say the 3 functions replace --functions 10:\n%s", stderr)
	}
	if !strings.Contains(stderr, "of 3 functions") {
		t.Fatalf("stderr does not announce the replay of 3 functions:\n%s", stderr)
	}
}
