package synthetic

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/test/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.RemoveBinary()
	os.Exit(code)
}

var allRuntimes = []string{function.RuntimePython, function.RuntimeNode, function.RuntimeProvided}

func requireRuntime(t *testing.T, rt string) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("synthetic function tests run a real baton server, which needs Linux")
	}
	interp := map[string]string{function.RuntimePython: "python3", function.RuntimeNode: "node"}[rt]
	if interp == "" {
		return
	}
	if _, err := exec.LookPath(interp); err != nil {
		t.Skipf("%s is not installed: skipping the %s synthetic function (install it, e.g. scripts/setup.sh)", interp, rt)
	}
}

// useBatonBinary points Code("provided") at the baton binary the test
// server runs: the test binary itself cannot serve the Go function.
func useBatonBinary(t *testing.T) {
	t.Helper()
	bin := harness.Binary(t)
	old := executable
	executable = func() (string, error) { return bin, nil }
	t.Cleanup(func() { executable = old })
}

type invocation struct {
	reply Reply
	resp  client.InvokeResponse
	wall  time.Duration // as seen by the test, an upper bound for ExecMs
}

func invoke(t *testing.T, c *client.Client, name string, b Behavior) (invocation, error) {
	t.Helper()
	payload, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp, err := c.Invoke(harness.Context(t), name, payload)
	inv := invocation{resp: resp, wall: time.Since(start)}
	if err != nil {
		return inv, err
	}
	if err := json.Unmarshal(resp.Body, &inv.reply); err != nil {
		t.Fatalf("%s: reply %.200q is not a synthetic reply: %v", name, resp.Body, err)
	}
	return inv, nil
}

func mustInvoke(t *testing.T, c *client.Client, name string, b Behavior) invocation {
	t.Helper()
	inv, err := invoke(t, c, name, b)
	if err != nil {
		t.Fatalf("invoke %s with %+v: %v", name, b, err)
	}
	return inv
}

func TestRuntimes(t *testing.T) {
	srv := harness.Start(t, harness.Options{})
	useBatonBinary(t)
	for _, rt := range allRuntimes {
		t.Run(rt, func(t *testing.T) {
			requireRuntime(t, rt)
			c := srv.Client
			name := "syn-" + rt
			if err := Deploy(harness.Context(t), c, name, function.Spec{Runtime: rt, MemoryMB: 256}); err != nil {
				t.Fatal(err)
			}
			if rt == function.RuntimeProvided {
				checkBootstrapSize(t)
			}

			// The first call starts the instance; later ones time warm work.
			first := mustInvoke(t, c, name, Behavior{})
			if first.reply.Runtime != rt {
				t.Errorf("runtime = %q, want %q", first.reply.Runtime, rt)
			}
			if len(first.reply.Hops) != 0 || first.reply.Body != "" {
				t.Errorf("an empty event got hops or a body: %+v", first.reply)
			}

			// A busy host may wake a sleeper late, so the sleep is bounded by
			// what the client saw, not by a slack of its own.
			const sleepMs = 50
			sl := mustInvoke(t, c, name, Behavior{SleepMs: sleepMs})
			if e := sl.reply.ExecMs; e < sleepMs {
				t.Errorf("sleep %d ms: execMs = %.2f, shorter than the sleep", sleepMs, e)
			}
			if sl.reply.ExecMs > float64(sl.wall.Microseconds())/1000 {
				t.Errorf("sleep: execMs %.2f exceeds the %v the client waited", sl.reply.ExecMs, sl.wall)
			}
			if sl.reply.CPUMs > sleepMs/2 {
				t.Errorf("sleep %d ms used %.2f ms of CPU: it should not spin", sleepMs, sl.reply.CPUMs)
			}

			// A busy host can take the CPU from a busy loop for most of its
			// wall time (a starved instance got a tenth of it), so the loop
			// runs long enough that even a thirtieth shows clearly against
			// a sleep's (almost) none, and the best of a few tries counts.
			const busyMs, minCPUMs = 300, 10
			var bz invocation
			for range 3 {
				bz = mustInvoke(t, c, name, Behavior{BusyMs: busyMs})
				if bz.reply.ExecMs < busyMs {
					t.Errorf("busy %d ms: execMs = %.2f", busyMs, bz.reply.ExecMs)
				}
				if bz.reply.CPUMs >= minCPUMs {
					break
				}
				t.Logf("busy %d ms: the process used only %.2f ms of CPU; trying again", busyMs, bz.reply.CPUMs)
			}
			if bz.reply.CPUMs < minCPUMs {
				t.Errorf("busy %d ms: the process used only %.2f ms of CPU (want at least %d): it does not spin", busyMs, bz.reply.CPUMs, minCPUMs)
			}

			const size = 1 << 20
			body := mustInvoke(t, c, name, Behavior{ResponseBytes: size})
			if len(body.reply.Body) != size || strings.Trim(body.reply.Body, "x") != "" {
				t.Errorf("responseBytes %d: got a body of %d bytes", size, len(body.reply.Body))
			}

			const touchMB = 64
			tm := mustInvoke(t, c, name, Behavior{TouchMB: touchMB})
			if tm.reply.MaxRSSMB < touchMB {
				t.Errorf("touch %d MiB: peak RSS is only %.1f MiB", touchMB, tm.reply.MaxRSSMB)
			}
			t.Logf("%s: cold %+v; sleep %.2f ms (cpu %.2f); busy %.2f ms (cpu %.2f); touch %d MiB in %.2f ms, peak RSS %.1f MiB",
				rt, first.resp.Cold, sl.reply.ExecMs, sl.reply.CPUMs, bz.reply.ExecMs, bz.reply.CPUMs,
				touchMB, tm.reply.ExecMs, tm.reply.MaxRSSMB)

			_, err := invoke(t, c, name, Behavior{Chain: []string{"no-such-function"}, Server: srv.URL})
			ce, ok := errors.AsType[*client.Error](err)
			if !ok || ce.Status != http.StatusBadGateway ||
				!strings.Contains(ce.Body.Message, "chain call to no-such-function failed") ||
				!strings.Contains(ce.Body.Message, `function "no-such-function" not found`) {
				t.Errorf("chain to an unknown function: got %v, want a function error naming the missing function", err)
			}
			_, err = invoke(t, c, name, Behavior{Chain: []string{"syn-other"}})
			if err == nil || !strings.Contains(err.Error(), "no server URL") {
				t.Errorf("chain without a server: got %v, want an error saying the server URL is missing", err)
			}
		})
	}
}

