package controller

import (
	"context"
	"fmt"

	"github.com/baton-faas/baton/internal/controlplane/router"
	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/workerapi"
)

// InvokeFor runs an invocation that a function of callerApp asked for
// through its Runtime API endpoint (the node's Invoker): the same path as
// the HTTP invoke route, without the bytes crossing HTTP. The payload
// may be a reference the caller's worker kept; a callee of another
// application gets it inline (stepInput pulls it here), since its worker
// would refuse the reference. A large result comes back as a reference
// (byRef) only to a caller of the callee's own application.
func (c *Controller) InvokeFor(ctx context.Context, callerApp, name string, payload []byte, byRef bool) (workerapi.Result, error) {
	if err := function.ValidateName(name); err != nil {
		return workerapi.Result{}, errdefs.New(errdefs.Invalid, "invalid_name", err.Error())
	}
	input, byRef, err := c.callInput(ctx, callerApp, name, payload, byRef)
	if err != nil {
		return workerapi.Result{}, err
	}
	inv, err := c.InvokeWith(ctx, name, "", input, InvokeOptions{ByRef: byRef})
	if err != nil {
		return workerapi.Result{}, fmt.Errorf("invoke %s: %w", name, err)
	}
	if inv.Err != nil {
		return workerapi.Result{}, fmt.Errorf("invocation %s of %s: %w", inv.ID, name, inv.Err)
	}
	return workerapi.Result{Payload: inv.Payload, Error: inv.FunctionError, Ref: inv.Ref}, nil
}

// callInput is the payload a function's call of another passes to the
// callee (references to another application's data pulled here), and
// whether the result may come back by reference (only to a caller of the
// callee's own application).
func (c *Controller) callInput(ctx context.Context, callerApp, name string, payload []byte, byRef bool) ([]byte, bool, error) {
	fn, ok := c.knownFunction(name)
	if !ok {
		return nil, false, fmt.Errorf("function %q: %w", name, router.ErrUnknownFunction)
	}
	byRef = byRef && function.AppOf(name, fn.Spec) == callerApp
	input, err := c.stepInput(ctx, name, payload)
	if err != nil {
		return nil, false, err
	}
	return input, byRef, nil
}
