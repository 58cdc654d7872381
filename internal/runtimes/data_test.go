// The data layers' modules for functions, run by the real runtime clients
// against a real Runtime API endpoint. An external test package: the
// endpoint's package depends on this one through the worker API.
package runtimes_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/cluster/clustertest"
	"github.com/baton-faas/baton/internal/datalayer"
	"github.com/baton-faas/baton/internal/node/runtimeapi"
	"github.com/baton-faas/baton/internal/runtimes"
)

// dataEndpoint serves a Runtime API endpoint whose data layers are
// layer's, bound to app.
func dataEndpoint(t *testing.T, layer *datalayer.Layer, app string) (*runtimeapi.Server, string) {
	t.Helper()
	return serveEndpoint(t, runtimeapi.Options{Data: layer.App(app)})
}

// serveEndpoint serves a Runtime API endpoint with opts on loopback until
// the test ends.
func serveEndpoint(t *testing.T, opts runtimeapi.Options) (*runtimeapi.Server, string) {
	t.Helper()
	s := runtimeapi.New(opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s, ln.Addr().String()
}

// runFunction starts a runtime client for handler (code in testdata/sub)
// on the endpoint at addr, invokes it once and returns its response.
func runFunction(t *testing.T, api *runtimeapi.Server, addr, interp, sub, handler string) json.RawMessage {
	t.Helper()
	startClient(t, interp, sub, handler, "AWS_LAMBDA_RUNTIME_API="+addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := api.Invoke(ctx, runtimeapi.Event{Payload: []byte("{}")})
	if err != nil {
		t.Fatal(err)
	}
	if res.Error != nil {
		t.Fatalf("%s failed: %s: %s %v", handler, res.Error.Type, res.Error.Message, res.Error.StackTrace)
	}
	return res.Payload
}

// startClient starts the runtime client of interp for handler (code in
// testdata/sub) with env added to this process's, and kills it when the
// test ends. Its output is returned, and logged if the test failed.
func startClient(t *testing.T, interp, sub, handler string, env ...string) *syncBuffer {
	t.Helper()
	if _, err := exec.LookPath(interp); err != nil {
		t.Skipf("%s not found in PATH; skipping a runtime test", interp)
	}
	paths, err := runtimes.Install(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs(filepath.Join("testdata", sub))
	if err != nil {
		t.Fatal(err)
	}
	args := []string{paths.Client("nodejs")}
	if interp == "python3" {
		args = []string{"-u", paths.Client("python3")}
	}
	cmd := exec.Command(interp, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(append(os.Environ(), "_HANDLER="+handler, "LAMBDA_TASK_ROOT="+root, "PYTHONDONTWRITEBYTECODE=1"), env...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", interp, out.String())
		}
	})
	return out
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestDataModules(t *testing.T) {
	ns := clustertest.Server(t)
	nc, _ := clustertest.Connect(t, ns)
	layer, err := datalayer.Open(clustertest.Context(t), nc, datalayer.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"bytes":[0,255,114,97,119],"str":"h\u00e9llo","json":{"a":[1,null,true]},"local":"here",` +
		`"localFromGlobal":null,"missing":null,"deleted":null,"badKey":[400,"InvalidKey"]}`
	for _, c := range []struct{ interp, sub, handler, app string }{
		{"python3", "python", "datafn.handler", "py"},
		{"node", "node", "datafn.handler", "js"},
	} {
		t.Run(c.interp, func(t *testing.T) {
			api, addr := dataEndpoint(t, layer, c.app)
			got := runFunction(t, api, addr, c.interp, c.sub, c.handler)
			var m map[string]any
			if err := json.Unmarshal(got, &m); err != nil {
				t.Fatalf("response %s: %v", got, err)
			}
			if c.interp == "node" {
				if m["isBuffer"] != true {
					t.Errorf("bytes did not come back as a Buffer: %s", got)
				}
				delete(m, "isBuffer")
			}
			var w map[string]any
			_ = json.Unmarshal([]byte(want), &w)
			gotJSON, _ := json.Marshal(m)
			wantJSON, _ := json.Marshal(w)
			if !bytes.Equal(gotJSON, wantJSON) {
				t.Errorf("response\n got %s\nwant %s", gotJSON, wantJSON)
			}
			// What the function put is its app's, typed as it was put.
			v, _, err := layer.Get(t.Context(), c.app, "k/json", datalayer.ScopeGlobal)
			if err != nil || v.ContentType != "application/json" {
				t.Errorf("k/json in the global layer: %q, %v", v.ContentType, err)
			}
			if v, _, err := layer.Get(t.Context(), c.app, "k/str", datalayer.ScopeAny); err == nil {
				t.Errorf("deleted k/str still there: %q", v.Data)
			}
			if v, _, _ := layer.Get(t.Context(), c.app, "k/bytes", datalayer.ScopeGlobal); !strings.HasPrefix(v.ContentType, "application/octet-stream") {
				t.Errorf("k/bytes stored as %q", v.ContentType)
			}
		})
	}
	t.Run("node-esm", func(t *testing.T) {
		api, addr := dataEndpoint(t, layer, "esm")
		if got := runFunction(t, api, addr, "node", "node", "dataesm.handler"); string(got) != `{"got":{"esm":true}}` {
			t.Errorf("ES module's response %s", got)
		}
	})
}