// checkBootstrapSize checks the real Go function (the baton binary) fits a
// deploy request with room to spare.
func checkBootstrapSize(t *testing.T) {
	z, _, err := Code(function.RuntimeProvided)
	if err != nil {
		t.Fatal(err)
	}
	if encoded := (len(z) + 2) / 3 * 4; encoded > 80<<20 {
		t.Errorf("bootstrap archive is %d bytes, %d once base64-encoded: too close to the 100 MiB deploy limit", len(z), encoded)
	}
	t.Logf("bootstrap archive of the baton binary: %.1f MiB", float64(len(z))/(1<<20))
}

func TestChain(t *testing.T) {
	for _, rt := range allRuntimes {
		requireRuntime(t, rt)
	}
	srv := harness.Start(t, harness.Options{})
	useBatonBinary(t)
	chain := []string{"chain-py", "chain-node", "chain-go"}
	for i, rt := range allRuntimes {
		if err := Deploy(harness.Context(t), srv.Client, chain[i], function.Spec{Runtime: rt}); err != nil {
			t.Fatal(err)
		}
	}
	// Every hop of a chain runs the same event, so each sleeps.
	const sleepMs = 10
	for _, round := range []struct {
		chain    []string
		wantCold bool // of the downstream hops
	}{
		{chain, true}, // first calls start every instance
		{chain, false},
		{[]string{"chain-go", "chain-node", "chain-py"}, false}, // Go calling, Python last
	} {
		ev := Behavior{SleepMs: sleepMs, Chain: round.chain[1:], Server: srv.URL}
		inv := mustInvoke(t, srv.Client, round.chain[0], ev)
		checkHops(t, round.chain, inv.reply, sleepMs, round.wantCold)
	}
}

func checkHops(t *testing.T, chain []string, r Reply, minMs float64, wantCold bool) {
	t.Helper()
	hops := r.Hops
	t.Logf("%v: %+v", chain, hops)
	if len(hops) != len(chain) {
		t.Fatalf("%v: got %d hops %+v, want %d", chain, len(hops), hops, len(chain))
	}
	if hops[0].ExecMs != r.ExecMs {
		t.Errorf("%v: first hop execMs %.2f differs from the reply's %.2f", chain, hops[0].ExecMs, r.ExecMs)
	}
	if hops[0].Cold {
		t.Errorf("%v: the first hop's cold flag is the client's to set", chain)
	}
	for i, h := range hops {
		if h.Function != chain[i] {
			t.Errorf("%v: hop %d is %q, want %q", chain, i, h.Function, chain[i])
		}
		if h.ExecMs < minMs {
			t.Errorf("%v: hop %d execMs %.2f is below its %.0f ms sleep", chain, i, h.ExecMs, minMs)
		}
		if i > 0 && h.Cold != wantCold {
			t.Errorf("%v: hop %d cold = %v, want %v", chain, i, h.Cold, wantCold)
		}
		if i == len(hops)-1 {
			if h.CallMs != 0 {
				t.Errorf("%v: last hop callMs = %.2f, want 0", chain, h.CallMs)
			}
			continue
		}
		next := hops[i+1]
		// Waiting on the next hop includes its whole execution, and a hop's
		// own execution includes the wait.
		if h.CallMs <= 0 || h.CallMs < next.ExecMs || h.ExecMs < h.CallMs || h.ExecMs < next.ExecMs {
			t.Errorf("%v: hop %d %+v is inconsistent with hop %d %+v", chain, i, h, i+1, next)
		}
	}
}

