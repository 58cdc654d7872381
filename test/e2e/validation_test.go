package e2e

import (
	"archive/zip"
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	apiv1 "github.com/baton-faas/baton/api/v1"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/test/harness"
)

// zipOf builds a zip with the given entries; a valid app.py is added
// unless present.
func zipOf(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	if _, ok := files["app.py"]; !ok {
		files["app.py"] = "def handler(event, context):\n    return event\n"
	}
	for name, content := range files {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// deployBody is a PUT /v1/functions/{name} body as a generic object, so
// tests can send fields the Go types cannot express.
func deployBody(t *testing.T, spec function.Spec, code []byte) map[string]any {
	t.Helper()
	b, err := json.Marshal(client.DeployRequest{FunctionSpec: apiv1.FunctionSpec(spec), Code: code})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func put(t *testing.T, srv *harness.Server, name string, body []byte) httpResult {
	t.Helper()
	return do(t, http.MethodPut, srv.URL+"/v1/functions/"+url.PathEscape(name), body, map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + srv.Token})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBadDeploys sends invalid deploy requests: each is refused with 400
// and a JSON error naming the problem, and none disturbs the deployed
// version of the function.
func TestBadDeploys(t *testing.T) {
	requirePython(t)
	t.Parallel()
	srv := startServer(t)
	const name = "stable"
	good := deploy(t, srv, name, pySpec("whoami"), pyDir)
	var before identity
	mustInvoke(t, srv, name, nil, &before)
	beforeProc := before.host(t)
	goodCode := zipDir(t, pyDir)

	withSpec := func(f func(*function.Spec)) []byte {
		s := pySpec("whoami")
		f(&s)
		return mustJSON(t, deployBody(t, s, goodCode))
	}
	withField := func(k string, v any) []byte {
		m := deployBody(t, pySpec("whoami"), goodCode)
		m[k] = v
		return mustJSON(t, m)
	}
	withCode := func(code []byte) []byte { return mustJSON(t, deployBody(t, pySpec("whoami"), code)) }

	cases := []struct {
		name     string
		body     []byte
		wantCode string
		wantMsg  []string
	}{
		{"unknown runtime", withSpec(func(s *function.Spec) { s.Runtime = "ruby3.2" }), "invalid_spec", []string{`unknown runtime "ruby3.2"`, "python3"}},
		{"missing runtime", withSpec(func(s *function.Spec) { s.Runtime = "" }), "invalid_spec", []string{"runtime is required"}},
		{"missing handler", withSpec(func(s *function.Spec) { s.Handler = "" }), "invalid_spec", []string{"handler is required"}},
		{"handler without function", withSpec(func(s *function.Spec) { s.Handler = "app" }), "invalid_spec", []string{`handler "app"`}},
		{"handler path traversal", withSpec(func(s *function.Spec) { s.Handler = "../etc.passwd" }), "invalid_spec", []string{"handler"}},
		{"memory too small", withSpec(func(s *function.Spec) { s.MemoryMB = 8 }), "invalid_spec", []string{"memoryMB 8 is out of range"}},
		{"memory too large", withSpec(func(s *function.Spec) { s.MemoryMB = 1 << 20 }), "invalid_spec", []string{"memoryMB", "out of range"}},
		{"timeout too large", withSpec(func(s *function.Spec) { s.TimeoutSeconds = 901 }), "invalid_spec", []string{"timeoutSeconds 901"}},
		{"negative maxScale", withSpec(func(s *function.Spec) { s.MaxScale = -1 }), "invalid_spec", []string{"maxScale -1"}},
		{"minScale above maxScale", withSpec(func(s *function.Spec) { s.MinScale, s.MaxScale = 5, 2 }), "invalid_spec", []string{"minScale 5"}},
		{"python concurrency", withSpec(func(s *function.Spec) { s.Concurrency = 4 }), "invalid_spec", []string{"concurrency 4", "nodejs"}},
		{"reserved env", withSpec(func(s *function.Spec) { s.Env = map[string]string{"_HANDLER": "x.y"} }), "invalid_spec", []string{`"_HANDLER" is reserved`}},
		{"bad env name", withSpec(func(s *function.Spec) { s.Env = map[string]string{"1BAD": "x"} }), "invalid_spec", []string{`"1BAD"`}},
		{"malformed JSON", []byte(`{"runtime": "python3", "handler": `), "malformed_json", []string{"not valid JSON"}},
		{"not an object", []byte(`["python3"]`), "malformed_json", []string{"not valid JSON"}},
		{"trailing data", append(withSpec(func(*function.Spec) {}), []byte(` {"x":1}`)...), "malformed_json", []string{"trailing data"}},
		{"unknown field", withField("memory", 256), "malformed_json", []string{`unknown field "memory"`}},
		{"code not base64", withField("code", "%%% not base64 %%%"), "malformed_json", []string{"not valid JSON"}},
		{"code missing", withCode(nil), "invalid_spec", []string{"code is required"}},
		{"code not a zip", withCode([]byte("this is not a zip archive")), "invalid_spec", []string{"not a valid zip archive"}},
		{"zip with ../ entry", withCode(zipOf(t, map[string]string{"../evil.py": "x = 1\n"})), "invalid_spec", []string{"../evil.py"}},
		{"zip with nested ../ entry", withCode(zipOf(t, map[string]string{"lib/../../evil.py": "x = 1\n"})), "invalid_spec", []string{"evil.py"}},
		{"zip with absolute path", withCode(zipOf(t, map[string]string{"/abs/evil.py": "x = 1\n"})), "invalid_spec", []string{"/abs/evil.py"}},
	}
	for _, tc := range cases {
		res := put(t, srv, name, tc.body)
		if res.Status != http.StatusBadRequest {
			t.Errorf("%s: HTTP %d, want 400: %s", tc.name, res.Status, res.Body)
			continue
		}
		eb := errorBody(t, res.Status, res.Body)
		if eb.Code != tc.wantCode {
			t.Errorf("%s: code %q, want %q (%s)", tc.name, eb.Code, tc.wantCode, eb.Message)
		}
		for _, want := range tc.wantMsg {
			if !strings.Contains(eb.Message, want) {
				t.Errorf("%s: message %q does not mention %q", tc.name, eb.Message, want)
			}
		}
	}

	// Bad names, through the Go client (which escapes them into the path).
	for _, bad := range []string{"Hello", "UPPER", strings.Repeat("a", 65), "-leading", "trailing-", "under_score", "dot.ted", "../x", "a/b", "sp ace"} {
		_, err := srv.Client.Deploy(ctx(t), bad, client.DeployRequest{FunctionSpec: apiv1.FunctionSpec(pySpec("whoami")), Code: goodCode})
		var apiErr *client.Error
		if !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest || apiErr.Body.Code != "invalid_name" ||
			!strings.Contains(apiErr.Body.Message, "must be 1-64 characters") {
			t.Errorf("deploy as %q: %v, want 400 invalid_name", bad, err)
		}
	}
	if _, err := srv.Client.Deploy(ctx(t), strings.Repeat("a", 64), client.DeployRequest{FunctionSpec: apiv1.FunctionSpec(pySpec("whoami")), Code: goodCode}); err != nil {
		t.Errorf("a 64-character name should be valid: %v", err)
	}

	// None of it touched the deployed function.
	after := status(t, srv, name)
	if after.Version != good.Version || after.CodeDigest != good.CodeDigest || after.Spec.Handler != "app.whoami" {
		t.Errorf("function changed by failed deploys: %+v", after)
	}
	var again identity
	if r := mustInvoke(t, srv, name, nil, &again); r.Cold || again.host(t) != beforeProc || r.Version != 1 {
		t.Errorf("after failed deploys: cold %v version %d pid %d (was %d)", r.Cold, r.Version, again.Pid, before.Pid)
	}
	fns, err := srv.Client.List(ctx(t))
	if err != nil || len(fns) != 2 {
		t.Errorf("functions after bad deploys: %d (%v), want 2", len(fns), err)
	}
}

// TestBadRequests covers unknown functions, invalid events, unknown routes
// and invalid record queries.
func TestBadRequests(t *testing.T) {
	requirePython(t)
	t.Parallel()
	srv := startServer(t)
	deploy(t, srv, "echo", pySpec("echo"), pyDir)

	check := func(what string, res httpResult, status int, code string) {
		t.Helper()
		if res.Status != status {
			t.Errorf("%s: HTTP %d, want %d: %s", what, res.Status, status, res.Body)
			return
		}
		if eb := errorBody(t, res.Status, res.Body); eb.Code != code {
			t.Errorf("%s: code %q, want %q", what, eb.Code, code)
		}
		if ct := res.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: Content-Type %q", what, ct)
		}
	}
	u := srv.URL
	check("invoke unknown", do(t, http.MethodPost, u+"/v1/functions/ghost/invoke", []byte(`{}`), nil), 404, "function_not_found")
	check("get unknown", do(t, http.MethodGet, u+"/v1/functions/ghost", nil, srv.AuthHeader()), 404, "function_not_found")
	check("delete unknown", do(t, http.MethodDelete, u+"/v1/functions/ghost", nil, srv.AuthHeader()), 404, "function_not_found")
	check("invoke bad name", do(t, http.MethodPost, u+"/v1/functions/Ghost/invoke", []byte(`{}`), nil), 400, "invalid_name")
	check("invalid JSON event", do(t, http.MethodPost, u+"/v1/functions/echo/invoke", []byte(`{"unterminated": `), nil), 400, "malformed_json")
	check("non-JSON event", do(t, http.MethodPost, u+"/v1/functions/echo/invoke", []byte(`hello`), nil), 400, "malformed_json")
	check("unknown record", do(t, http.MethodGet, u+"/v1/invocations/nope", nil, srv.AuthHeader()), 404, "invocation_not_found")
	check("bad limit", do(t, http.MethodGet, u+"/v1/invocations?limit=0", nil, srv.AuthHeader()), 400, "bad_limit")
	check("unknown route", do(t, http.MethodGet, u+"/v2/whatever", nil, srv.AuthHeader()), 404, "not_found")

	var apiErr *client.Error
	if _, err := srv.Client.Invoke(ctx(t), "ghost", nil); !errors.As(err, &apiErr) || !strings.Contains(apiErr.Body.Message, `"ghost" not found`) {
		t.Errorf("client invoke of unknown function: %v", err)
	}

	// Any JSON value is an event, and an empty body is {}.
	for _, ev := range []string{`"a string"`, `42`, `null`, `[1,2]`, `true`} {
		var got, want any
		r := mustInvoke(t, srv, "echo", ev, &got)
		_ = json.Unmarshal([]byte(ev), &want)
		if !jsonEqual(got, want) {
			t.Errorf("echo of %s = %s", ev, r.Body)
		}
	}
	if r := mustInvoke(t, srv, "echo", nil, nil); strings.TrimSpace(string(r.Body)) != "{}" {
		t.Errorf("empty event echoed as %s, want {}", r.Body)
	}
	// No record for requests refused before they ran.
	if recs := recordsOf(t, srv, "echo"); len(recs) != 6 {
		t.Errorf("%d records of echo, want 6 (refused requests make none)", len(recs))
	}
}

// TestUnknownFunctionBodyNotRead calls a function that does not exist
// with a 5 MiB body of which only the first 64 KiB are sent: the 404 must
// come anyway, since the body is not needed to answer.
//
// Regression: the whole body was read (and held) before the function was
// looked up.
func TestUnknownFunctionBodyNotRead(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const size = 5 << 20
	head := fmt.Sprintf("POST /v1/functions/ghost/invoke HTTP/1.1\r\nHost: baton\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", size)
	if _, err := conn.Write(append([]byte(head), bytes.Repeat([]byte(" "), 64<<10)...)); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer while most of the %d-byte body is unsent (the server waits for a body it does not need): %v", size, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if eb := errorBody(t, resp.StatusCode, body); resp.StatusCode != http.StatusNotFound || eb.Code != "function_not_found" {
		t.Errorf("HTTP %d: %s, want 404 function_not_found", resp.StatusCode, body)
	}
}

// TestPayloadLimit starts a server with a 1 MiB payload limit.
func TestPayloadLimit(t *testing.T) {
	requirePython(t)
	t.Parallel()
	const limit = 1 << 20
	srv := startServer(t, "--max-payload", "1048576")
	deploy(t, srv, "echo", pySpec("echo"), pyDir)

	event := func(n int) []byte { return []byte(`{"pad":"` + strings.Repeat("x", n) + `"}`) }
	small := event(limit - 100)
	var echoed map[string]string
	mustInvoke(t, srv, "echo", small, &echoed)
	if len(echoed["pad"]) != limit-100 {
		t.Errorf("echo of a %d-byte event lost data: pad has %d bytes", len(small), len(echoed["pad"]))
	}
	big := event(limit + 512<<10)
	res := do(t, http.MethodPost, srv.URL+"/v1/functions/echo/invoke", big, nil)
	if res.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("%d-byte event: HTTP %d, want 413: %.300s", len(big), res.Status, res.Body)
	}
	if eb := errorBody(t, res.Status, res.Body); eb.Code != "payload_too_large" || !strings.Contains(eb.Message, "1048576") {
		t.Errorf("413 body: %s", res.Body)
	}
	res = do(t, http.MethodPost, srv.URL+"/fn/echo/upload", big, map[string]string{"Content-Type": "application/octet-stream"})
	if res.Status != http.StatusRequestEntityTooLarge {
		t.Errorf("function URL with a %d-byte body: HTTP %d, want 413", len(big), res.Status)
	}
	// The limit holds for responses too.
	deploy(t, srv, "big", pySpec("big"), pyDir)
	resp, _ := invoke(t, srv, "big", map[string]int{"n": limit + 1000})
	if resp.Status != http.StatusBadGateway {
		t.Errorf("response over the limit: HTTP %d, want 502: %.300s", resp.Status, resp.Body)
	} else if eb := errorBody(t, resp.Status, resp.Body); !strings.Contains(eb.Message, "larger than the 1048576 byte limit") {
		t.Errorf("response over the limit: %s", resp.Body)
	}
	// The function works afterwards (the instance that overflowed is
	// replaced: runtime clients treat the refused post as fatal).
	if r := mustInvoke(t, srv, "big", map[string]int{"n": 10}, nil); string(r.Body) != `"xxxxxxxxxx"` {
		t.Errorf("after a too-large response: body %s", r.Body)
	}
	mustInvoke(t, srv, "echo", `{"after":"413"}`, nil)
}

