package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/test/harness"
)

// checkInvokeHeaders checks Baton's response headers of a successful call.
func checkInvokeHeaders(t *testing.T, resp client.InvokeResponse, wantCold bool, wantVersion int) {
	t.Helper()
	h := resp.Header
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(h.Get("Baton-Invocation-Id")) {
		t.Errorf("Baton-Invocation-Id %q is not a UUID", h.Get("Baton-Invocation-Id"))
	}
	if got := h.Get("Baton-Cold-Start"); got != strconv.FormatBool(wantCold) {
		t.Errorf("Baton-Cold-Start = %q, want %v", got, wantCold)
	}
	if got := h.Get("Baton-Function-Version"); got != strconv.Itoa(wantVersion) {
		t.Errorf("Baton-Function-Version = %q, want %d", got, wantVersion)
	}
	if !strings.HasPrefix(h.Get("Baton-Instance-Id"), "i-") {
		t.Errorf("Baton-Instance-Id %q does not name an instance", h.Get("Baton-Instance-Id"))
	}
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	st := serverTiming(t, h)
	for k, v := range st {
		if v < 0 {
			t.Errorf("Server-Timing %s = %v < 0", k, v)
		}
	}
	if wantCold && st["init"] <= 0 {
		t.Errorf("cold start with Server-Timing init %v, want > 0 (%s)", st["init"], h.Get("Server-Timing"))
	}
	if !wantCold && st["init"] != 0 {
		t.Errorf("warm call with Server-Timing init %v, want 0 (%s)", st["init"], h.Get("Server-Timing"))
	}
	if st["exec"] <= 0 {
		t.Errorf("Server-Timing exec %v, want > 0", st["exec"])
	}
}

