package cli

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/baton-faas/baton/internal/bench/loadgen"
)

// scalingAPI fakes a server whose function "slow" gains an instance every
// 25 invocations, up to 4; an invocation answered while fewer than 4 are
// up counts as a cold start.
func scalingAPI(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var invokes atomic.Int64
	up := func() int { return min(1+int(invokes.Load()/25), 4) }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/v1/functions/slow":
			var inst []string
			for i := range up() {
				inst = append(inst, fmt.Sprintf(`{"id":"i%d","version":3,"capacity":1}`, i))
			}
			fmt.Fprintf(w, `{"name":"slow","version":3,"spec":{"maxScale":10},"status":{"instances":[%s],"starting":%d}}`,
				strings.Join(inst, ","), 4-up())
		case r.Method == http.MethodPost && r.URL.Path == "/v1/functions/slow/invoke":
			cold := up() < 4
			invokes.Add(1)
			if cold {
				w.Header().Set("Baton-Cold-Start", "true")
			}
			_, _ = io.WriteString(w, `{}`)
		default:
			http.Error(w, `{"code":"not_found","message":"no such path"}`, http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &invokes
}

// Warm mode sends warm-up load until the server reports an instance per
// client up, then measures: no measured request is cold, although the
// default 20 warm-up requests alone would have left some.
func TestBenchWarmWaitsForInstances(t *testing.T) {
	srv, invokes := scalingAPI(t)
	out := t.TempDir()
	stdout, stderr, err := runCLI(t, "bench", "--server", srv.URL, "--function", "slow", "--mode", "warm", "-c", "4", "-n", "40", "--out", out)
	if err != nil {
		t.Fatalf("bench --mode warm: %v\n%s", err, stderr)
	}
	var sum loadgen.Summary
	readSummary(t, filepath.Join(out, "summary.json"), &sum)
	if sum.Count != 40 || sum.ColdLatencyMs.Count != 0 {
		t.Fatalf("%d requests measured, %d cold; want 40, none cold\n%s", sum.Count, sum.ColdLatencyMs.Count, stderr)
	}
	if invokes.Load() < 75+40 {
		t.Fatalf("%d invocations: the warm-up did not go on until 4 instances were up", invokes.Load())
	}
	if !strings.Contains(stderr, "warm-up: 4 of 4 instances up") {
		t.Fatalf("stderr does not show the wait for the instances:\n%s", stderr)
	}
	if !strings.Contains(stdout, "cold requests while measuring: 0") {
		t.Fatalf("the report does not say how many requests were cold:\n%s", stdout)
	}
}
