package router

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/controlplane/placement"
	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/workerapi"
)

func workerCounts(r *Router) map[string]int {
	s, _ := r.Status("f")
	n := map[string]int{}
	for _, in := range s.Instances {
		n[in.Worker]++
	}
	return n
}

// TestPlacementFillsTheAppsWorkerFirst: two workers of 256 MB and a
// 128 MB function: the default policy puts instances where the app
// already runs until that worker is full, then on the other; with both
// full a start fails with no_capacity instead of overcommitting.
func TestPlacementFillsTheAppsWorkerFirst(t *testing.T) {
	clk := newFakeClock()
	w1, w2 := newFakeWorker(clk), newFakeWorker(clk)
	w2.id = "w2"
	for _, w := range []*fakeWorker{w1, w2} {
		w.capacityMB = 256
		w.release = make(chan struct{})
	}
	r := newRouter(t, clk, Options{}, w1, w2)
	if got := r.Workers(); len(got) != 2 || got[0] != "w1" || got[1] != "w2" {
		t.Fatalf("Workers = %v", got)
	}
	r.SetFunction(testFunction(1, func(s *function.Spec) { s.MemoryMB = 128; s.MaxScale = 5 }))
	var chans []<-chan result
	for range 4 {
		chans = append(chans, invokeAsync(r, context.Background()))
		// One at a time, so that each placement sees the one before.
		eventually(t, "the instance busy", func() bool {
			s, _ := r.Status("f")
			return len(s.Instances) == len(chans) && s.Starting == 0
		})
	}
	if n := workerCounts(r); n["w1"] != 2 || n["w2"] != 2 {
		t.Fatalf("instances per worker %v, want 2 on each", n)
	}
	res := <-invokeAsync(r, context.Background())
	if !errors.Is(res.err, placement.ErrNoCapacity) || !errors.Is(res.err, ErrStartFailed) {
		t.Fatalf("fifth instance: %v, want start_failed for no capacity", res.err)
	}
	if _, code := errdefs.Classify(res.err); code != "no_capacity" {
		t.Errorf("code %q for a start no worker had room for, want no_capacity", code)
	}
	close(w1.release)
	close(w2.release)
	for _, ch := range chans {
		if res := <-ch; res.err != nil {
			t.Fatal(res.err)
		}
	}
}

// TestRemoveWorker: an invocation running on a removed worker fails as a
// worker failure, its instances leave the router's view, and requests go
// to the other worker.
func TestRemoveWorker(t *testing.T) {
	clk := newFakeClock()
	w1, w2 := newFakeWorker(clk), newFakeWorker(clk)
	w2.id = "w2"
	w1.release = make(chan struct{}) // never released: only the removal ends it
	r := newRouter(t, clk, Options{Placement: &placement.RoundRobin{}}, w1, w2)
	r.SetFunction(testFunction(1, nil))
	onW1 := invokeAsync(r, context.Background())
	eventually(t, "busy on w1", func() bool { return workerCounts(r)["w1"] == 1 })

	if !r.RemoveWorker("w1") || r.RemoveWorker("w1") {
		t.Fatal("RemoveWorker: want true once, then false")
	}
	res := <-onW1
	var failure *workerapi.Failure
	if !errors.As(res.err, &failure) || failure.Kind != workerapi.FailureWorkerLost {
		t.Fatalf("invocation on the removed worker: %v, want a worker failure", res.err)
	}
	if c, _ := errdefs.Classify(res.err); c != errdefs.Unavailable {
		t.Fatalf("class %s, want unavailable", c)
	}
	if n := workerCounts(r); n["w1"] != 0 {
		t.Fatalf("instances per worker %v after removing w1", n)
	}
	next := <-invokeAsync(r, context.Background())
	if next.err != nil || next.out.Worker != "w2" {
		t.Fatalf("next invocation on %q: %v; want w2", next.out.Worker, next.err)
	}
}

