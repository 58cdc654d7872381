package e2e

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/baton-faas/baton/internal/function"
)

// TestFakeSandboxes runs the real server with fake sandboxes: instances
// are goroutines that echo their events, so the handler's own code (here
// one that answers something else) never runs and no process is started
// for a function.
func TestFakeSandboxes(t *testing.T) {
	// The host agent still looks up the Python interpreter before it asks
	// the sandbox for an instance.
	requirePython(t)
	srv := startServer(t, "--sandbox", "fake", "--fake-start-latency", "40ms")

	res := do(t, http.MethodGet, srv.URL+"/healthz", nil, nil)
	var health struct{ Isolation string }
	if err := json.Unmarshal(res.Body, &health); err != nil || !strings.HasPrefix(health.Isolation, "fake") {
		t.Fatalf("/healthz: HTTP %d %s (%v): want the fake isolation", res.Status, res.Body, err)
	}

	deploy(t, srv, "fakepy", pySpec("whoami"), pyDir)
	deploy(t, srv, "fakeprovided", function.Spec{Runtime: function.RuntimeProvided, Handler: "unused"}, failBootDir)
	for _, name := range []string{"fakepy", "fakeprovided"} {
		for i := range 3 {
			event := map[string]any{"hello": "fake", "function": name, "n": i}
			var got map[string]any
			mustInvoke(t, srv, name, event, &got)
			if got["hello"] != "fake" || got["function"] != name || got["n"] != float64(i) {
				t.Fatalf("invoke %s: got %v, want the event %v echoed", name, got, event)
			}
		}
		if procs := functionProcs(srv.Pid(), name); len(procs) > 0 {
			t.Errorf("function %s has processes with fake sandboxes: %s", name, procDesc(procs))
		}
	}
	// Concurrent invocations make the router start more (forked) fake
	// instances; every one must answer with its own event.
	parallel(8, func(i int) {
		event := `{"n":` + strconv.Itoa(i) + `}`
		resp, err := srv.Client.Invoke(ctx(t), "fakepy", []byte(event))
		if err != nil || resp.Status != http.StatusOK || string(resp.Body) != event {
			t.Errorf("concurrent invoke %d: status %d, err %v, body %s; want %s", i, resp.Status, err, resp.Body, event)
		}
	})
}

// TestFakeStartLatencyNeedsFakeSandboxes: the latency flag on another
// sandbox runtime is a mistake, told rather than ignored.
func TestFakeStartLatencyNeedsFakeSandboxes(t *testing.T) {
	requireLinux(t)
	_, errOut, code := cli(t, nil, "server", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--sandbox", "process", "--fake-start-latency", "10ms")
	if code == 0 || !strings.Contains(errOut, "--fake-start-latency applies to --sandbox fake only") {
		t.Fatalf("exit %d, stderr %q: want a refusal naming the flag", code, errOut)
	}
}
