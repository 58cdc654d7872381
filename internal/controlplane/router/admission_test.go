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

// TestAdmissionByExpectedWait: with an observed service time of 4 s on
// one slot (maxScale 1) and a queue timeout of 5 s, one request may wait;
// the next would wait ~8 s and is refused at once, with a retry-after of
// the 3 s the queue needs, although the queue bound (1000) is far away.
func TestAdmissionByExpectedWait(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	fw.execTime = 4 * time.Second
	r := newRouter(t, clk, Options{QueueTimeout: 5 * time.Second}, fw)
	r.SetFunction(testFunction(1, func(s *function.Spec) { s.MaxScale = 1 }))
	// One invocation to observe the service time.
	if res := awaitEvery(t, clk, 50*time.Millisecond, invokeAsync(r, context.Background())); res.err != nil {
		t.Fatal(res.err)
	}
	// The clock stands still: the next one holds the only slot.
	busy := invokeAsync(r, context.Background())
	eventually(t, "the slot taken", func() bool { s, _ := r.Status("f"); return len(s.Instances) == 1 && s.Instances[0].InFlight == 1 })
	queued := invokeAsync(r, context.Background())
	eventually(t, "one queued", func() bool { s, _ := r.Status("f"); return s.Queued == 1 })

	_, err := r.Invoke(context.Background(), "f", workerapi.Invocation{})
	var oe *OverloadError
	if !errors.As(err, &oe) || !errors.Is(err, ErrQueueFull) {
		t.Fatalf("err = %v, want an OverloadError wrapping ErrQueueFull", err)
	}
	if c, code := errdefs.Classify(err); c != errdefs.Overloaded || code != "queue_full" {
		t.Fatalf("class %s %s, want overloaded queue_full", c, code)
	}
	// The service time observed is 4 s plus however many clock steps
	// passed before the router read the clock (a busy machine); the wait
	// the queue needs follows from it.
	r.mu.RLock()
	st := r.fns["f"]
	r.mu.RUnlock()
	st.mu.Lock()
	service := st.service
	st.mu.Unlock()
	if service < 4*time.Second || service >= 5*time.Second {
		t.Fatalf("observed service time %v, want 4 s (and a few clock steps)", service)
	}
	if want := roundUpSecond(2*service - 5*time.Second); oe.RetryAfter() != want {
		t.Fatalf("retry after %v, want %v (2 × %v expected wait - 5 s timeout)", oe.RetryAfter(), want, service)
	}
	if s, _ := r.Status("f"); s.Queued != 1 {
		t.Fatalf("queue %d after a refusal, want 1", s.Queued)
	}
	// Once the queue moved, a request is admitted again.
	for _, ch := range []<-chan result{busy, queued} {
		if res := awaitEvery(t, clk, 50*time.Millisecond, ch); res.err != nil {
			t.Fatal(res.err)
		}
	}
	if res := awaitEvery(t, clk, 50*time.Millisecond, invokeAsync(r, context.Background())); res.err != nil {
		t.Fatalf("after the queue drained: %v", res.err)
	}
}

// TestAdmissionScalesWithCapacity: the same queue is admitted when max
// scale (and concurrency) give it enough slots.
func TestAdmissionScalesWithCapacity(t *testing.T) {
	st := &fnState{name: "f", fn: testFunction(1, func(s *function.Spec) { s.MaxScale = 4 }), service: 4 * time.Second}
	r := New(Options{QueueTimeout: 5 * time.Second})
	st.queue = make([]*waiter, 4) // 5th request: 5 × 4 s / 4 slots = 5 s
	if err := r.admitLocked(st); err != nil {
		t.Fatalf("5 s expected wait refused: %v", err)
	}
	st.queue = make([]*waiter, 5) // 6 s
	var oe *OverloadError
	if err := r.admitLocked(st); !errors.As(err, &oe) || oe.RetryAfter() != time.Second {
		t.Fatalf("6 s expected wait: %v, want an overload with retry-after 1s", err)
	}
	st.fn.Spec.Concurrency = 2 // 8 slots: 3 s
	if err := r.admitLocked(st); err != nil {
		t.Fatalf("3 s expected wait refused: %v", err)
	}
	// Before any service time is observed only the queue bound counts.
	st.service = 0
	st.queue = make([]*waiter, 999)
	if err := r.admitLocked(st); err != nil {
		t.Fatalf("queue of 999 of 1000 without an observed service time: %v", err)
	}
	st.queue = make([]*waiter, 1000)
	if err := r.admitLocked(st); !errors.As(err, &oe) || oe.RetryAfter() != time.Second {
		t.Fatalf("full queue: %v, want an overload with retry-after 1s", err)
	}
}
