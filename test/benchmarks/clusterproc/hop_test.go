package clusterproc

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/bench/loadgen"
	"github.com/baton-faas/baton/test/harness"
)

// BenchmarkWarmHop: warm invoke latency of the same echo function through
// `baton server`, through the controller that owns it (one hop to a worker
// process over the worker API), and through the other controller (one more
// forward to the owner), each measured with `baton bench` as a user would:
// one client in a closed loop, then 200 req/s open loop. Sandbox: fake
// (BATON_HOP_SANDBOX=process runs the Python echo in process sandboxes).
// The three paths are measured in turn, twice, in opposite orders, so that
// a change of the host's load does not favour one of them.
func BenchmarkWarmHop(b *testing.B) {
	sbArgs := hopSandbox(b)
	requests := envInt(b, "BATON_HOP_REQUESTS", 2000)
	duration := envDuration(b, "BATON_HOP_DURATION", 15e9)

	srv := harness.Start(b, harness.Options{Args: sbArgs})
	deploy(b, srv.Client, "hop")
	invokeOK(b, srv.Client, "hop")

	r := newRig(b)
	r.worker("w1", sbArgs...)
	ctrls := []*node{r.controller("c1"), r.controller("c2")}
	for _, c := range ctrls {
		waitHealthy(b, r.client(c), c.id+" to serve")
	}
	deploy(b, r.client(ctrls[0]), "hop")
	own := waitSteady(b, r, ctrls, []string{"hop"}, nil)
	owner, other := ctrls[0], ctrls[1]
	if own["hop"] == other.id {
		owner, other = other, owner
	}
	b.Logf("hop is owned by %s; %s forwards to it", owner.id, other.id)

	paths := []hopPath{
		{"baton server", srv.URL, srv.Token},
		{"controller (owner) → worker", owner.url(), token},
		{"other controller → owner → worker", other.url(), token},
	}
	b.ResetTimer()
	measureHops(b, nil, paths, requests, duration)
	b.StopTimer()
}

// hopSandbox reads BATON_HOP_SANDBOX and returns the sandbox flags of the
// server and the workers.
func hopSandbox(b *testing.B) []string {
	b.Helper()
	sandbox := os.Getenv("BATON_HOP_SANDBOX")
	if sandbox == "" {
		sandbox = "fake"
	}
	if sandbox != "fake" && sandbox != "process" {
		b.Fatalf("BATON_HOP_SANDBOX=%q: want fake or process", sandbox)
	}
	if sandbox == "process" {
		if _, err := exec.LookPath("python3"); err != nil {
			b.Skip("BATON_HOP_SANDBOX=process needs python3 on PATH")
		}
	}
	if sandbox == "process" {
		return []string{"--sandbox", "process"}
	}
	return []string{"--sandbox", "fake", "--fake-start-latency", "40ms"}
}

// hopPath is one way to reach the function: a base URL and its token.
type hopPath struct{ name, url, token string }

// measureHops runs `baton bench` over every path, one client in a closed
// loop then a 200 req/s open loop, each path twice in opposite orders, and
// logs each run. The client runs on host in, or in this process's network
// namespace when in is nil.
func measureHops(b *testing.B, in *harness.Host, paths []hopPath, requests int, duration time.Duration) {
	b.Helper()
	loads := []struct {
		name string
		args []string
	}{
		{"closed loop, 1 client", []string{"-c", "1", "-n", fmt.Sprint(requests), "--warmup", "100"}},
		{"open loop, 200 req/s", []string{"--rate", "200", "--duration", duration.String(), "--warmup", "100"}},
	}
	for _, ld := range loads {
		got := map[string][]loadgen.Summary{}
		for pass := range 2 {
			for i := range paths {
				p := paths[i]
				if pass == 1 {
					p = paths[len(paths)-1-i]
				}
				got[p.name] = append(got[p.name], benchRun(b, in, p.url, p.token, ld.args))
			}
		}
		for _, p := range paths {
			for k, s := range got[p.name] {
				b.Logf("%s, %s, pass %d: %d requests, %d errors, latency p50 %.3f ms, p90 %.3f, p99 %.3f, max %.3f; sent late %d (p99 lag %.2f ms)",
					ld.name, p.name, k+1, s.Count, s.Errors, s.LatencyMs.P50, s.LatencyMs.P90, s.LatencyMs.P99, s.LatencyMs.Max,
					s.Schedule.LateRequests, s.Schedule.P99LagMs)
			}
		}
	}
}

// benchRun runs `baton bench --function hop` against url, on host in (nil:
// here), and returns its summary.
func benchRun(b *testing.B, in *harness.Host, url, tok string, args []string) loadgen.Summary {
	b.Helper()
	out := filepath.Join(b.TempDir(), "bench")
	full := append([]string{"bench", "--server", url, "--function", "hop", "--data", `{"n":1}`, "--out", out}, args...)
	cmd := batonCmd(b, in, full...)
	cmd.Env = append(os.Environ(), "BATON_TOKEN="+tok)
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("baton %s: %v\n%s", strings.Join(full, " "), err, o)
	}
	raw, err := os.ReadFile(filepath.Join(out, "summary.json"))
	if err != nil {
		b.Fatal(err)
	}
	var s loadgen.Summary
	if err := json.Unmarshal(raw, &s); err != nil {
		b.Fatalf("summary.json: %v", err)
	}
	return s
}
