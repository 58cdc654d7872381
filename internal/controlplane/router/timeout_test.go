package router

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/workerapi"
)

// remoteFakeWorker answers a call whose context ended the way the remote
// worker client does: the instance is gone, the call was cancelled. (A
// remote worker's own "timed out" answer comes only after it killed the
// instance, so the router's timer ends the call first.)
type remoteFakeWorker struct{ *fakeWorker }

func (w remoteFakeWorker) Invoke(ctx context.Context, id string, inv workerapi.Invocation) (workerapi.Result, error) {
	res, err := w.fakeWorker.Invoke(ctx, id, inv)
	if ctx.Err() != nil && err != nil {
		return res, &workerapi.Failure{Kind: workerapi.FailureInstanceGone, Message: "invocation cancelled: " + ctx.Err().Error()}
	}
	return res, err
}

// A function that runs past its timeout on a remote worker fails with a
// timeout, as on a local one, not with a cancelled call.
func TestTimeoutOnRemoteWorkerIsTimeout(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	fw.release = make(chan struct{}) // never: every invocation runs until cut off
	r := newRouter(t, clk, Options{}, remoteFakeWorker{fw})
	r.SetFunction(testFunction(1, func(s *function.Spec) { s.TimeoutSeconds = 1 }))
	res := awaitEvery(t, clk, 50*time.Millisecond, invokeAsync(r, context.Background()))
	var failure *workerapi.Failure
	if !errors.As(res.err, &failure) || failure.Kind != workerapi.FailureTimeout {
		t.Fatalf("err = %v, want a timeout failure", res.err)
	}
	if class, code := errdefs.Classify(res.err); class != errdefs.Timeout || code != "timeout" {
		t.Fatalf("class %s %s, want timeout timeout", class, code)
	}
}

// A call cancelled for another reason than the timeout keeps its error.
func TestWorkerRemovedDuringCallIsNotTimeout(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	fw.release = make(chan struct{})
	r := newRouter(t, clk, Options{}, remoteFakeWorker{fw})
	r.SetFunction(testFunction(1, func(s *function.Spec) { s.TimeoutSeconds = 60 }))
	ch := invokeAsync(r, context.Background())
	advanceUntil(t, clk, 5*time.Millisecond, "the invocation to run", func() bool {
		fw.mu.Lock()
		defer fw.mu.Unlock()
		return len(fw.invoked) > 0
	})
	r.RemoveWorker(fw.id)
	res := await(t, clk, ch)
	var failure *workerapi.Failure
	if !errors.As(res.err, &failure) || failure.Kind != workerapi.FailureWorkerLost {
		t.Fatalf("err = %v, want worker lost", res.err)
	}
}
