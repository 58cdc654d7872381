package async

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/cluster/clustertest"
	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/requestid"
	"github.com/baton-faas/baton/internal/workerapi"
)

func TestBackoffGrowsWithJitterAndCap(t *testing.T) {
	d := &Dispatcher{opts: DispatchOptions{RetryBase: time.Second}}
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 30: 5 * time.Minute} {
		for range 100 {
			got := d.backoff(n)
			if got < want*3/4 || got > want*5/4 {
				t.Fatalf("backoff(%d) = %s, want within ±25%% of %s", n, got, want)
			}
		}
	}
}

func TestThrottledIsNotAnAttempt(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{errdefs.New(errdefs.Overloaded, "queue_full", "full"), true},
		{fmt.Errorf("wrapped: %w", errdefs.New(errdefs.Unavailable, "ownership_moved", "moved")), true},
		{errdefs.New(errdefs.Unavailable, "no_capacity", "no room"), true},
		{&workerapi.Failure{Kind: workerapi.FailureCrash, Message: "crashed"}, false},
		{errdefs.New(errdefs.Timeout, "timeout", "too slow"), false},
		{errors.New("something"), false},
	} {
		if got := Throttled(tc.err); got != tc.want {
			t.Errorf("Throttled(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// runner is a controller stand-in: it fails a function's first fails
// attempts, and counts runs per id.
type runner struct {
	mu    sync.Mutex
	fns   map[string]function.Function
	fails map[string]int
	runs  map[string]int
}

func (r *runner) Serving(name string) (function.Function, bool, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn, ok := r.fns[name]
	return fn, ok, ok
}

func (r *runner) Backlogged(string, int) bool { return false }

func (r *runner) Run(_ context.Context, ev Event) Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.runs[ev.ID]++
	if r.fails[ev.Function] > 0 {
		r.fails[ev.Function]--
		return Result{FunctionError: &workerapi.FunctionError{Type: "Boom", Message: "attempt failed"}}
	}
	if ev.ByRef {
		// A call that may be answered by reference: the answer says who
		// called, as a marker would stand for the result.
		return Result{Payload: []byte(`{"caller":"` + ev.CallerApp + `"}`), PayloadRef: true}
	}
	return Result{Payload: ev.Payload}
}

func testFunction(t *testing.T, name string, async *function.AsyncConfig) function.Function {
	t.Helper()
	spec, err := function.Spec{Runtime: function.RuntimePython, Handler: "app.handler", Async: async}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	return function.Function{Name: name, Version: 1, Spec: spec}
}

func openQueue(t *testing.T) *Queue {
	t.Helper()
	s := clustertest.Server(t)
	nc, _ := clustertest.Connect(t, s)
	q, err := Open(clustertest.Context(t), nc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func await(t *testing.T, q *Queue, id string) Invocation {
	t.Helper()
	var inv Invocation
	clustertest.Eventually(t, "invocation "+id+" to finish", func() bool {
		var err error
		inv, err = q.Get(context.Background(), id)
		return err == nil && Final(inv.State)
	})
	return inv
}

// Retries follow the policy, failures go to the dead-letter queue with
// their attempts, a success keeps its result, and a redrive runs the
// event again.
func TestDispatchRetriesDeadLettersAndRedrives(t *testing.T) {
	q := openQueue(t)
	one := 1
	r := &runner{fns: map[string]function.Function{
		"flaky":  testFunction(t, "flaky", nil),
		"broken": testFunction(t, "broken", &function.AsyncConfig{MaxRetryAttempts: &one, OnFailure: "dlq:broken-dlq"}),
	}, fails: map[string]int{"flaky": 2, "broken": 1000}, runs: map[string]int{}}
	d, err := q.Dispatch(r, DispatchOptions{RetryBase: 10 * time.Millisecond, Scan: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := clustertest.Context(t)

	acc, err := q.Enqueue(ctx, "flaky", []byte(`{"x":1}`), "")
	if err != nil {
		t.Fatal(err)
	}
	inv := await(t, q, acc.ID)
	if inv.State != StateSucceeded || len(inv.Attempts) != 3 || string(inv.Result) != `{"x":1}` {
		t.Fatalf("flaky: %+v, want success on the third attempt (2 retries)", inv)
	}

	acc, err = q.Enqueue(ctx, "broken", []byte(`{"y":2}`), "")
	if err != nil {
		t.Fatal(err)
	}
	inv = await(t, q, acc.ID)
	if inv.State != StateDeadLettered || len(inv.Attempts) != 2 || inv.Attempts[1].ErrorType != "Boom" {
		t.Fatalf("broken: %+v, want dead-lettered after 1 + 1 attempts", inv)
	}
	dls, err := q.DeadLetters(ctx, "broken-dlq", 0)
	if err != nil || len(dls) != 1 || dls[0].ID != acc.ID || dls[0].Condition != conditionRetriesExhausted {
		t.Fatalf("dead letters: %+v, %v", dls, err)
	}
	r.mu.Lock()
	r.fails["broken"] = 0
	r.mu.Unlock()
	ids, err := q.Redrive(ctx, "broken-dlq")
	if err != nil || len(ids) != 1 {
		t.Fatalf("redrive: %v, %v", ids, err)
	}
	if inv := await(t, q, ids[0]); inv.State != StateSucceeded || string(inv.Result) != `{"y":2}` {
		t.Fatalf("redriven: %+v (result %s), want the original event to succeed", inv, inv.Result)
	}
	if dls, err := q.DeadLetters(ctx, "broken-dlq", 0); err != nil || len(dls) != 0 {
		t.Fatalf("after the redrive: %+v, %v", dls, err)
	}
}

// Concurrent submissions with one key store one event and all get its
// id; the event runs once.
func TestIdempotencyKeyConcurrently(t *testing.T) {
	q := openQueue(t)
	r := &runner{fns: map[string]function.Function{"f": testFunction(t, "f", nil)}, fails: map[string]int{}, runs: map[string]int{}}
	ctx := clustertest.Context(t)
	var wg sync.WaitGroup
	var dups atomic.Int32
	ids := make([]string, 10)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			acc, err := q.Enqueue(ctx, "f", []byte(`{}`), "same-key")
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = acc.ID
			if acc.Duplicate {
				dups.Add(1)
			}
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("ids %v: want one", ids)
		}
	}
	if dups.Load() != int32(len(ids)-1) {
		t.Fatalf("%d duplicates, want %d", dups.Load(), len(ids)-1)
	}
	depth, err := q.Depth(ctx)
	if err != nil || depth["f"] != 1 {
		t.Fatalf("events stored: %v, %v; want 1", depth, err)
	}
	d, err := q.Dispatch(r, DispatchOptions{Scan: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	await(t, q, ids[0])
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.runs[ids[0]] != 1 {
		t.Fatalf("ran %d times, want once", r.runs[ids[0]])
	}
	if _, err := q.Get(ctx, "../etc"); !errors.Is(err, ErrUnknown) {
		t.Fatalf("a malformed id: %v", err)
	}
}

// An outcome whose destination cannot take it yet is kept as pending and
// delivered later: the event is not run again (nor its attempt reported as
// interrupted).
func TestPendingOutcomeIsDeliveredNotRerun(t *testing.T) {
	s := clustertest.Server(t)
	nc, _ := clustertest.Connect(t, s)
	ctx := clustertest.Context(t)
	q, err := Open(ctx, nc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	zero := 0
	r := &runner{fns: map[string]function.Function{
		"failing": testFunction(t, "failing", &function.AsyncConfig{MaxRetryAttempts: &zero, OnFailure: "dlq:held"}),
	}, fails: map[string]int{"failing": 1000}, runs: map[string]int{}}
	refused := &refusals{}
	d, err := q.Dispatch(r, DispatchOptions{RetryBase: 10 * time.Millisecond, Scan: 100 * time.Millisecond, Logger: slog.New(refused)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	// Without its stream the dead-letter queue refuses the outcome.
	if err := q.js.DeleteStream(ctx, dlqStream); err != nil {
		t.Fatal(err)
	}
	acc, err := q.Enqueue(ctx, "failing", []byte(`{"z":3}`), "")
	if err != nil {
		t.Fatal(err)
	}
	clustertest.Eventually(t, "the destination to refuse the outcome, kept pending", func() bool {
		inv, err := q.Get(ctx, acc.ID)
		return err == nil && inv.Pending != nil && refused.n.Load() > 0
	})
	if _, err := Open(ctx, nc, Options{}); err != nil { // makes the stream again
		t.Fatal(err)
	}
	inv := await(t, q, acc.ID)
	if inv.State != StateDeadLettered || len(inv.Attempts) != 1 || inv.Attempts[0].Interrupted || inv.Pending != nil {
		t.Fatalf("invocation %+v, want dead-lettered after its one attempt", inv)
	}
	r.mu.Lock()
	runs := r.runs[acc.ID]
	r.mu.Unlock()
	if runs != 1 {
		t.Fatalf("the event ran %d times, want once", runs)
	}
	if entries, err := q.DeadLetters(ctx, "held", 0); err != nil || len(entries) != 1 || entries[0].ID != acc.ID {
		t.Fatalf("dead letters %+v, %v", entries, err)
	}
}

// refusals counts the dispatcher's "destination refused" warnings.
type refusals struct{ n atomic.Int64 }

func (r *refusals) Enabled(context.Context, slog.Level) bool { return true }
func (r *refusals) Handle(_ context.Context, rec slog.Record) error {
	if strings.Contains(rec.Message, "destination refused") {
		r.n.Add(1)
	}
	return nil
}
func (r *refusals) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *refusals) WithGroup(string) slog.Handler      { return r }

// A worker attaches to the queue a controller opened, changing none of
// its settings, and its function calls run once (a failing call is not
// retried), carrying the caller's application and the by-reference flag;
// before any controller opened the queue, attaching says so.
func TestAttachedQueueCalls(t *testing.T) {
	s := clustertest.Server(t)
	ctx := clustertest.Context(t)
	wnc, _ := clustertest.Connect(t, s)
	if _, err := Attach(ctx, wnc, nil); err == nil || !strings.Contains(err.Error(), "no controller has started") {
		t.Fatalf("attach before any controller: %v, want a clear refusal", err)
	}
	cnc, _ := clustertest.Connect(t, s)
	q, err := Open(ctx, cnc, Options{Retention: 3 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	wq, err := Attach(ctx, wnc, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := q.states.Status(ctx)
	if err != nil || st.TTL() != 3*time.Hour {
		t.Fatalf("the invocations bucket's TTL after a worker attached: %v (%v), want the controller's 3h", st.TTL(), err)
	}
	r := &runner{fns: map[string]function.Function{"callee": testFunction(t, "callee", nil), "failing": testFunction(t, "failing", nil)},
		fails: map[string]int{"failing": 5}, runs: map[string]int{}}
	d, err := q.Dispatch(r, DispatchOptions{RetryBase: 10 * time.Millisecond, Scan: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	inv, err := wq.Call(ctx, "callee", []byte(`{"n":1}`), Call{CallerApp: "shop"})
	if err != nil || inv.State != StateSucceeded || string(inv.Result) != `{"n":1}` || inv.ResultRef {
		t.Fatalf("inline call: %+v, %v", inv, err)
	}
	inv, err = wq.Call(ctx, "callee", []byte(`{}`), Call{CallerApp: "shop", ByRef: true})
	if err != nil || inv.State != StateSucceeded || string(inv.Result) != `{"caller":"shop"}` || !inv.ResultRef {
		t.Fatalf("call by reference: %+v (result %s), %v, want the caller's app seen and the result marked a reference", inv, inv.Result, err)
	}
	inv, err = wq.Call(ctx, "failing", []byte(`{}`), Call{CallerApp: "shop"})
	if err != nil || inv.State != StateFailed || len(inv.Attempts) != 1 || inv.Attempts[0].ErrorType != "Boom" {
		t.Fatalf("failing call: %+v, %v, want one attempt with the function's error", inv, err)
	}
}

// A waiter whose announcement never comes (its controller died between
// storing the end and announcing it) still learns of the end from the
// state; one that finished before the wait began is found at once.
func TestAwaitWithoutAnnouncement(t *testing.T) {
	q := openQueue(t)
	ctx := clustertest.Context(t)
	done := Invocation{ID: requestid.New(), Function: "f", State: StateSucceeded, Result: []byte(`1`), Step: true}
	if err := q.put(ctx, done); err != nil {
		t.Fatal(err)
	}
	if inv, err := q.Await(ctx, done.ID); err != nil || inv.State != StateSucceeded {
		t.Fatalf("ended before the wait: %+v, %v", inv, err)
	}
	later := Invocation{ID: requestid.New(), Function: "f", State: StateRunning, Step: true}
	if err := q.put(ctx, later); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		later.State, later.Result = StateFailed, nil
		_ = q.put(context.Background(), later) // stored, never announced
	}()
	if inv, err := q.Await(ctx, later.ID); err != nil || inv.State != StateFailed {
		t.Fatalf("ended unannounced: %+v, %v", inv, err)
	}
}