// fakeExecutable stands in for the baton binary, which is slow to deflate
// under the race detector; it returns the content Code should archive.
func fakeExecutable(t *testing.T) []byte {
	content := bytes.Repeat([]byte("\x7fELF not really a binary\n"), 1000)
	path := filepath.Join(t.TempDir(), "baton")
	if err := os.WriteFile(path, content, 0o755); err != nil {
		t.Fatal(err)
	}
	old := executable
	executable = func() (string, error) { return path, nil }
	t.Cleanup(func() { executable = old })
	return content
}

func TestCode(t *testing.T) {
	for _, tc := range []struct {
		runtime, handler, file string
		perm                   os.FileMode
		content                []byte
	}{
		{function.RuntimePython, "synthetic.handler", "synthetic.py", 0o644, pythonSource},
		{function.RuntimeNode, "synthetic.handler", "synthetic.js", 0o644, nodeSource},
		{function.RuntimeProvided, "bootstrap", "bootstrap", 0o755, fakeExecutable(t)},
	} {
		z, handler, err := Code(tc.runtime)
		if err != nil {
			t.Fatalf("Code(%q): %v", tc.runtime, err)
		}
		// Reproducible archives keep the code digest, so redeploying an
		// unchanged function does not make a new version; edits to one
		// returned archive must not leak into the next.
		z2, _, err := Code(tc.runtime)
		if err != nil || !bytes.Equal(z, z2) {
			t.Errorf("%s: a second Code call gave a different archive (err %v)", tc.runtime, err)
		}
		z2[0] ^= 0xff
		if z3, _, _ := Code(tc.runtime); !bytes.Equal(z, z3) {
			t.Errorf("%s: editing a returned archive changed the next one", tc.runtime)
		}
		if handler != tc.handler {
			t.Errorf("%s: handler %q, want %q", tc.runtime, handler, tc.handler)
		}
		spec, err := function.Spec{Runtime: tc.runtime, Handler: handler}.Normalize()
		if err != nil || spec.Handler != handler {
			t.Errorf("%s: the server would refuse the handler: %v", tc.runtime, err)
		}
		if _, err := archive.Validate(bytes.NewReader(z), int64(len(z)), archive.Limits{}); err != nil {
			t.Errorf("%s: the server would refuse the archive: %v", tc.runtime, err)
		}
		zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
		if err != nil {
			t.Fatal(err)
		}
		if len(zr.File) != 1 || zr.File[0].Name != tc.file || zr.File[0].Mode() != tc.perm {
			t.Fatalf("%s: archive holds %v, want just %s (%v)", tc.runtime, zr.File, tc.file, tc.perm)
		}
		f, err := zr.File[0].Open()
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(f)
		f.Close()
		if err != nil || !bytes.Equal(got, tc.content) {
			t.Errorf("%s: archived content differs from the source (err %v)", tc.runtime, err)
		}
	}
	if _, _, err := Code("ruby"); err == nil || !strings.Contains(err.Error(), `unknown runtime "ruby"`) {
		t.Errorf("Code(ruby) = %v, want an unknown-runtime error", err)
	}
	if err := Deploy(context.Background(), nil, "x", function.Spec{}); err == nil {
		t.Error("Deploy without a runtime succeeded")
	}
}

// TestGoHandle runs the Go implementation in-process against a stand-in
// for Baton's invoke API, so hop assembly is checked without a server.
func TestGoHandle(t *testing.T) {
	var got Behavior
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/functions/leaf/invoke":
			if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
				t.Errorf("downstream event: %v", err)
			}
			w.Header().Set("Baton-Cold-Start", "true")
			_ = json.NewEncoder(w).Encode(Reply{ExecMs: 3, Runtime: "nodejs"})
		default:
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"code":"function_not_found","message":"function \"gone\" not found"}`)
		}
	}))
	defer api.Close()
	ctx := context.Background()

	r, err := handle(ctx, Behavior{BusyMs: 20, TouchMB: 8, SleepMs: 5, ResponseBytes: 10, Chain: []string{"leaf"}, Server: api.URL, Filler: "pad"})
	if err != nil {
		t.Fatal(err)
	}
	if r.ExecMs < 25 || r.CPUMs < 10 || r.Body != strings.Repeat("x", 10) || r.Runtime != function.RuntimeProvided {
		t.Errorf("reply %+v", r)
	}
	if len(r.Hops) != 2 || r.Hops[0].ExecMs != r.ExecMs || r.Hops[0].CallMs <= 0 ||
		r.Hops[1] != (Hop{Function: "leaf", ExecMs: 3, Cold: true}) {
		t.Errorf("hops %+v", r.Hops)
	}
	if len(got.Chain) != 0 || got.BusyMs != 20 || got.Server != api.URL || got.Filler != "pad" {
		t.Errorf("downstream got %+v, want the same event without the called function", got)
	}

	_, err = handle(ctx, Behavior{Chain: []string{"gone", "leaf"}, Server: api.URL})
	if err == nil || !strings.Contains(err.Error(), `chain call to gone failed: function "gone" not found (HTTP 404 function_not_found)`) {
		t.Errorf("chain to a missing function: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, err := handle(ctx, Behavior{SleepMs: 5000}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("sleep past the deadline: %v", err)
	}
}
