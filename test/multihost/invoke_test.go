package multihost

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
)

// callApp is both sides of function-to-function calls: "call" invokes
// event["target"] with a payload of event["size"] bytes and reports what
// came back (or the InvokeError); "echo" returns its event; "fail"
// raises.
const callApp = `import hashlib

from baton import invoke, InvokeError


def call(event, context):
    data = "z" * event["size"]
    try:
        out = invoke(event["target"], {"data": data})
    except InvokeError as e:
        return {"error": e.type, "status": e.status, "function_error": e.function_error, "message": e.message}
    back = out.get("data", "") if isinstance(out, dict) else ""
    return {"same": back == data, "bytes": len(back), "sha": hashlib.sha256(back.encode()).hexdigest()[:16]}


def echo(event, context):
    return event


def fail(event, context):
    raise ValueError("no luck")
`

// TestFunctionCallsAcrossHosts: a function on a worker (no controller in
// its process) invokes others through its Runtime API: the call goes over
// the global bus to the controller that serves the callee, which places
// it like any invocation, and the answer comes back. A 1 MiB payload and
// result go by direct-transfer reference (the bus itself would refuse a
// result that large); a callee of another application gets the data
// inline (up to what the bus carries); the callee's error, an unknown function and a bad name reach
// the caller as InvokeError with their types.
func TestFunctionCallsAcrossHosts(t *testing.T) {
	t.Parallel()
	c := newClusterWith(t, false, []string{"--sandbox", "process"}, "--log-level", "debug")
	cl := c.client(c.controllers...)
	code := zipApp(t, callApp)
	for _, f := range []struct{ name, handler, app string }{
		{"fc-caller", "app.call", "calls"}, {"fc-echo", "app.echo", "calls"},
		{"fc-fail", "app.fail", "calls"}, {"fc-other", "app.echo", "elsewhere"},
	} {
		spec := apiv1.FunctionSpec{Runtime: "python3", Handler: f.handler, App: f.app, TimeoutSeconds: 120, IdleTimeoutSeconds: 900}
		waitFor(t, "deploy "+f.name, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := cl.Deploy(ctx, f.name, client.DeployRequest{FunctionSpec: spec, Code: code})
			return err
		})
	}
	type answer struct {
		Same          bool   `json:"same"`
		Bytes         int    `json:"bytes"`
		Error         string `json:"error"`
		Status        int    `json:"status"`
		FunctionError bool   `json:"function_error"`
		Message       string `json:"message"`
	}
	call := func(t *testing.T, target string, size int) answer {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		res, err := cl.Invoke(ctx, "fc-caller", fmt.Appendf(nil, `{"target": %q, "size": %d}`, target, size))
		if err != nil {
			t.Fatalf("invoke fc-caller → %s: %v", target, err)
		}
		var a answer
		if err := json.Unmarshal(res.Body, &a); err != nil {
			t.Fatalf("fc-caller → %s answered %.300s: %v", target, res.Body, err)
		}
		return a
	}
	for _, tc := range []struct {
		name, target string
		size         int
	}{
		{"Small", "fc-echo", 16},
		{"ByReference", "fc-echo", 1 << 20},
		{"OtherAppInline", "fc-other", 512 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if a := call(t, tc.target, tc.size); !a.Same || a.Bytes != tc.size {
				t.Fatalf("%d bytes to %s: %+v, want the payload back whole", tc.size, tc.target, a)
			}
		})
	}
	t.Run("Errors", func(t *testing.T) {
		if a := call(t, "fc-fail", 1); a.Error != "ValueError" || !a.FunctionError || a.Message != "no luck" {
			t.Errorf("a failing callee: %+v, want its ValueError", a)
		}
		if a := call(t, "fc-nowhere", 1); a.Error != "function_not_found" || a.Status != 404 || a.FunctionError {
			t.Errorf("an unknown callee: %+v, want function_not_found (404)", a)
		}
		if a := call(t, "Bad_Name!", 1); a.Error != "invalid_name" || a.Status != 400 {
			t.Errorf("a bad name: %+v, want invalid_name (400)", a)
		}
		// Another application's result cannot be pulled by reference and
		// the bus carries up to 768 KiB inline.
		if a := call(t, "fc-other", 1<<20); a.Error != "result_too_large" || a.Status != 413 {
			t.Errorf("1 MiB back from another application: %+v, want result_too_large (413)", a)
		}
	})
}