// TestQueueFull fills a one-instance function's queue: excess requests get
// 429 with Retry-After, every request gets an answer, and the refusals are
// counted in baton_rejected_total.
func TestQueueFull(t *testing.T) {
	requirePython(t)
	t.Parallel()
	srv := startServer(t, "--queue-size", "1")
	spec := pySpec("sleep")
	spec.MaxScale = 1
	deploy(t, srv, "narrow", spec, pyDir)
	mustInvoke(t, srv, "narrow", `{"ms": 0}`, nil) // warm: one instance, busy from now on

	const n = 6
	type outcome struct {
		status     int
		retryAfter string
		code       string
		err        error
	}
	outs := make([]outcome, n)
	c := ctx(t)
	began := time.Now()
	parallel(n, func(i int) {
		req, err := http.NewRequestWithContext(c, http.MethodPost, srv.URL+"/v1/functions/narrow/invoke", strings.NewReader(`{"ms": 2000}`))
		if err != nil {
			outs[i].err = err
			return
		}
		resp, err := rawClient.Do(req)
		if err != nil {
			outs[i].err = err
			return
		}
		defer resp.Body.Close()
		var eb struct {
			Code string `json:"code"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&eb)
		outs[i] = outcome{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), code: eb.Code}
	})
	t.Logf("6 requests answered in %s", time.Since(began))
	ok, rejected := 0, 0
	for i, o := range outs {
		switch {
		case o.err != nil:
			t.Errorf("request %d: %v (lost)", i, o.err)
		case o.status == http.StatusOK:
			ok++
		case o.status == http.StatusTooManyRequests:
			rejected++
			if o.retryAfter == "" || o.code != "queue_full" {
				t.Errorf("429 without Retry-After or with code %q: %+v", o.code, o)
			}
		default:
			t.Errorf("request %d: HTTP %d (%s), want 200 or 429", i, o.status, o.code)
		}
	}
	// One runs, one waits, four are refused.
	if ok < 1 || ok > 2 || ok+rejected != n {
		t.Errorf("%d succeeded and %d were refused, want 1..2 and the rest 429", ok, rejected)
	}
	if got := metrics(t, srv)[`baton_rejected_total{function="narrow",reason="queue-full"}`]; got != float64(rejected) {
		t.Errorf("baton_rejected_total for queue-full = %v, want %d", got, rejected)
	}
	recs := recordsOf(t, srv, "narrow")
	if len(recs) != ok+1 {
		t.Errorf("%d records, want %d (one per executed invocation)", len(recs), ok+1)
	}
}