// TestRemoveWorkerRetriesIdempotent: the event of an idempotent function
// whose worker is lost while it runs is run again on another worker.
func TestRemoveWorkerRetriesIdempotent(t *testing.T) {
	clk := newFakeClock()
	w1, w2 := newFakeWorker(clk), newFakeWorker(clk)
	w2.id = "w2"
	w1.release = make(chan struct{}) // never released: only the removal ends it
	r := newRouter(t, clk, Options{Placement: &placement.RoundRobin{}}, w1, w2)
	r.SetFunction(testFunction(1, func(s *function.Spec) { s.Idempotent = true }))
	onW1 := invokeAsync(r, context.Background())
	eventually(t, "busy on w1", func() bool { return workerCounts(r)["w1"] == 1 })
	r.RemoveWorker("w1")
	res := <-onW1
	if res.err != nil || res.out.Worker != "w2" {
		t.Fatalf("idempotent invocation after its worker was lost: on %q, %v; want a retry on w2", res.out.Worker, res.err)
	}
}

// TestRemoveWorkerRetriesItsStarts: a start placed on a worker that is
// removed is cancelled and placed again, and the waiting request is
// served there.
func TestRemoveWorkerRetriesItsStarts(t *testing.T) {
	clk := newFakeClock()
	w1, w2 := newFakeWorker(clk), newFakeWorker(clk)
	w2.id = "w2"
	w1.startDelay = time.Hour
	r := newRouter(t, clk, Options{StartTimeout: 2 * time.Hour, QueueTimeout: 2 * time.Hour}, w1, w2)
	r.SetFunction(testFunction(1, nil))
	ch := invokeAsync(r, context.Background())
	eventually(t, "a start on w1", func() bool { return w1.startingCount() == 1 })
	r.RemoveWorker("w1")
	res := <-ch
	if res.err != nil || res.out.Worker != "w2" {
		t.Fatalf("waiting request: worker %q, %v; want w2", res.out.Worker, res.err)
	}
	if w1.startingCount() != 0 {
		t.Fatal("the start on the removed worker was not stopped")
	}
}

func TestAddWorkerTwice(t *testing.T) {
	clk := newFakeClock()
	w := newFakeWorker(clk)
	r := newRouter(t, clk, Options{}, w)
	if err := r.AddWorker(context.Background(), w); !errors.Is(err, ErrWorkerExists) {
		t.Fatalf("second AddWorker: %v, want ErrWorkerExists", err)
	}
}

// TestNoWorkers: without workers a request fails at once with
// start_failed instead of waiting for the queue timeout.
func TestNoWorkers(t *testing.T) {
	clk := newFakeClock()
	r := newRouter(t, clk, Options{QueueTimeout: time.Hour})
	r.SetFunction(testFunction(1, nil))
	res := <-invokeAsync(r, context.Background())
	if !errors.Is(res.err, placement.ErrNoCapacity) {
		t.Fatalf("err = %v, want no capacity", res.err)
	}
}

// A start that cannot reach its worker (gone, not yet removed) is not the
// function's failure: the request is served by an instance started on
// another worker, placement passes the unreachable one over, and the
// cluster is told to check it.
func TestStartOnUnreachableWorkerGoesElsewhere(t *testing.T) {
	clk := newFakeClock()
	dead, alive := newFakeWorker(clk), newFakeWorker(clk)
	dead.id, alive.id = "dead", "alive"
	dead.startErr = fmt.Errorf("start instance: %w", workerapi.ErrWorkerUnavailable)
	var mu sync.Mutex
	var suspects []string
	r := newRouter(t, clk, Options{Placement: &placement.RoundRobin{}, OnWorkerUnreachable: func(id string) {
		mu.Lock()
		suspects = append(suspects, id)
		mu.Unlock()
	}}, dead, alive)
	r.SetFunction(testFunction(1, func(s *function.Spec) { s.MaxScale = 4 }))
	for range 4 {
		res := <-invokeAsync(r, context.Background())
		if res.err != nil {
			t.Fatalf("invoke with one worker unreachable: %v", res.err)
		}
		if res.out.Worker != "alive" {
			t.Fatalf("ran on %s", res.out.Worker)
		}
		if _, _, ok := r.Recycle("f"); !ok {
			t.Fatal("recycle")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(suspects) == 0 || suspects[0] != "dead" {
		t.Fatalf("workers suspected: %v, want dead", suspects)
	}
	if n := dead.startedCount(); n != 0 {
		t.Fatalf("%d instances started on the unreachable worker", n)
	}
}
