package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/baton-faas/baton/internal/async"
	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/store"
	"github.com/baton-faas/baton/internal/transfer"
)

// ErrNoAsync: this controller was started without the async queue.
var ErrNoAsync = errdefs.New(errdefs.NotImplemented, "async_unavailable", "asynchronous invocations are not available on this server")

// asyncRunner is the controller as the dispatcher sees it.
type asyncRunner struct{ c *Controller }

func (r asyncRunner) Serving(name string) (function.Function, bool, bool) {
	fn, exists := r.c.knownFunction(name)
	return fn, exists && r.c.owns(name) && r.c.router.Has(name), exists
}

func (r asyncRunner) Backlogged(name string, asyncSlots int) bool {
	return r.c.Status(name).Queued > asyncSlots
}

func (r asyncRunner) Run(ctx context.Context, ev async.Event) async.Result {
	// The function sees its attempt as Lambda's client context.
	opts := InvokeOptions{ClientContext: clientContext(ev.Attempt, ev.Custom), Attempt: ev.Attempt, ByRef: ev.ByRef}
	payload := ev.Payload
	if ev.CallerApp != "" {
		// A function's call of another from a worker without a
		// controller beside it (async.Queue.Call): as InvokeFor.
		var err error
		if payload, opts.ByRef, err = r.c.callInput(ctx, ev.CallerApp, ev.Function, ev.Payload, ev.ByRef); err != nil {
			return async.Result{Err: err}
		}
	}
	// A function handed over meanwhile fails with router.ErrReleased: no
	// attempt (async.Throttled).
	inv, err := r.c.InvokeWith(ctx, ev.Function, ev.ID, payload, opts)
	if err != nil {
		return async.Result{Err: err}
	}
	res := async.Result{Payload: inv.Payload, FunctionError: inv.FunctionError, Err: inv.Err, Worker: inv.Worker}
	if inv.Ref != nil {
		// The callee's worker kept a large result: the caller pulls it.
		res.Payload, res.PayloadRef = transfer.Marker(*inv.Ref), true
	}
	return res
}

// clientContext is Lambda's client context with Baton's custom fields:
// the attempt, and a workflow step's execution and state.
func clientContext(attempt int, custom map[string]string) []byte {
	fields := make(map[string]string, len(custom)+1)
	maps.Copy(fields, custom)
	fields["baton-attempt"] = strconv.Itoa(attempt)
	cc, _ := json.Marshal(map[string]any{"custom": fields})
	return cc
}

// startAsync starts running the asynchronous events of the functions this
// controller serves.
func (c *Controller) startAsync() error {
	if c.queue == nil {
		return nil
	}
	opts := async.DispatchOptions{RetryBase: c.asyncRetryBase, Logger: c.log.With("component", "async")}
	if c.metrics != nil {
		opts.Observer = c.metrics
	}
	d, err := c.queue.Dispatch(asyncRunner{c}, opts)
	if err != nil {
		return err
	}
	c.dispatcher = d
	return nil
}

// InvokeAsync accepts an event for later: it returns once the event is
// stored durably. A repeated key within the dedup window returns the
// first invocation's id.
func (c *Controller) InvokeAsync(ctx context.Context, name string, payload []byte, key string) (async.Accepted, error) {
	if c.queue == nil {
		return async.Accepted{}, ErrNoAsync
	}
	if err := function.ValidateName(name); err != nil {
		return async.Accepted{}, err
	}
	if !c.Lookup(ctx, name) {
		return async.Accepted{}, fmt.Errorf("function %q: %w", name, store.ErrNotFound)
	}
	return c.queue.Enqueue(ctx, name, payload, key)
}

// AsyncInvocation returns an asynchronous invocation's state.
func (c *Controller) AsyncInvocation(ctx context.Context, id string) (async.Invocation, error) {
	if c.queue == nil {
		return async.Invocation{}, ErrNoAsync
	}
	return c.queue.Get(ctx, id)
}

// DeadLetters lists a dead-letter queue.
func (c *Controller) DeadLetters(ctx context.Context, name string, limit int) ([]async.DeadLetter, error) {
	if c.queue == nil {
		return nil, ErrNoAsync
	}
	return c.queue.DeadLetters(ctx, name, limit)
}

// DeadLetter returns one dead-letter entry.
func (c *Controller) DeadLetter(ctx context.Context, name string, seq uint64) (async.DeadLetter, error) {
	if c.queue == nil {
		return async.DeadLetter{}, ErrNoAsync
	}
	return c.queue.DeadLetter(ctx, name, seq)
}

// Redrive sends a dead-letter queue's events back to their functions.
func (c *Controller) Redrive(ctx context.Context, name string) ([]string, error) {
	if c.queue == nil {
		return nil, ErrNoAsync
	}
	return c.queue.Redrive(ctx, name)
}

// kickAsync starts the dispatch of a function taken over.
func (c *Controller) kickAsync(name string) {
	if c.dispatcher != nil {
		c.dispatcher.Kick(name)
	}
}

// defaultAsyncRetryBase is the first retry's wait (doubling after).
const defaultAsyncRetryBase = time.Second
