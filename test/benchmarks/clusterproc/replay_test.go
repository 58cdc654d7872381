package clusterproc

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/baton-faas/baton/test/harness"
)

// traceDir is the small Azure-format trace the repository ships for the
// replay tests (section 6 of docs/BENCHMARKS.md uses it too).
const traceDir = "../../../internal/bench/trace/testdata/azure-mini"

// replayDist is the part of a stats.Dist that is compared.
type replayDist struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// replaySummary is the part of `baton replay`'s summary.json compared here.
type replaySummary struct {
	Invocations         int        `json:"invocations"`
	Errors              int        `json:"errors"`
	ColdFraction        float64    `json:"coldFraction"`
	SchedulingLatencyMs replayDist `json:"schedulingLatencyMs"`
	Schedule            struct {
		LateRequests int     `json:"lateRequests"`
		P99LagMs     float64 `json:"p99LagMs"`
	} `json:"schedule"`
	FirstError string `json:"firstError"`
	Functions  []struct {
		ID                  string     `json:"id"`
		Invocations         int        `json:"invocations"`
		Errors              int        `json:"errors"`
		ColdFraction        float64    `json:"coldFraction"`
		SchedulingLatencyMs replayDist `json:"schedulingLatencyMs"`
	} `json:"functions"`
}

// BenchmarkTraceReplay: the same `baton replay` (same trace, functions,
// minutes, seed) against `baton server --sandbox fake` and against a
// cluster of one controller and three workers (fake sandbox, 40 ms starts,
// each a process on loopback). Fake instances echo the event instead of
// sleeping, so the scheduling latency replay reports is the whole response
// time: Baton's path with no function work in it.
func BenchmarkTraceReplay(b *testing.B) {
	sb := []string{"--sandbox", "fake", "--fake-start-latency", "40ms"}
	args := replayArgs(b, traceDir)

	srv := harness.Start(b, harness.Options{Args: sb})
	r := newRig(b)
	for _, id := range []string{"w1", "w2", "w3"} {
		r.worker(id, sb...)
	}
	ctrl := r.controller("c1")
	cl := r.client(ctrl)
	waitHealthy(b, cl, "the controller to serve")
	waitWorkers(b, cl, 3)

	b.ResetTimer()
	server := replayRun(b, nil, srv.URL, srv.Token, args)
	cluster := replayRun(b, nil, ctrl.url(), token, args)
	b.StopTimer()
	reportReplay(b, server, cluster)
}

// replayArgs are the replay flags every run shares (section 6's settings),
// reading the trace from dir.
func replayArgs(b *testing.B, dir string) []string {
	b.Helper()
	minutes := envInt(b, "BATON_REPLAY_MINUTES", 2)
	compress := envInt(b, "BATON_REPLAY_COMPRESS", 1)
	return []string{"--trace", dir, "--functions", "10", "--minutes", fmt.Sprint(minutes), "--start-minute", "600",
		"--compress", fmt.Sprint(compress), "--seed", "1"}
}

// reportReplay logs both summaries and the per-function p99s side by side.
func reportReplay(b *testing.B, server, cluster replaySummary) {
	b.Helper()
	for _, x := range []struct {
		name string
		s    replaySummary
	}{{"baton server", server}, {"cluster (1 controller, 3 workers)", cluster}} {
		b.Logf("%s: %d invocations, %d errors, %.1f%% cold, scheduling latency p50 %.2f ms, p99 %.2f, max %.2f; sent late %d (p99 lag %.2f ms); first error %q",
			x.name, x.s.Invocations, x.s.Errors, 100*x.s.ColdFraction, x.s.SchedulingLatencyMs.P50, x.s.SchedulingLatencyMs.P99,
			x.s.SchedulingLatencyMs.Max, x.s.Schedule.LateRequests, x.s.Schedule.P99LagMs, x.s.FirstError)
	}
	type pair struct {
		id               string
		n                int
		server, cluster  float64
		sCold, cCold     float64
		sErrors, cErrors int
	}
	byID := map[string]*pair{}
	for _, f := range server.Functions {
		byID[f.ID] = &pair{id: f.ID, n: f.Invocations, server: f.SchedulingLatencyMs.P99, sCold: f.ColdFraction, sErrors: f.Errors}
	}
	for _, f := range cluster.Functions {
		p := byID[f.ID]
		if p == nil {
			p = &pair{id: f.ID, n: f.Invocations}
			byID[f.ID] = p
		}
		p.cluster, p.cCold, p.cErrors = f.SchedulingLatencyMs.P99, f.ColdFraction, f.Errors
	}
	var rows []*pair
	for _, p := range byID {
		rows = append(rows, p)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].n > rows[j].n })
	var sb2 strings.Builder
	fmt.Fprintln(&sb2, "| function | invocations | server p99 (ms) | cluster p99 (ms) | server cold | cluster cold | errors server / cluster |")
	fmt.Fprintln(&sb2, "|---|---|---|---|---|---|---|")
	for _, p := range rows {
		fmt.Fprintf(&sb2, "| %s | %d | %.2f | %.2f | %.1f %% | %.1f %% | %d / %d |\n", p.id, p.n, p.server, p.cluster,
			100*p.sCold, 100*p.cCold, p.sErrors, p.cErrors)
	}
	b.Logf("per-function p99 scheduling latency:\n%s", sb2.String())
}

// replayRun runs `baton replay` against url, on host in (nil: here), and
// returns its summary.
func replayRun(b *testing.B, in *harness.Host, url, tok string, args []string) replaySummary {
	b.Helper()
	s, err := replayTry(b, in, url, tok, args)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// replayTry is replayRun returning its failure, with baton's output in it.
func replayTry(b *testing.B, in *harness.Host, url, tok string, args []string) (replaySummary, error) {
	b.Helper()
	var s replaySummary
	out := filepath.Join(b.TempDir(), "replay")
	full := append([]string{"replay", "--server", url, "--out", out}, args...)
	cmd := batonCmd(b, in, full...)
	cmd.Env = append(os.Environ(), "BATON_TOKEN="+tok)
	if o, err := cmd.CombinedOutput(); err != nil {
		return s, fmt.Errorf("baton %s: %w\n%s", strings.Join(full, " "), err, o)
	}
	raw, err := os.ReadFile(filepath.Join(out, "summary.json"))
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return s, fmt.Errorf("summary.json: %w", err)
	}
	return s, nil
}
