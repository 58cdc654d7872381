package controller

import (
	"context"
	"errors"
	"testing"

	"github.com/baton-faas/baton/internal/async"
	"github.com/baton-faas/baton/internal/controlplane/router"
	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/workerapi/fake"
)

// A call whose function moves to another controller between the owner's
// check and the call did not run: a synchronous caller gets
// router.ErrReleased (the API sends the request on to the new owner), and
// the async dispatcher sees no attempt (async.Throttled), not a failure
// with "function not found". A function deleted meanwhile is a failure.
func TestAsyncRunOfAFunctionHandedOverIsNoAttempt(t *testing.T) {
	w := fake.New(fake.Options{ID: "w"})
	defer w.Close()
	own := &owners{owner: "c1"}
	c1 := clusterController(t, own, "c1", w)
	fn := testFunction(t, "f")
	c1.setKnown(fn)
	c1.poke()
	waitUntil(t, "c1 to take the function over", func() bool { return c1.router.Has("f") })
	run := asyncRunner{c1}
	ctx := context.Background()
	if res := run.Run(ctx, async.Event{Function: "f", Payload: []byte(`{}`), Attempt: 1}); res.Err != nil || res.FunctionError != nil {
		t.Fatalf("run on the owner: %+v", res)
	}

	own.set("c2")
	c1.ShardsChanged(nil, []int{0})
	if c1.router.Has("f") {
		t.Fatal("c1 still holds the function after losing it")
	}
	// A synchronous call follows the function (the API sends it on to
	// the new owner) rather than failing with not found.
	if _, err := c1.Invoke(ctx, "f", "", []byte(`{}`)); !errors.Is(err, router.ErrReleased) {
		t.Fatalf("call after the hand-over: %v; want router.ErrReleased", err)
	}
	res := run.Run(ctx, async.Event{Function: "f", Payload: []byte(`{}`), Attempt: 1})
	if !async.Throttled(res.Err) {
		class, code := errdefs.Classify(res.Err)
		t.Fatalf("run after the hand-over: %v (%s %s); want an error under which the event did not run", res.Err, class, code)
	}

	c1.forgetKnown("f")
	if res := run.Run(ctx, async.Event{Function: "f", Payload: []byte(`{}`), Attempt: 1}); res.Err == nil || async.Throttled(res.Err) {
		t.Fatalf("run of a deleted function: %v; want a failure", res.Err)
	}
}
