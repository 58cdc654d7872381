package router

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/workerapi"
)

// TestRedeployStorm redeploys a function 60 times, faster than an
// instance starts, while 8 clients invoke it in a loop. Every invocation
// must complete (the previous version's busy instances serve until a new
// version is ready), superseded starts must be cancelled on the worker
// instead of piling up (on a real host they share its CPU, so each makes
// the others slower), and afterwards the newest version serves.
func TestRedeployStorm(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	fw.startDelay = 50 * time.Millisecond
	fw.slowWithLoad = true
	fw.execTime = 5 * time.Millisecond
	const maxScale = 4
	r := newRouter(t, clk, Options{QueueTimeout: 10 * time.Second}, fw)
	spec := func(s *function.Spec) { s.MaxScale = maxScale }
	r.SetFunction(testFunction(1, spec))
	stop := ticking(clk, time.Millisecond)
	defer stop()

	var wg sync.WaitGroup
	var storming atomic.Bool
	var duringStorm atomic.Int64
	errs := make(chan error, 8*25)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				_, err := r.Invoke(context.Background(), "f", workerapi.Invocation{})
				if err != nil {
					errs <- err
				} else if storming.Load() {
					duringStorm.Add(1)
				}
			}
		}()
	}
	// Let the first version come up and serve, then the storm.
	eventually(t, "version 1 serving", func() bool { s, _ := r.Status("f"); return len(s.Instances) > 0 })
	const last = 61
	storming.Store(true)
	for v := 2; v <= last; v++ {
		clk.sleep(10 * time.Millisecond)
		r.SetFunction(testFunction(v, spec))
	}
	storming.Store(false)
	wg.Wait()
	// No version after the first became ready during the storm: the
	// first one's instances kept serving. (At 5 ms per call on 4
	// instances, the storm has room for ~480 calls.)
	if n := duringStorm.Load(); n < 50 {
		t.Errorf("only %d invocations completed during the storm", n)
	}
	close(errs)
	for err := range errs {
		t.Errorf("invocation during the storm: %v", err)
	}
	res := <-invokeAsync(r, context.Background())
	if res.err != nil || res.out.Version != last {
		t.Fatalf("after the storm: version %d, %v; want version %d", res.out.Version, res.err, last)
	}
	eventually(t, "no start left running", func() bool { return fw.startingCount() == 0 })
	fw.mu.Lock()
	defer fw.mu.Unlock()
	t.Logf("%d starts, %d cancelled, at most %d at once", len(fw.startVersions), fw.cancelled, fw.maxStarting)
	if fw.cancelled == 0 {
		t.Error("no superseded start was cancelled")
	}
	// Cancelled starts end a moment after the next version's starts
	// begin, so a few versions' worth may overlap on a busy host; without
	// cancellation they number in the hundreds.
	if fw.maxStarting > 4*maxScale {
		t.Errorf("%d starts ran at once; superseded starts pile up (maxScale %d)", fw.maxStarting, maxScale)
	}
}

// TestSupersededStartCancelled: deploying a new version stops the older
// version's start on the worker (StopInstance on the starting id).
func TestSupersededStartCancelled(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	fw.startDelay = time.Hour
	r := newRouter(t, clk, Options{StartTimeout: 2 * time.Hour, QueueTimeout: 2 * time.Hour}, fw)
	r.SetFunction(testFunction(1, nil))
	ch := invokeAsync(r, context.Background())
	eventually(t, "v1 starting", func() bool { return fw.startingCount() == 1 })
	fw.mu.Lock()
	fw.startDelay = 10 * time.Millisecond // v2 starts quickly
	fw.mu.Unlock()
	r.SetFunction(testFunction(2, nil))
	eventually(t, "v1's start cancelled", func() bool {
		fw.mu.Lock()
		defer fw.mu.Unlock()
		return fw.cancelled == 1 && len(fw.starting) == 1
	})
	fw.mu.Lock()
	for _, s := range fw.starting {
		if s.inst.Version != 2 {
			t.Errorf("the start left is of version %d, want 2", s.inst.Version)
		}
	}
	fw.mu.Unlock()
	// The waiting request is served by the new version.
	res := await(t, clk, ch)
	if res.err != nil || res.out.Version != 2 {
		t.Fatalf("waiting request: version %d, %v; want version 2", res.out.Version, res.err)
	}
}

// TestBackoffIsPerVersion: a broken version's start backoff does not hold
// back the next version, and a request to it gets its result.
func TestBackoffIsPerVersion(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	fw.startErr = errors.New("boom")
	r := newRouter(t, clk, Options{}, fw)
	r.SetFunction(testFunction(1, func(s *function.Spec) { s.MinScale = 1 }))
	eventually(t, "v1 failed and backing off", func() bool {
		r.mu.RLock()
		st := r.fns["f"]
		r.mu.RUnlock()
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.failures == 1 && len(st.starts) == 0
	})
	fw.mu.Lock()
	fw.startErr = nil
	fw.mu.Unlock()
	// The clock does not move: v1's backoff has not run out.
	r.SetFunction(testFunction(2, func(s *function.Spec) { s.MinScale = 1 }))
	eventually(t, "v2 started during v1's backoff", func() bool { return fw.startedCount() == 1 })
	res := <-invokeAsync(r, context.Background())
	if res.err != nil || res.out.Version != 2 {
		t.Fatalf("invoke: version %d, %v; want version 2", res.out.Version, res.err)
	}
}
