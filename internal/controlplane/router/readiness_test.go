package router

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/workerapi"
)

// eventWorker is a fakeWorker whose start outcomes are also sent to the
// router as events (as the controller passes on the worker's stream), and
// which counts WaitInstance calls.
type eventWorker struct {
	*fakeWorker
	r     atomic.Pointer[Router]
	waits atomic.Int32
	// early sends the event before StartInstance returns, as a fast
	// start's event can overtake the start's answer.
	early bool
	// drop sends no events (a stream that broke without notice).
	drop atomic.Bool
}

func (w *eventWorker) WaitInstance(ctx context.Context, id string) (workerapi.Instance, error) {
	w.waits.Add(1)
	return w.fakeWorker.WaitInstance(ctx, id)
}

func (w *eventWorker) StartInstance(ctx context.Context, spec workerapi.InstanceSpec) (workerapi.Instance, error) {
	in, err := w.fakeWorker.StartInstance(ctx, spec)
	if err != nil {
		return in, err
	}
	if w.early {
		w.emit(in.ID)
	} else {
		go w.emit(in.ID)
	}
	return in, nil
}

// emit sends the start's outcome once it is known.
func (w *eventWorker) emit(id string) {
	inst, err := w.fakeWorker.WaitInstance(context.Background(), id)
	if w.drop.Load() {
		return
	}
	ev := workerapi.Event{Kind: workerapi.InstanceReady, Worker: w.id, Instance: id, Ready: &inst}
	var initErr *workerapi.InitError
	switch {
	case errors.As(err, &initErr):
		ev = workerapi.Event{Kind: workerapi.InstanceFailed, Worker: w.id, Instance: id, Reason: err.Error(), InitErr: initErr}
	case err != nil:
		ev = workerapi.Event{Kind: workerapi.InstanceFailed, Worker: w.id, Instance: id, Reason: err.Error()}
	}
	w.r.Load().StartEvent(ev)
}

func newEventRouter(t *testing.T, early bool) (*Router, *eventWorker, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	ew := &eventWorker{fakeWorker: newFakeWorker(clk), early: early}
	ew.startDelay = 10 * time.Millisecond
	r := newRouter(t, clk, Options{}, ew)
	ew.r.Store(r)
	r.SetFunction(testFunction(1, nil))
	return r, ew, clk
}

func TestReadinessFromEvents(t *testing.T) {
	for _, early := range []bool{false, true} {
		r, ew, clk := newEventRouter(t, early)
		r.FollowingEvents(ew.id, true)
		res := await(t, clk, invokeAsync(r, context.Background()))
		if res.err != nil || !res.out.Cold {
			t.Fatalf("early=%v: %+v, %v; want a cold start", early, res.out, res.err)
		}
		if n := ew.waits.Load(); n != 0 {
			t.Fatalf("early=%v: %d WaitInstance calls with the events followed, want 0", early, n)
		}
		if res.out.Init != 10*time.Millisecond {
			t.Fatalf("early=%v: init %s, want the event's 10ms", early, res.out.Init)
		}
	}
}

func TestReadinessWithoutEventsAsksTheWorker(t *testing.T) {
	r, ew, clk := newEventRouter(t, false)
	if res := await(t, clk, invokeAsync(r, context.Background())); res.err != nil {
		t.Fatal(res.err)
	}
	if n := ew.waits.Load(); n != 1 {
		t.Fatalf("%d WaitInstance calls with the events not followed, want 1", n)
	}
}

func TestReadinessFailureEvent(t *testing.T) {
	r, ew, clk := newEventRouter(t, false)
	ew.startErr = &workerapi.InitError{Err: workerapi.FunctionError{Type: "ImportError", Message: "no module"}}
	r.FollowingEvents(ew.id, true)
	res := await(t, clk, invokeAsync(r, context.Background()))
	var initErr *workerapi.InitError
	if !errors.As(res.err, &initErr) || initErr.Err.Type != "ImportError" {
		t.Fatalf("err = %v, want the event's init error", res.err)
	}
	if n := ew.waits.Load(); n != 0 {
		t.Fatalf("%d WaitInstance calls, want 0", n)
	}
}

// A start waiting for its event falls back to WaitInstance when the
// stream breaks, and after eventGrace when no event came.
func TestReadinessFallsBack(t *testing.T) {
	r, ew, clk := newEventRouter(t, false)
	ew.drop.Store(true)
	r.FollowingEvents(ew.id, true)
	ch := invokeAsync(r, context.Background())
	eventually(t, "the start to wait for its event", func() bool {
		ew.rmu().Lock()
		defer ew.rmu().Unlock()
		return len(r.worker(ew.id).ready.waits) == 1
	})
	r.FollowingEvents(ew.id, false)
	if res := await(t, clk, ch); res.err != nil {
		t.Fatal(res.err)
	}
	if n := ew.waits.Load(); n != 1 {
		t.Fatalf("%d WaitInstance calls after the stream broke, want 1", n)
	}

	r.FollowingEvents(ew.id, true)
	r.Recycle("f")
	ch = invokeAsync(r, context.Background())
	res := awaitEvery(t, clk, 100*time.Millisecond, ch)
	if res.err != nil || !res.out.Cold {
		t.Fatalf("%+v, %v; want a cold start", res.out, res.err)
	}
	if n := ew.waits.Load(); n != 2 {
		t.Fatalf("%d WaitInstance calls after an event that never came, want 2", n)
	}
}

// rmu returns the router's lock of the worker's readiness.
func (w *eventWorker) rmu() interface {
	Lock()
	Unlock()
} {
	return &w.r.Load().worker(w.id).rmu
}
