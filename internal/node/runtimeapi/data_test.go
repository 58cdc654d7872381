package runtimeapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/baton-faas/baton/internal/cluster/clustertest"
	"github.com/baton-faas/baton/internal/datalayer"
)

// dataResult is a data request's answer.
type dataResult struct {
	status int
	header http.Header
	body   []byte
}

// errType decodes the Runtime API error body and returns its type; it
// fails the test when the body is not the error shape.
func (r dataResult) errType(t *testing.T) string {
	t.Helper()
	var e apiError
	if err := json.Unmarshal(r.body, &e); err != nil || e.Type == "" || e.Message == "" {
		t.Fatalf("status %d: body %q is not a Runtime API error", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error with Content-Type %q", ct)
	}
	return e.Type
}

// data sends one data request to the endpoint at addr.
func data(t *testing.T, addr, method, keyAndQuery string, body []byte, contentType string) dataResult {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+addr+dataPrefix+keyAndQuery, r)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, keyAndQuery, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return dataResult{status: resp.StatusCode, header: resp.Header, body: b}
}

func TestDataRoutes(t *testing.T) {
	ns := clustertest.Server(t)
	nc, _ := clustertest.Connect(t, ns)
	layer, err := datalayer.Open(clustertest.Context(t), nc, datalayer.Config{MaxValue: 1 << 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, addrA := startServer(t, Options{Data: layer.App("app-a")})
	_, addrA2 := startServer(t, Options{Data: layer.App("app-a")})
	_, addrB := startServer(t, Options{Data: layer.App("app-b")})

	// Put (global by default), get with its content type, from the local
	// copy first.
	if r := data(t, addrA, http.MethodPut, "run/1/out.json", []byte(`{"n":1}`), "application/json"); r.status != http.StatusNoContent {
		t.Fatalf("put: %d %s", r.status, r.body)
	}
	r := data(t, addrA, http.MethodGet, "run/1/out.json", nil, "")
	if r.status != http.StatusOK || string(r.body) != `{"n":1}` || r.header.Get("Content-Type") != "application/json" || r.header.Get(headerDataScope) != "local" {
		t.Fatalf("get: %d %q %v", r.status, r.body, r.header)
	}
	if r := data(t, addrA, http.MethodGet, "run/1/out.json?scope=global", nil, ""); r.status != http.StatusOK || r.header.Get(headerDataScope) != "global" {
		t.Fatalf("global get: %d %q %v", r.status, r.body, r.header)
	}
	// Another instance of the app reads it; another app does not.
	if r := data(t, addrA2, http.MethodGet, "run/1/out.json", nil, ""); r.status != http.StatusOK || string(r.body) != `{"n":1}` {
		t.Fatalf("get from another instance of the app: %d %q", r.status, r.body)
	}
	for _, q := range []string{"", "?scope=local", "?scope=global"} {
		r := data(t, addrB, http.MethodGet, "run/1/out.json"+q, nil, "")
		if r.status != http.StatusNotFound || r.errType(t) != "KeyNotFound" {
			t.Fatalf("another app's get%s: %d %q", q, r.status, r.body)
		}
	}
	// A value without a type is bytes.
	if r := data(t, addrA, http.MethodPut, "raw?scope=local", []byte{0, 1, 2}, ""); r.status != http.StatusNoContent {
		t.Fatalf("put: %d %s", r.status, r.body)
	}
	if r := data(t, addrA, http.MethodGet, "raw?scope=local", nil, ""); r.status != http.StatusOK || r.header.Get("Content-Type") != datalayer.DefaultContentType || !bytes.Equal(r.body, []byte{0, 1, 2}) {
		t.Fatalf("get of an untyped value: %d %q %v", r.status, r.body, r.header)
	}
	if r := data(t, addrA, http.MethodGet, "raw?scope=global", nil, ""); r.status != http.StatusNotFound {
		t.Fatalf("a local put reached the global layer: %d %q", r.status, r.body)
	}
	// Delete answers 204, also for a missing key.
	for range 2 {
		if r := data(t, addrA, http.MethodDelete, "run/1/out.json", nil, ""); r.status != http.StatusNoContent {
			t.Fatalf("delete: %d %s", r.status, r.body)
		}
	}
	if r := data(t, addrA, http.MethodGet, "run/1/out.json", nil, ""); r.status != http.StatusNotFound {
		t.Fatalf("get after delete: %d %q", r.status, r.body)
	}

	// Refusals name what is wrong.
	for _, c := range []struct {
		method, path string
		body         []byte
		status       int
		errType      string
		says         string
	}{
		{http.MethodGet, "a/../b", nil, http.StatusBadRequest, "InvalidKey", "'..'"},
		{http.MethodPut, "a%20b", []byte("x"), http.StatusBadRequest, "InvalidKey", "letters, digits"},
		{http.MethodGet, "", nil, http.StatusBadRequest, "InvalidKey", "1 to 512"},
		{http.MethodPut, strings.Repeat("k", 513), []byte("x"), http.StatusBadRequest, "InvalidKey", "1 to 512"},
		{http.MethodGet, "k?scope=everywhere", nil, http.StatusBadRequest, "InvalidScope", "everywhere"},
		{http.MethodPut, "k", bytes.Repeat([]byte("x"), 1<<20+1), http.StatusRequestEntityTooLarge, "ValueTooLarge", "at most 1048576"},
		{http.MethodPost, "k", []byte("x"), http.StatusMethodNotAllowed, "MethodNotAllowed", "POST"},
	} {
		r := data(t, addrA, c.method, c.path, c.body, "")
		if r.status != c.status || r.errType(t) != c.errType || !strings.Contains(string(r.body), c.says) {
			t.Errorf("%s %s: %d %s; want %d %s saying %q", c.method, c.path, r.status, r.body, c.status, c.errType, c.says)
		}
	}
	if r := data(t, addrA, http.MethodPost, "k", nil, ""); r.header.Get("Allow") != "GET, PUT, DELETE" {
		t.Errorf("405 without Allow: %v", r.header)
	}
	// A value of the content length the limit allows is taken, and one
	// sent without a length (chunked) is bounded too.
	if r := data(t, addrA, http.MethodPut, "max", bytes.Repeat([]byte("x"), 1<<20), ""); r.status != http.StatusNoContent {
		t.Fatalf("put of the largest value: %d %s", r.status, r.body)
	}
	req, err := http.NewRequest(http.MethodPut, "http://"+addrA+dataPrefix+"chunked", io.MultiReader(bytes.NewReader(make([]byte, 1<<20+10))))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked put over the limit: %d", resp.StatusCode)
	}
}

// Without a data layer the routes say so; without NATS the global scope
// does.
func TestDataUnavailable(t *testing.T) {
	_, none := startServer(t, Options{})
	if r := data(t, none, http.MethodGet, "k", nil, ""); r.status != http.StatusNotImplemented || r.errType(t) != "DataLayerUnavailable" {
		t.Fatalf("no data layer: %d %s", r.status, r.body)
	}
	localOnly := datalayer.New(datalayer.NewLocal(datalayer.Config{}), nil, 0, nil)
	_, addr := startServer(t, Options{Data: localOnly.App("app")})
	for _, c := range []struct{ method, path string }{
		{http.MethodPut, "k"}, {http.MethodPut, "k?scope=global"}, {http.MethodGet, "k?scope=global"}, {http.MethodDelete, "k?scope=global"},
	} {
		r := data(t, addr, c.method, c.path, []byte("x"), "text/plain")
		if r.status != http.StatusNotImplemented || r.errType(t) != "GlobalDataUnavailable" || !strings.Contains(string(r.body), "NATS") {
			t.Errorf("%s %s without NATS: %d %s", c.method, c.path, r.status, r.body)
		}
	}
	if r := data(t, addr, http.MethodPut, "k?scope=local", []byte("x"), "text/plain"); r.status != http.StatusNoContent {
		t.Fatalf("local put without NATS: %d %s", r.status, r.body)
	}
	if r := data(t, addr, http.MethodGet, "k", nil, ""); r.status != http.StatusOK || string(r.body) != "x" || r.header.Get("Content-Type") != "text/plain" {
		t.Fatalf("unscoped get without NATS: %d %s", r.status, r.body)
	}
	// The Runtime API's own routes are unaffected.
	if r := data(t, addr, http.MethodGet, "../../runtime/invocation/x", nil, ""); r.status != http.StatusBadRequest {
		t.Fatalf("a key escaping the prefix: %d %s", r.status, r.body)
	}
}
