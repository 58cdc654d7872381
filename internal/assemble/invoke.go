package assemble

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/baton-faas/baton/internal/async"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/store"
	"github.com/baton-faas/baton/internal/transfer"

	"github.com/baton-faas/baton/internal/controlplane/controller"
	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/node"
	"github.com/baton-faas/baton/internal/workerapi"
)

// serverInvoker is the node's Invoker in `baton server`: the controller
// in the same process. The node is made before the controller (which
// holds it as its worker), so the controller is set once it has started;
// a function cannot run before then.
type serverInvoker struct {
	c atomic.Pointer[controller.Controller]
}

var _ node.Invoker = (*serverInvoker)(nil)

// Invoke implements node.Invoker.
func (s *serverInvoker) Invoke(ctx context.Context, callerApp, function string, payload []byte, byRef bool) (workerapi.Result, error) {
	c := s.c.Load()
	if c == nil {
		return workerapi.Result{}, errdefs.New(errdefs.Unavailable, "starting", "the controller is still starting")
	}
	return c.InvokeFor(ctx, callerApp, function, payload, byRef)
}

// busInvoker is the node's Invoker in `baton worker`, which has no
// controller beside it: a function's call of another goes over the
// global bus (async.Queue.Call), where the controller that serves
// the callee runs it like a workflow step — with normal routing,
// placement and autoscaling, once (again only when a crash cut it
// short) — and the caller awaits its end in the invocation's state. A
// caller that gives up (its own deadline) leaves the call to run.
type busInvoker struct {
	nc  *nats.Conn
	fns store.Functions
	log *slog.Logger

	q atomic.Pointer[async.Queue] // attached on first use: controllers create it
}

var _ node.Invoker = (*busInvoker)(nil)

// Invoke implements node.Invoker.
func (b *busInvoker) Invoke(ctx context.Context, callerApp, name string, payload []byte, byRef bool) (workerapi.Result, error) {
	if err := function.ValidateName(name); err != nil {
		return workerapi.Result{}, errdefs.New(errdefs.Invalid, "invalid_name", err.Error())
	}
	// An unknown callee fails here: no controller would take its event.
	fn, _, err := b.fns.GetFunction(ctx, name)
	if err != nil {
		return workerapi.Result{}, err
	}
	q, err := b.queue(ctx)
	if err != nil {
		return workerapi.Result{}, err
	}
	byRef = byRef && function.AppOf(name, fn.Spec) == callerApp
	inv, err := q.Call(ctx, name, payload, async.Call{CallerApp: callerApp, ByRef: byRef})
	if err != nil {
		return workerapi.Result{}, fmt.Errorf("call %s over the global bus: %w", name, err)
	}
	return b.outcome(ctx, inv)
}

func (b *busInvoker) queue(ctx context.Context) (*async.Queue, error) {
	if q := b.q.Load(); q != nil {
		return q, nil
	}
	// Attached without a lock held across the round trips: two first
	// calls may both attach, and one of the equal handles is kept.
	q, err := async.Attach(ctx, b.nc, b.log)
	if err != nil {
		return nil, err
	}
	if !b.q.CompareAndSwap(nil, q) {
		return b.q.Load(), nil
	}
	return q, nil
}

// outcome is a finished call as the caller sees it: a result (inline or
// a reference to pull), the callee's error, or Baton's classified error.
func (b *busInvoker) outcome(ctx context.Context, inv async.Invocation) (workerapi.Result, error) {
	if inv.State == async.StateSucceeded {
		if !inv.ResultRef {
			return workerapi.Result{Payload: inv.Result}, nil
		}
		r, ok := transfer.ParseMarker(inv.Result)
		if !ok {
			return workerapi.Result{}, errdefs.New(errdefs.Internal, "bad_reference",
				fmt.Sprintf("call %s of %s: its result is marked a reference but is not one", inv.ID, inv.Function))
		}
		return workerapi.Result{Ref: &r}, nil
	}
	var last *async.Attempt
	for i := range inv.Attempts {
		if !inv.Attempts[i].Interrupted {
			last = &inv.Attempts[i]
		}
	}
	switch {
	case last == nil:
		if _, _, err := b.fns.GetFunction(ctx, inv.Function); errdefs.Is(err, errdefs.NotFound) {
			return workerapi.Result{}, err
		}
		return workerapi.Result{}, errdefs.New(errdefs.Unavailable, "call_not_run",
			fmt.Sprintf("call %s of %s did not run: %s", inv.ID, inv.Function, inv.Reason))
	case last.Error == "":
		// It ran, and its result could not be passed on (too large for
		// the bus without direct transfers).
		return workerapi.Result{}, errdefs.New(errdefs.TooLarge, "result_too_large",
			fmt.Sprintf("call %s of %s: %s", inv.ID, inv.Function, inv.Reason))
	case !last.Platform:
		return workerapi.Result{Error: &workerapi.FunctionError{Type: last.ErrorType, Message: last.Error}}, nil
	}
	class := errdefs.Class(last.ErrorClass)
	if class == "" {
		class = errdefs.Internal
	}
	return workerapi.Result{}, errdefs.New(class, last.ErrorType, last.Error)
}
