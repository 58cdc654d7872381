package runtimeapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/workerapi"
)

// fakeInvoker answers from a table of functions and records what it got.
type fakeInvoker struct {
	got map[string][]byte
}

func (f *fakeInvoker) Invoke(_ context.Context, fn string, payload []byte) (InvokeResult, error) {
	f.got[fn] = payload
	switch fn {
	case "echo":
		return InvokeResult{Payload: payload}, nil
	case "raw":
		return InvokeResult{Payload: []byte{0xff, 0x00, 0x01}}, nil
	case "fails":
		return InvokeResult{Error: &workerapi.FunctionError{Type: "ValueError", Message: "bad input"}}, nil
	case "busy":
		return InvokeResult{}, fmt.Errorf("invoke busy: %w", errdefs.New(errdefs.Overloaded, "queue_full", "function queue is full"))
	}
	return InvokeResult{}, fmt.Errorf("function %q: %w", fn, errdefs.New(errdefs.NotFound, "function_not_found", "function not found"))
}

// routeAnswer is an invoke request's answer.
type routeAnswer struct {
	status int
	header http.Header
	body   []byte
}

func invokeRoute(t *testing.T, addr, method, fn string, body []byte) routeAnswer {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+invokePrefix+fn, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, fn, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return routeAnswer{status: resp.StatusCode, header: resp.Header, body: b}
}

// code decodes a platform error body and returns its code.
func (r routeAnswer) code(t *testing.T) string {
	t.Helper()
	var e platformError
	if err := json.Unmarshal(r.body, &e); err != nil || e.Code == "" || e.Message == "" {
		t.Fatalf("status %d: body %q is not a platform error {code, message}", r.status, r.body)
	}
	return e.Code
}

func TestInvokeRoute(t *testing.T) {
	inv := &fakeInvoker{got: map[string][]byte{}}
	_, addr := startServer(t, Options{Invoke: inv, MaxResponseBytes: 1 << 10})

	r := invokeRoute(t, addr, http.MethodPost, "echo", []byte(`{"n":1}`))
	if r.status != http.StatusOK || string(r.body) != `{"n":1}` || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("echo: %d %q %v", r.status, r.body, r.header)
	}
	if r.header.Get(HeaderFunctionError) != "" {
		t.Errorf("a result is marked as a function error")
	}
	// An empty body is the empty event, as on the HTTP API.
	if r := invokeRoute(t, addr, http.MethodPost, "echo", nil); r.status != http.StatusOK || string(inv.got["echo"]) != "{}" {
		t.Fatalf("empty payload: %d, callee got %q", r.status, inv.got["echo"])
	}
	if r := invokeRoute(t, addr, http.MethodPost, "raw", []byte("x")); r.status != http.StatusOK ||
		!bytes.Equal(r.body, []byte{0xff, 0x00, 0x01}) || r.header.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("raw: %d %q %v", r.status, r.body, r.header)
	}

	// The callee's own error: Lambda's error JSON, marked by the header.
	r = invokeRoute(t, addr, http.MethodPost, "fails", []byte(`{}`))
	var fe workerapi.FunctionError
	if err := json.Unmarshal(r.body, &fe); err != nil || r.status != http.StatusOK || fe.Type != "ValueError" || fe.Message != "bad input" {
		t.Fatalf("function error: %d %q", r.status, r.body)
	}
	if r.header.Get(HeaderFunctionError) != "Unhandled" {
		t.Errorf("function error without %s: %v", HeaderFunctionError, r.header)
	}

	// Platform errors: the status of their class and a code naming them.
	for _, c := range []struct {
		method, fn string
		body       []byte
		status     int
		code       string
	}{
		{http.MethodPost, "nope", []byte(`{}`), http.StatusNotFound, "function_not_found"},
		{http.MethodPost, "busy", []byte(`{}`), http.StatusTooManyRequests, "queue_full"},
		{http.MethodPost, "Bad_Name", []byte(`{}`), http.StatusBadRequest, "invalid_name"},
		{http.MethodPost, "echo", bytes.Repeat([]byte("a"), 2<<10), http.StatusRequestEntityTooLarge, "payload_too_large"},
		{http.MethodGet, "echo", nil, http.StatusMethodNotAllowed, "method_not_allowed"},
	} {
		r := invokeRoute(t, addr, c.method, c.fn, c.body)
		if r.status != c.status || r.code(t) != c.code {
			t.Errorf("%s %s: %d %s, want %d %s", c.method, c.fn, r.status, r.body, c.status, c.code)
		}
	}
	if _, ok := inv.got["Bad_Name"]; ok {
		t.Errorf("an invalid name reached the invoker")
	}

	// A node without an invoker says so.
	_, bare := startServer(t, Options{})
	if r := invokeRoute(t, bare, http.MethodPost, "echo", []byte(`{}`)); r.status != http.StatusNotImplemented || r.code(t) != "invoke_unavailable" {
		t.Fatalf("no invoker: %d %s", r.status, r.body)
	}
}
