package cli

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	dir := filepath.Join("..", "trace", "testdata", "azure-mini")
	out := t.TempDir()
	args := []string{"replay", "--server", srv.URL, "--trace", dir, "--functions", "4", "--minutes", "1",
		"--start-minute", "600", "--compress", "30", "--seed", "3", "--max-exec", "300ms", "--out", out}
	stdout, stderr, err := runCLI(t, args...)
	if err != nil {
		t.Fatalf("replay: %v\n%s\n%s", err, stdout, stderr)
	}
	// The invocations replayed are exactly the trace's for that minute.
	tr, err := trace.Load(dir, trace.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fns, err := tr.Sample(4, 600, 1, 3)
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
