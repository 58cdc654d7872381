package controller

import (
	"context"
	"testing"

	"github.com/baton-faas/baton/internal/async"
	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/workerapi/fake"
)

// An event whose function moves to another controller between the
// dispatcher's check and the call did not run: the dispatcher must see
// that (async.Throttled), not a failed attempt. A function deleted
// meanwhile is a failure.
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
	if res := run.Run(ctx, "f", "", []byte(`{}`), 1); res.Err != nil || res.FunctionError != nil {
		t.Fatalf("run on the owner: %+v", res)
	}

	own.set("c2")
	c1.ShardsChanged(nil, []int{0})
	if c1.router.Has("f") {
		t.Fatal("c1 still holds the function after losing it")
	}
	res := run.Run(ctx, "f", "", []byte(`{}`), 1)
	if !async.Throttled(res.Err) {
		class, code := errdefs.Classify(res.Err)
		t.Fatalf("run after the hand-over: %v (%s %s); want an error under which the event did not run", res.Err, class, code)
	}

	c1.forgetKnown("f")
	if res := run.Run(ctx, "f", "", []byte(`{}`), 1); res.Err == nil || async.Throttled(res.Err) {
		t.Fatalf("run of a deleted function: %v; want a failure", res.Err)
	}
}