// TestInvokeRuntimes deploys one function per runtime and checks results
// and headers of a cold and a warm call.
func TestInvokeRuntimes(t *testing.T) {
	requireLinux(t)
	t.Parallel()
	srv := startServer(t)

	type runtimeCase struct {
		name  string
		need  func(*testing.T)
		spec  function.Spec
		dir   func(*testing.T) string
		event map[string]any
		check func(t *testing.T, body []byte, cold bool)
	}
	cases := []runtimeCase{
		{
			name: "python", need: requirePython, spec: pySpec("echo"),
			dir:   func(*testing.T) string { return pyDir },
			event: map[string]any{"hello": "python", "n": 1, "nested": map[string]any{"list": []any{1, "two", nil}}},
			check: func(t *testing.T, body []byte, _ bool) {
				var got map[string]any
				if err := json.Unmarshal(body, &got); err != nil {
					t.Fatal(err)
				}
				want := map[string]any{"hello": "python", "n": float64(1), "nested": map[string]any{"list": []any{float64(1), "two", nil}}}
				if !jsonEqual(got, want) {
					t.Errorf("python echo = %s", body)
				}
			},
		},
		{
			name: "node", need: requireNode, spec: function.Spec{Runtime: function.RuntimeNode, Handler: "index.echo"},
			dir:   func(*testing.T) string { return nodeDir },
			event: map[string]any{"hello": "node"},
			check: func(t *testing.T, body []byte, _ bool) {
				var got struct {
					Event     map[string]any `json:"event"`
					Version   string         `json:"version"`
					RequestID string         `json:"requestId"`
				}
				if err := json.Unmarshal(body, &got); err != nil {
					t.Fatal(err)
				}
				if got.Event["hello"] != "node" || got.Version != "1" || got.RequestID == "" {
					t.Errorf("node echo = %s", body)
				}
			},
		},
		{
			name: "go", need: requireLinux, spec: function.Spec{Runtime: function.RuntimeProvided},
			dir:   func(t *testing.T) string { return harness.BuildGo(t, helloGoPkg) },
			event: map[string]any{"name": "Gopher"},
			check: func(t *testing.T, body []byte, _ bool) {
				var got struct {
					Message   string `json:"message"`
					RequestID string `json:"requestId"`
					Pid       int    `json:"pid"`
				}
				if err := json.Unmarshal(body, &got); err != nil {
					t.Fatal(err)
				}
				if got.Message != "Hello, Gopher!" || got.RequestID == "" || got.Pid == 0 {
					t.Errorf("hello-go = %s", body)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.need(t)
			t.Parallel()
			name := "rt-" + tc.name
			v := deploy(t, srv, name, tc.spec, tc.dir(t))
			if v.Version != 1 || !v.Created || !v.NewVersion || v.Name != name || v.Spec.Runtime != tc.spec.Runtime {
				t.Fatalf("deploy answer %+v", v)
			}
			// Defaults are filled in.
			if v.Spec.MemoryMB != function.DefaultMemoryMB || v.Spec.TimeoutSeconds != function.DefaultTimeoutSeconds ||
				v.Spec.MaxScale != function.DefaultMaxScale || !strings.HasPrefix(v.CodeDigest, "sha256:") {
				t.Errorf("deployed spec lacks defaults: %+v", v)
			}
			var ids []string
			for i, wantCold := range []bool{true, false} {
				resp := mustInvoke(t, srv, name, tc.event, nil)
				checkInvokeHeaders(t, resp, wantCold, 1)
				if resp.Cold != wantCold || resp.Version != 1 {
					t.Errorf("call %d: client saw cold %v version %d", i, resp.Cold, resp.Version)
				}
				tc.check(t, resp.Body, wantCold)
				ids = append(ids, resp.ID)
				if resp.Header.Get("Baton-Instance-Id") == "" {
					t.Fatal("no instance id")
				}
			}
			if ids[0] == ids[1] {
				t.Errorf("two calls got the same invocation id %s", ids[0])
			}
		})
	}
	t.Run("go-error", func(t *testing.T) {
		t.Parallel()
		name := "rt-go-error"
		deploy(t, srv, name, function.Spec{Runtime: function.RuntimeProvided}, harness.BuildGo(t, goEchoPkg))
		var ok struct {
			Data    map[string]any `json:"data"`
			Version string         `json:"version"`
		}
		mustInvoke(t, srv, name, map[string]any{"data": map[string]any{"k": "v"}}, &ok)
		if ok.Data["k"] != "v" || ok.Version != "1" {
			t.Errorf("goecho = %+v", ok)
		}
		resp, err := invoke(t, srv, name, map[string]any{"fail": "go says no"})
		if resp.Status != http.StatusBadGateway || err == nil {
			t.Fatalf("failing Go function: status %d, body %s", resp.Status, resp.Body)
		}
		eb := errorBody(t, resp.Status, resp.Body)
		if eb.Code != "function_error" || eb.ErrorMessage != "go says no" || eb.ErrorType == "" || !strings.Contains(eb.Message, "go says no") {
			t.Errorf("Go function error body: %s", resp.Body)
		}
		if resp.Header.Get("Baton-Function-Error") == "" {
			t.Errorf("no Baton-Function-Error header on a function error")
		}
		// The instance survives a returned error.
		if r := mustInvoke(t, srv, name, map[string]any{}, nil); r.Cold {
			t.Errorf("call after a function error was cold: the instance should have survived")
		}
	})
}

// jsonEqual compares two decoded JSON values.
func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// TestCLI drives the server with the baton command line.
func TestCLI(t *testing.T) {
	requirePython(t)
	t.Parallel()
	srv := startServer(t)
	code, err := filepath.Abs(pyDir)
	if err != nil {
		t.Fatal(err)
	}
	s := "--server=" + srv.URL

	out, errOut, rc := cli(t, srv, "deploy", "clifn", s, "--runtime", "python3", "--handler", "app.echo", "--code", code, "--env", "APP_VERSION=cli")
	if rc != 0 || !strings.Contains(out, "created function clifn version 1 (python3)") {
		t.Fatalf("deploy: exit %d\nstdout: %s\nstderr: %s", rc, out, errOut)
	}
	out, errOut, rc = cli(t, srv, "deploy", "clifn", s, "--runtime", "python3", "--handler", "app.echo", "--code", code, "--env", "APP_VERSION=cli", "--max-scale", "3")
	if rc != 0 || !strings.Contains(out, "unchanged at version 1") {
		t.Fatalf("deploy of a scaling change: exit %d\nstdout: %s\nstderr: %s", rc, out, errOut)
	}

	out, errOut, rc = cli(t, srv, "invoke", "clifn", s, "--data", `{"from":"flag","n":7}`)
	if rc != 0 {
		t.Fatalf("invoke --data: exit %d: %s", rc, errOut)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil || got["from"] != "flag" || got["n"] != float64(7) {
		t.Fatalf("invoke --data printed %q (%v)", out, err)
	}

	eventFile := filepath.Join(t.TempDir(), "event.json")
	if err := os.WriteFile(eventFile, []byte(`{"from": "file", "list": [1, 2, 3]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, rc = cli(t, srv, "invoke", "clifn", s, "--data", "@"+eventFile, "-v")
	if rc != 0 {
		t.Fatalf("invoke --data @file: exit %d: %s", rc, errOut)
	}
	got = nil
	if err := json.Unmarshal([]byte(out), &got); err != nil || got["from"] != "file" {
		t.Fatalf("invoke --data @file printed %q (%v)", out, err)
	}
	if !strings.Contains(errOut, "status 200") || !strings.Contains(errOut, "Server-Timing: wait;dur=") {
		t.Errorf("invoke -v stderr lacks status and timings: %q", errOut)
	}

	out, errOut, rc = cli(t, srv, "ls", s)
	if rc != 0 || !regexp.MustCompile(`(?m)^NAME\s+VERSION`).MatchString(out) || !regexp.MustCompile(`(?m)^clifn\s+1\s+python3\s+app\.echo\s+1\s+0\s`).MatchString(out) {
		t.Fatalf("ls: exit %d\nstdout:\n%s\nstderr: %s", rc, out, errOut)
	}

	out, errOut, rc = cli(t, srv, "get", "clifn", s)
	if rc != 0 {
		t.Fatalf("get: exit %d: %s", rc, errOut)
	}
	if warned := strings.Contains(errOut, "SANDBOX ISOLATION IS OFF"); warned == containerSandboxes(t, srv) {
		t.Errorf("get: isolation warning on stderr %v, container sandboxes %v: %q", warned, !warned, errOut)
	}
	var view struct {
		Name    string        `json:"name"`
		Version int           `json:"version"`
		Spec    function.Spec `json:"spec"`
	}
	if err := json.Unmarshal([]byte(out), &view); err != nil || view.Name != "clifn" || view.Version != 1 ||
		view.Spec.Env["APP_VERSION"] != "cli" || view.Spec.MaxScale != 3 {
		t.Fatalf("get printed %s (%v)", out, err)
	}

	out, errOut, rc = cli(t, srv, "logs", "clifn", s)
	if rc != 0 {
		t.Fatalf("logs: exit %d: %s", rc, errOut)
	}
	if n := strings.Count(out, " success "); n != 2 {
		t.Errorf("logs shows %d successful invocations, want 2:\n%s", n, out)
	}
	for _, rec := range recordsOf(t, srv, "clifn") {
		if !strings.Contains(out, rec.ID) {
			t.Errorf("logs lacks invocation %s:\n%s", rec.ID, out)
		}
	}

	// Failures: non-zero exit and a message that says what is wrong.
	_, errOut, rc = cli(t, srv, "invoke", "no-such-fn", s)
	if rc == 0 || !strings.Contains(errOut, `"no-such-fn" not found`) || !strings.Contains(errOut, "404") {
		t.Errorf("invoke of an unknown function: exit %d, stderr %q", rc, errOut)
	}
	for _, cmd := range [][]string{{"get", "no-such-fn"}, {"rm", "no-such-fn"}, {"logs", "no-such-fn"}} {
		_, errOut, rc = cli(t, srv, append(cmd, s)...)
		if rc == 0 || !strings.Contains(errOut, "no-such-fn") || !strings.Contains(errOut, "404") {
			t.Errorf("%v: exit %d, stderr %q", cmd, rc, errOut)
		}
	}
	missing := filepath.Join(t.TempDir(), "missing-code")
	_, errOut, rc = cli(t, srv, "deploy", "other", s, "--runtime", "python3", "--handler", "app.echo", "--code", missing)
	if rc == 0 || !strings.Contains(errOut, "--code") || !strings.Contains(errOut, "no such file or directory") {
		t.Errorf("deploy with a bad --code path: exit %d, stderr %q", rc, errOut)
	}
	_, errOut, rc = cli(t, srv, "invoke", "clifn", s, "--data", "{not json")
	if rc == 0 || !strings.Contains(errOut, "not valid JSON") {
		t.Errorf("invoke with bad --data: exit %d, stderr %q", rc, errOut)
	}
	_, errOut, rc = cli(t, nil, "invoke", "clifn", "--server=http://127.0.0.1:1")
	if rc == 0 || !strings.Contains(errOut, "cannot reach baton server") {
		t.Errorf("invoke against no server: exit %d, stderr %q", rc, errOut)
	}

	out, errOut, rc = cli(t, srv, "rm", "clifn", s)
	if rc != 0 || !strings.Contains(out, "deleted function clifn") {
		t.Fatalf("rm: exit %d\nstdout: %s\nstderr: %s", rc, out, errOut)
	}
	out, _, rc = cli(t, srv, "ls", s)
	if rc != 0 || strings.Contains(out, "clifn") {
		t.Errorf("ls after rm: exit %d\n%s", rc, out)
	}
	_, errOut, rc = cli(t, srv, "invoke", "clifn", s)
	if rc == 0 || !strings.Contains(errOut, "not found") {
		t.Errorf("invoke after rm: exit %d, stderr %q", rc, errOut)
	}
}
