package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/test/harness"
)

const invokeDir = "testdata/invoke"

// invoked is what caller answers: the callee's report, or the error
// baton.invoke raised.
type invoked struct {
	consumed
	Error *struct {
		Status        int    `json:"status"`
		Type          string `json:"type"`
		Message       string `json:"message"`
		FunctionError bool   `json:"functionError"`
	} `json:"error"`
}

// TestTransferInvoke: a Python function invokes another through Baton
// (baton.invoke) with a 1 MB payload. In the same app the payload goes by
// reference (the callee's request, as the controller saw it, is the small
// reference) and the callee gets the exact bytes (checked by digest); a
// callee of another app gets them inline; a large result comes back to
// the caller intact; an unknown function and a callee's own error are
// raised with what they are.
func TestTransferInvoke(t *testing.T) {
	requirePython(t)
	t.Parallel()
	srv := startServer(t, "--transfer-threshold", "262144")
	for name, c := range map[string]struct{ handler, app string }{
		"inv-caller": {"caller", "inv"}, "inv-callee": {"consume", "inv"}, "inv-callee-other": {"consume", "inv-other"},
		"inv-produce": {"produce", "inv"}, "inv-fetch": {"fetch", "inv"}, "inv-fails": {"fails", "inv"},
	} {
		spec := pySpec(c.handler)
		spec.App, spec.MemoryMB = c.app, 256
		deploy(t, srv, name, spec, invokeDir)
	}
	call := func(target, seed string) invoked { return callVia(t, srv, "inv-caller", target, seed) }
	// requestBytes is the size of the newest request of fn that the
	// controller recorded.
	requestBytes := func(fn string) int { return newestRequestBytes(t, srv, fn, 1) }

	t.Run("SameAppByReference", func(t *testing.T) {
		got := call("inv-callee", "same")
		if got.Error != nil || got.SHA256 != xdtDigest("same", xdtMB) || got.Len != xdtMB || got.SawReference {
			t.Fatalf("the callee got %+v (error %+v), want %d bytes with sha256 %s and no reference", got.consumed, got.Error, xdtMB, xdtDigest("same", xdtMB))
		}
		if n := requestBytes("inv-callee"); n > 4096 {
			t.Fatalf("the callee's request crossed the controller as %d bytes: not by reference", n)
		}
	})

	t.Run("OtherAppInline", func(t *testing.T) {
		got := call("inv-callee-other", "other")
		if got.Error != nil || got.SHA256 != xdtDigest("other", xdtMB) || got.Len != xdtMB || got.SawReference {
			t.Fatalf("the callee of another app got %+v (error %+v)", got.consumed, got.Error)
		}
		if n := requestBytes("inv-callee-other"); n < xdtMB {
			t.Fatalf("the other app's callee was sent %d bytes, want the payload inline", n)
		}
	})

	t.Run("LargeResult", func(t *testing.T) {
		resp, err := invoke(t, srv, "inv-fetch", map[string]any{"target": "inv-produce", "seed": "back", "n": xdtMB})
		if err != nil {
			t.Fatalf("invoke inv-fetch: %v", err)
		}
		var got consumed
		if err := json.Unmarshal(resp.Body, &got); err != nil || got.SHA256 != xdtDigest("back", xdtMB) || got.Len != xdtMB || got.SawReference {
			t.Fatalf("fetch answered %.300s (%v), want the %d bytes of produce", resp.Body, err, xdtMB)
		}
	})

	t.Run("Errors", func(t *testing.T) {
		for _, c := range []struct {
			target, typ string
			status      int
			fnErr       bool
		}{
			{"inv-missing", "function_not_found", 404, false},
			{"inv-fails", "ValueError", 200, true},
		} {
			got := call(c.target, "err")
			if got.Error == nil || got.Error.Type != c.typ || got.Error.Status != c.status || got.Error.FunctionError != c.fnErr || got.Error.Message == "" {
				t.Errorf("invoke %s: %s, want %s (%d)", c.target, fmt.Sprintf("%+v", got.Error), c.typ, c.status)
			}
		}
	})
}

// TestTransferInvokeNode: the same from a Node caller (require('baton')
// .invoke): a 1 MB payload to a function of its app goes by reference and
// arrives intact; an unknown function is refused by name.
func TestTransferInvokeNode(t *testing.T) {
	requirePython(t)
	requireNode(t)
	t.Parallel()
	srv := startServer(t, "--transfer-threshold", "262144")
	deploy(t, srv, "invn-caller", function.Spec{Runtime: function.RuntimeNode, Handler: "caller.handler", App: "invn", MemoryMB: 256}, invokeDir)
	spec := pySpec("consume")
	spec.App, spec.MemoryMB = "invn", 256
	deploy(t, srv, "invn-callee", spec, invokeDir)

	got := callVia(t, srv, "invn-caller", "invn-callee", "node")
	if got.Error != nil || got.SHA256 != xdtDigest("node", xdtMB) || got.Len != xdtMB || got.SawReference {
		t.Fatalf("the callee got %+v (error %+v), want %d bytes with sha256 %s", got.consumed, got.Error, xdtMB, xdtDigest("node", xdtMB))
	}
	if n := newestRequestBytes(t, srv, "invn-callee", 1); n > 4096 {
		t.Fatalf("the callee's request crossed the controller as %d bytes: not by reference", n)
	}
	got = callVia(t, srv, "invn-caller", "invn-missing", "node")
	if got.Error == nil || got.Error.Type != "function_not_found" || got.Error.Status != 404 || !strings.Contains(got.Error.Message, "invn-missing") {
		t.Fatalf("unknown function: %+v", got.Error)
	}
}

// callVia invokes caller, which sends 1 MB made from seed to target with
// baton.invoke, and returns what it answered.
func callVia(t *testing.T, srv *harness.Server, caller, target, seed string) invoked {
	t.Helper()
	resp, err := invoke(t, srv, caller, map[string]any{"target": target, "seed": seed, "n": xdtMB})
	if err != nil {
		t.Fatalf("invoke %s → %s: %v", caller, target, err)
	}
	var got invoked
	if err := json.Unmarshal(resp.Body, &got); err != nil {
		t.Fatalf("%s answered %.300s: %v", caller, resp.Body, err)
	}
	return got
}

// newestRequestBytes waits until fn has at least n records and returns
// the request size of the newest (as the controller recorded it).
func newestRequestBytes(t *testing.T, srv *harness.Server, fn string, n int) int {
	t.Helper()
	var size int
	waitFor(t, 10*time.Second, "the records of "+fn, func() (bool, string) {
		recs := recordsOf(t, srv, fn)
		if len(recs) < n {
			return false, fmt.Sprintf("%d records", len(recs))
		}
		size = recs[0].RequestBytes
		return true, ""
	})
	return size
}
