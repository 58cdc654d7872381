package e2e

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/store/natsd"
	"github.com/baton-faas/baton/test/harness"
)

// dataLayerDir holds the data layer test functions: app.py runs operations
// through `from baton import data` and through plain HTTP on the Runtime
// API (urllib), index.js through require('baton').data.
const dataLayerDir = "testdata/datalayer"

// dataOp is one operation for the data layer functions.
type dataOp map[string]any

// dataResult is one operation's outcome as the functions describe it: for
// a get, the value's kind (bytes, str, json, none), size and digest; for
// the HTTP operations, the answer's status, headers and body.
type dataResult struct {
	OK          bool   `json:"ok"`
	Error       string `json:"error"`
	Status      int    `json:"status"`
	Kind        string `json:"kind"`
	Len         int    `json:"len"`
	SHA256      string `json:"sha256"`
	B64         string `json:"b64"`
	Value       any    `json:"value"`
	ContentType string `json:"contentType"`
	Scope       string `json:"scope"`
	Body        string `json:"body"`
	ErrorType   string `json:"errorType"`
}

// runData invokes a data layer function with ops and returns their
// results.
func runData(t *testing.T, srv *harness.Server, fn string, ops ...dataOp) []dataResult {
	t.Helper()
	res, err := tryData(t, srv.Client, fn, ops...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// tryData is runData that returns the invocation's failure.
func tryData(t *testing.T, c *client.Client, fn string, ops ...dataOp) ([]dataResult, error) {
	t.Helper()
	payload, err := json.Marshal(map[string]any{"ops": ops})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Invoke(ctx(t), fn, payload)
	if err != nil {
		return nil, fmt.Errorf("invoke %s: %w", fn, err)
	}
	var out struct {
		Results []dataResult `json:"results"`
	}
	if err := json.Unmarshal(resp.Body, &out); err != nil || len(out.Results) != len(ops) {
		return nil, fmt.Errorf("%s: answer %.300s is not %d results (%v)", fn, resp.Body, len(ops), err)
	}
	return out.Results, nil
}

// patternDigest is the digest of the functions' test value of n bytes
// (byte i is i % 251).
func patternDigest(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func dlPut(key, kind string, value any, scope ...string) dataOp {
	op := dataOp{"op": "put", "key": key, "kind": kind}
	switch v := value.(type) {
	case int:
		op["size"] = v
	case []byte:
		op["b64"] = base64.StdEncoding.EncodeToString(v)
	default:
		op["value"] = v
	}
	if len(scope) > 0 {
		op["scope"] = scope[0]
	}
	return op
}

func dlGet(key string, scope ...string) dataOp {
	op := dataOp{"op": "get", "key": key}
	if len(scope) > 0 {
		op["scope"] = scope[0]
	}
	return op
}

func dlHTTPGet(key, query string) dataOp { return dataOp{"op": "httpget", "key": key, "query": query} }

func checkOK(t *testing.T, what string, r dataResult) {
	t.Helper()
	if !r.OK || r.Error != "" {
		t.Errorf("%s: %+v", what, r)
	}
}

func checkValue(t *testing.T, what string, r dataResult, kind string, n int, sha string) {
	t.Helper()
	if r.Kind != kind || r.Len != n || r.SHA256 != sha {
		t.Errorf("%s: got %s of %d bytes (%.12s), want %s of %d bytes (%.12s); %+v", what, r.Kind, r.Len, r.SHA256, kind, n, sha, r)
	}
}

func checkNone(t *testing.T, what string, r dataResult) {
	t.Helper()
	if r.Kind != "none" {
		t.Errorf("%s: got %+v, want nothing (None/null)", what, r)
	}
}

// TestDataLayerFunctions: Python, Node and plain HTTP share an app's data,
// typed as it was put, 2 MiB values included (the object store), and
// another app sees none of it.
func TestDataLayerFunctions(t *testing.T) {
	requirePython(t)
	requireNode(t)
	t.Parallel()
	srv := startServer(t)
	py := function.Spec{Runtime: function.RuntimePython, Handler: "app.handler", App: "shop", MemoryMB: 256}
	deploy(t, srv, "dl-py", py, dataLayerDir)
	deploy(t, srv, "dl-node", function.Spec{Runtime: function.RuntimeNode, Handler: "index.handler", App: "shop", MemoryMB: 256}, dataLayerDir)
	other := py
	other.App = "other"
	deploy(t, srv, "dl-other", other, dataLayerDir)
	const big = 2 << 20
	raw := []byte{0, 1, 2, 0xff, 0xfe}

	// Python puts each kind of value and reads it back.
	r := runData(t, srv, "dl-py",
		dlPut("py/bytes", "bytes", raw),
		dlPut("py/str", "str", "h\u00e9llo, world"),
		dlPut("py/json", "json", map[string]any{"n": 1, "list": []any{true, nil, "x"}}),
		dlPut("py/big", "bytes", big),
		dlPut("py/local", "str", "on this host", "local"),
		dlGet("py/bytes"), dlGet("py/str"), dlGet("py/json"), dlGet("py/big"), dlGet("py/big", "global"), dlGet("py/local"),
		dlGet("py/missing"),
	)
	for i := range 5 {
		checkOK(t, fmt.Sprintf("python put %d", i), r[i])
	}
	checkValue(t, "python get of bytes", r[5], "bytes", len(raw), digest(string(raw)))
	checkValue(t, "python get of str", r[6], "str", len("h\u00e9llo, world"), digest("h\u00e9llo, world"))
	if r[7].Kind != "json" || fmt.Sprint(r[7].Value) != "map[list:[true <nil> x] n:1]" {
		t.Errorf("python get of JSON: %+v", r[7])
	}
	checkValue(t, "python get of 2 MiB", r[8], "bytes", big, patternDigest(big))
	checkValue(t, "python global get of 2 MiB", r[9], "bytes", big, patternDigest(big))
	checkValue(t, "python get of a local value", r[10], "str", len("on this host"), digest("on this host"))
	checkNone(t, "python get of a missing key", r[11])

	// Node reads what Python put, and puts its own, which Python reads.
	r = runData(t, srv, "dl-node",
		dlGet("py/bytes"), dlGet("py/str"), dlGet("py/json"), dlGet("py/big"), dlGet("py/local", "local"),
		dlPut("node/big", "bytes", big),
		dlPut("node/str", "str", "from node"),
		dlPut("node/json", "json", []any{1, 2, 3}, "local"),
		dlGet("missing"),
	)
	checkValue(t, "node get of Python's bytes", r[0], "bytes", len(raw), digest(string(raw)))
	checkValue(t, "node get of Python's str", r[1], "str", len("h\u00e9llo, world"), digest("h\u00e9llo, world"))
	if r[2].Kind != "json" || fmt.Sprint(r[2].Value) != "map[list:[true <nil> x] n:1]" {
		t.Errorf("node get of Python's JSON: %+v", r[2])
	}
	checkValue(t, "node get of Python's 2 MiB", r[3], "bytes", big, patternDigest(big))
	checkValue(t, "node get of Python's local value", r[4], "str", len("on this host"), digest("on this host"))
	for i := 5; i < 8; i++ {
		checkOK(t, fmt.Sprintf("node put %d", i), r[i])
	}
	checkNone(t, "node get of a missing key", r[8])
	r = runData(t, srv, "dl-py", dlGet("node/big"), dlGet("node/str"), dlGet("node/json", "local"), dlGet("node/json", "global"))
	checkValue(t, "python get of Node's 2 MiB", r[0], "bytes", big, patternDigest(big))
	checkValue(t, "python get of Node's str", r[1], "str", len("from node"), digest("from node"))
	if r[2].Kind != "json" || fmt.Sprint(r[2].Value) != "[1 2 3]" {
		t.Errorf("python get of Node's local JSON: %+v", r[2])
	}
	checkNone(t, "python global get of Node's local JSON", r[3])

	// Plain HTTP (what provided and aws-lambda-go functions use).
	r = runData(t, srv, "dl-py",
		dlHTTPGet("py/str", ""),
		dlHTTPGet("py/big", "?scope=global"),
		dlHTTPGet("py/json", "?scope=local"),
		dlHTTPGet("py/missing", ""),
		dlHTTPGet("py/../etc", ""),
		dlHTTPGet("py/str", "?scope=nowhere"),
		dataOp{"op": "httpput", "key": "http/doc", "body": "<p>hi</p>", "contentType": "text/html"},
		dataOp{"op": "httpput", "key": "http/huge", "kind": "bytes", "size": 8<<20 + 1},
		dlGet("http/doc"),
		dataOp{"op": "httpdelete", "key": "http/doc"},
		dlGet("http/doc"),
	)
	if r[0].Status != http.StatusOK || r[0].Body != "h\u00e9llo, world" || r[0].ContentType != "text/plain; charset=utf-8" || r[0].Scope != "local" {
		t.Errorf("HTTP get of a str: %+v", r[0])
	}
	if r[1].Status != http.StatusOK || r[1].Len != big || r[1].SHA256 != patternDigest(big) || r[1].ContentType != "application/octet-stream" || r[1].Scope != "global" {
		t.Errorf("HTTP global get of 2 MiB: %+v", r[1])
	}
	if r[2].Status != http.StatusOK || r[2].ContentType != "application/json" || !strings.Contains(r[2].Body, `"n":1`) {
		t.Errorf("HTTP local get of JSON: %+v", r[2])
	}
	if r[3].Status != http.StatusNotFound || r[3].ErrorType != "KeyNotFound" {
		t.Errorf("HTTP get of a missing key: %+v", r[3])
	}
	if r[4].Status != http.StatusBadRequest || r[4].ErrorType != "InvalidKey" {
		t.Errorf("HTTP get of a key with '..': %+v", r[4])
	}
	if r[5].Status != http.StatusBadRequest || r[5].ErrorType != "InvalidScope" || !strings.Contains(r[5].Body, "nowhere") {
		t.Errorf("HTTP get with a bad scope: %+v", r[5])
	}
	if r[6].Status != http.StatusNoContent {
		t.Errorf("HTTP put: %+v", r[6])
	}
	if r[7].Status != http.StatusRequestEntityTooLarge || r[7].ErrorType != "ValueTooLarge" {
		t.Errorf("HTTP put over the value limit: %+v", r[7])
	}
	// Any text comes back as a str.
	checkValue(t, "python get of an HTML value", r[8], "str", len("<p>hi</p>"), digest("<p>hi</p>"))
	if r[9].Status != http.StatusNoContent {
		t.Errorf("HTTP delete: %+v", r[9])
	}
	checkNone(t, "python get after an HTTP delete", r[10])

	// The module reports refusals as DataError.
	for _, fn := range []string{"dl-py", "dl-node"} {
		r = runData(t, srv, fn, dlPut("bad key?", "str", "x"), dlPut("toolarge", "bytes", 8<<20+1, "local"), dlGet("a/../b"))
		if r[0].Error != "InvalidKey" || r[0].Status != http.StatusBadRequest {
			t.Errorf("%s: put of a bad key: %+v", fn, r[0])
		}
		if r[1].Error != "ValueTooLarge" || r[1].Status != http.StatusRequestEntityTooLarge {
			t.Errorf("%s: put over the value limit: %+v", fn, r[1])
		}
		if r[2].Error != "InvalidKey" {
			t.Errorf("%s: get of a key with '..': %+v", fn, r[2])
		}
	}

	// Another app sees nothing of shop's, in any scope or way; its own
	// key of the same name is its own.
	r = runData(t, srv, "dl-other",
		dlGet("py/str"), dlGet("py/str", "local"), dlGet("py/str", "global"), dlGet("py/big"), dlGet("node/json", "local"),
		dlHTTPGet("py/str", ""), dlHTTPGet("py/big", "?scope=global"),
		dlPut("py/str", "str", "other's"), dlGet("py/str"),
	)
	for i := range 5 {
		checkNone(t, fmt.Sprintf("other app's get %d", i), r[i])
	}
	for i := 5; i < 7; i++ {
		if r[i].Status != http.StatusNotFound {
			t.Errorf("other app's HTTP get %d: %+v", i, r[i])
		}
	}
	checkValue(t, "other app's own key", r[8], "str", len("other's"), digest("other's"))
	r = runData(t, srv, "dl-py", dlGet("py/str"))
	checkValue(t, "shop's key after other's put", r[0], "str", len("h\u00e9llo, world"), digest("h\u00e9llo, world"))
}

// TestDataLayerRestart: a global value survives a restart of the server, a
// local one does not, and a local-only read of a global key finds nothing
// until a get has brought a copy back.
func TestDataLayerRestart(t *testing.T) {
	requirePython(t)
	t.Parallel()
	dataDir := t.TempDir()
	srv := harness.Start(t, harness.Options{DataDir: dataDir})
	deploy(t, srv, "dl-restart", function.Spec{Runtime: function.RuntimePython, Handler: "app.handler", App: "keep", MemoryMB: 256}, dataLayerDir)
	const big = 2 << 20
	r := runData(t, srv, "dl-restart",
		dlPut("g/small", "json", map[string]any{"kept": true}, "global"),
		dlPut("g/big", "bytes", big),
		dlPut("l/small", "str", "forgotten", "local"),
		dlGet("g/small", "local"), dlGet("l/small"),
	)
	for i := range 3 {
		checkOK(t, fmt.Sprintf("put %d", i), r[i])
	}
	if r[3].Kind != "json" {
		t.Errorf("local copy of a global put: %+v", r[3])
	}
	checkValue(t, "local value", r[4], "str", len("forgotten"), digest("forgotten"))
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}

	srv = harness.Start(t, harness.Options{DataDir: dataDir})
	r = runData(t, srv, "dl-restart",
		dlGet("g/small", "local"), dlGet("l/small"), dlGet("l/small", "global"),
		dlGet("g/small"), dlGet("g/big"), dlGet("g/small", "local"),
	)
	checkNone(t, "local-only get of a global key after restart", r[0])
	checkNone(t, "local value after restart", r[1])
	checkNone(t, "global get of a local value", r[2])
	if r[3].Kind != "json" || fmt.Sprint(r[3].Value) != "map[kept:true]" {
		t.Errorf("global value after restart: %+v", r[3])
	}
	checkValue(t, "2 MiB global value after restart", r[4], "bytes", big, patternDigest(big))
	if r[5].Kind != "json" {
		t.Errorf("local copy after the unscoped get: %+v", r[5])
	}
}

// TestDataLayerCluster: in cluster mode the workers share the global layer
// on the cluster's NATS. A value put globally on one worker is read on the
// other after the first was killed with -9; a local one died with it.
func TestDataLayerCluster(t *testing.T) {
	requirePython(t)
	t.Parallel()
	natsAddr := harness.FreeAddr(t)
	ns, err := natsd.Start(ctx(t), natsd.Options{DataDir: t.TempDir(), Listen: natsAddr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	natsURL := "nats://" + natsAddr
	caDir := filepath.Join(t.TempDir(), "ca")
	if out, errOut, rc := cli(t, nil, "cluster", "init", "--dir", caDir); rc != 0 {
		t.Fatalf("cluster init: exit %d\n%s%s", rc, out, errOut)
	}
	workers := map[string]*harness.Proc{}
	for _, id := range []string{"w1", "w2"} {
		workers[id] = harness.StartProc(t, id, "worker", "--nats", natsURL, "--listen", harness.FreeAddr(t),
			"--pki", clusterNode(t, caDir, id, "worker", "127.0.0.1"), "--data-dir", t.TempDir(), "--sandbox", "process")
	}
	apiAddr := harness.FreeAddr(t)
	ctrlData := t.TempDir()
	harness.StartProc(t, "controller", "controller", "--nats", natsURL, "--listen", apiAddr,
		"--pki", clusterNode(t, caDir, "c1", "controller", ""), "--data-dir", ctrlData)
	var c *client.Client
	waitFor(t, settle, "the controller to serve with both workers", func() (bool, string) {
		b, err := os.ReadFile(filepath.Join(ctrlData, "api-token"))
		if err != nil {
			return false, err.Error()
		}
		if c, err = client.New("http://"+apiAddr, &http.Client{Timeout: 2 * time.Minute}, client.WithToken(strings.TrimSpace(string(b)))); err != nil {
			return false, err.Error()
		}
		nodes, err := c.Nodes(ctx(t))
		if err != nil {
			return false, err.Error()
		}
		return len(nodes) == 3, fmt.Sprint(nodes)
	})
	spec := function.Spec{Runtime: function.RuntimePython, Handler: "app.handler", App: "spread", MemoryMB: 256}
	if _, err := c.Deploy(ctx(t), "dl-cluster", client.DeployRequest{FunctionSpec: apiv1.FunctionSpec(spec), Code: zipDir(t, dataLayerDir)}); err != nil {
		t.Fatal(err)
	}
	const big = 1 << 20
	var r []dataResult
	waitFor(t, settle, "the first invocation", func() (bool, string) {
		r, err = tryData(t, c, "dl-cluster", dlPut("g", "str", "kept"), dlPut("g/big", "bytes", big), dlPut("l", "str", "lost", "local"))
		return err == nil, fmt.Sprint(err)
	})
	for i := range r {
		checkOK(t, fmt.Sprintf("put %d", i), r[i])
	}
	f, err := c.Get(ctx(t), "dl-cluster")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Status.Instances) != 1 {
		t.Fatalf("instances %+v, want one", f.Status.Instances)
	}
	first := f.Status.Instances[0].Worker
	workers[first].Kill()

	waitFor(t, settle, "an invocation on the surviving worker", func() (bool, string) {
		r, err = tryData(t, c, "dl-cluster", dlGet("l"), dlGet("g", "local"), dlGet("g"), dlGet("g/big"))
		return err == nil, fmt.Sprint(err)
	})
	if f, err = c.Get(ctx(t), "dl-cluster"); err != nil || len(f.Status.Instances) != 1 || f.Status.Instances[0].Worker == first {
		t.Fatalf("instances %+v (%v), want one on the worker that was not killed (%s was)", f.Status.Instances, err, first)
	}
	checkNone(t, "local value after its worker died", r[0])
	checkNone(t, "local-only get of a global value on another worker", r[1])
	checkValue(t, "global value on another worker", r[2], "str", len("kept"), digest("kept"))
	checkValue(t, "1 MiB global value on another worker", r[3], "bytes", big, patternDigest(big))
}
