package node

import (
	"context"
	"fmt"
	"time"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/node/runtimeapi"
	"github.com/baton-faas/baton/internal/transfer"
	"github.com/baton-faas/baton/internal/workerapi"
)

// Invoker runs the invocations functions ask for through their Runtime
// API endpoint (POST /2018-06-01/baton/invoke/{function}) on the control
// plane, with its routing, placement and autoscaling. callerApp is the
// calling instance's application: the control plane passes a reference
// in payload to a callee of another application inline, since a worker
// refuses other applications' references. byRef lets the callee's worker
// answer a large result with a reference (workerapi.Invocation.ByRef).
// Platform errors are returned classified by errdefs; the callee's own
// error is in the Result.
type Invoker interface {
	Invoke(ctx context.Context, callerApp, function string, payload []byte, byRef bool) (workerapi.Result, error)
}

// appInvoker is the Invoker as one application's instances see it.
type appInvoker struct {
	w   *Worker
	app string
}

// invokerFor is what an instance of spec uses to invoke functions, or
// nil when the node has no Invoker (the route answers 501).
func (w *Worker) invokerFor(spec workerapi.InstanceSpec) runtimeapi.Invoker {
	if w.opts.Invoker == nil {
		return nil
	}
	app := spec.App
	if app == "" {
		app = function.AppOf(spec.Function, spec.Spec)
	}
	return appInvoker{w: w, app: app}
}

// Invoke implements runtimeapi.Invoker. A payload larger than the
// transfer threshold stays here and the callee gets a reference, which
// its worker resolves (a memory hand-off when it is this one, a pull
// otherwise); a large result comes back the same way and is resolved
// here.
func (a appInvoker) Invoke(ctx context.Context, fn string, payload []byte) (runtimeapi.InvokeResult, error) {
	x := a.w.opts.Transfer
	send := payload
	if x != nil {
		if r, ok := x.Keep(a.app, payload); ok {
			send = transfer.Marker(r)
			a.w.log.Debug("invoke payload kept for a direct transfer", "app", a.app, "function", fn, "buffer", r.ID, "bytes", r.Size)
		}
	}
	res, err := a.w.opts.Invoker.Invoke(ctx, a.app, fn, send, x != nil)
	if err != nil {
		// A kept payload nobody pulled is freed when it expires.
		return runtimeapi.InvokeResult{}, err
	}
	if res.Error != nil {
		return runtimeapi.InvokeResult{Error: res.Error}, nil
	}
	if res.Ref == nil {
		return runtimeapi.InvokeResult{Payload: res.Payload}, nil
	}
	began := time.Now()
	p, err := x.Fetch(ctx, *res.Ref, a.app)
	if err != nil {
		return runtimeapi.InvokeResult{}, fmt.Errorf("fetch the result of %s: %w", fn, err)
	}
	a.w.log.Debug("transferred result of an invoke resolved", "function", fn, "bytes", len(p), "took", time.Since(began))
	return runtimeapi.InvokeResult{Payload: p}, nil
}
