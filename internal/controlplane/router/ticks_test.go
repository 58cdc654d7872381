package router

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/function"
)

// isTicked reports whether Run reconciles the named function.
func (r *Router) isTicked(name string) bool {
	r.mu.RLock()
	st := r.fns[name]
	r.mu.RUnlock()
	r.amu.Lock()
	defer r.amu.Unlock()
	_, ok := r.ticked[st]
	return st != nil && ok
}

// isDue reports whether a tick at now reconciles the named function.
func (r *Router) isDue(name string, now time.Time) bool {
	r.mu.RLock()
	st := r.fns[name]
	r.mu.RUnlock()
	for _, due := range r.tickedStates(now) {
		if due == st {
			return true
		}
	}
	return false
}

func named(name string, fn function.Function) function.Function {
	fn.Name = name
	return fn
}

// A function with nothing to do stays out of the ticks; one with an idle
// instance is ticked until that instance is scaled down, then leaves.
func TestTicksOnlyFunctionsWithWork(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	r := newRouter(t, clk, Options{Tick: 10 * time.Millisecond}, fw)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)

	r.SetFunction(named("quiet", testFunction(1, nil)))
	r.SetFunction(named("warm", testFunction(1, func(s *function.Spec) { s.MinScale = 1 })))
	r.SetFunction(named("kpa", testFunction(1, func(s *function.Spec) { s.Autoscaler = "kpa" })))
	r.SetFunction(testFunction(1, nil)) // "f", idle timeout 1 s
	if r.isTicked("quiet") || r.isTicked("f") {
		t.Fatal("a function without instances, requests or minScale is ticked")
	}
	if !r.isTicked("warm") || !r.isTicked("kpa") {
		t.Fatal("a minScale function and a kpa function (it plans from history) must be ticked")
	}

	if res := await(t, clk, invokeAsync(r, context.Background())); res.err != nil {
		t.Fatal(res.err)
	}
	if !r.isTicked("f") {
		t.Fatal("a function with an idle instance is not ticked: it would never scale down")
	}
	// ... but not before its instance could expire (1 s idle timeout).
	if r.isDue("f", clk.Now().Add(900*time.Millisecond)) || !r.isDue("f", clk.Now().Add(time.Second)) {
		t.Fatal("f is not due exactly when its idle instance expires")
	}
	advanceUntil(t, clk, 10*time.Millisecond, "f to scale to zero", func() bool {
		st, _ := r.Status("f")
		return len(st.Instances) == 0 && st.Stopping == 0
	})
	eventually(t, "f to leave the ticks", func() bool { return !r.isTicked("f") })
	if r.isTicked("quiet") {
		t.Fatal("quiet was ticked")
	}
	// minScale holds through the ticks.
	if st, _ := r.Status("warm"); len(st.Instances) != 1 {
		t.Fatalf("warm has %d instances, want its minScale 1", len(st.Instances))
	}

	// Removed functions leave the ticks.
	r.RemoveFunction("warm")
	r.mu.RLock()
	n := len(r.fns)
	r.mu.RUnlock()
	r.amu.Lock()
	ticked := len(r.ticked)
	r.amu.Unlock()
	if n != 3 || ticked != 1 { // kpa only
		t.Fatalf("%d functions, %d ticked; want 3 and 1 (kpa)", n, ticked)
	}
}

// countingObserver records what the router publishes.
type countingObserver struct {
	mu        sync.Mutex
	instances int
	queue     int
	last      [3]int
}

func (o *countingObserver) ObserveInstances(_ string, ready, starting int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.instances++
	o.last[0], o.last[1] = ready, starting
}

func (o *countingObserver) ObserveQueue(_ string, depth int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.queue++
	o.last[2] = depth
}

func (o *countingObserver) get() (instances, queue int, last [3]int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.instances, o.queue, o.last
}

// The gauges are published when they change, and not again when they do
// not.
func TestObserveSkipsUnchangedGauges(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	obs := &countingObserver{}
	r := newRouter(t, clk, Options{Tick: 10 * time.Millisecond, Observer: obs}, fw)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	r.SetFunction(testFunction(1, func(s *function.Spec) { s.IdleTimeoutSeconds = 3600 }))
	if res := await(t, clk, invokeAsync(r, context.Background())); res.err != nil {
		t.Fatal(res.err)
	}
	eventually(t, "ready 1 published", func() bool { _, _, last := obs.get(); return last == [3]int{1, 0, 0} })
	inst, queue, _ := obs.get()
	// Reconciles that change nothing publish nothing.
	r.mu.RLock()
	st := r.fns["f"]
	r.mu.RUnlock()
	for range 10 {
		r.reconcile(st)
	}
	if i, q, _ := obs.get(); i != inst || q != queue {
		t.Fatalf("unchanged gauges published again: instances %d→%d, queue %d→%d calls", inst, i, queue, q)
	}
	// A change is published.
	r.Recycle("f")
	eventually(t, "ready 0 published", func() bool { _, _, last := obs.get(); return last == [3]int{0, 0, 0} })
}
