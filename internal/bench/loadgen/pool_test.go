package loadgen

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitFor polls cond until it holds or a generous bound passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Requests handed one after another reuse the senders started up front:
// no goroutine is started per request.
func TestSenderPoolReusesSenders(t *testing.T) {
	var ran atomic.Int64
	done := make(chan struct{})
	p := newSenderPool(8, 1000, func(job) { ran.Add(1); done <- struct{}{} })
	for i := range 500 {
		if !p.submit(context.Background(), job{i: i}) {
			t.Fatal("submit refused without a cancelled context")
		}
		<-done
	}
	p.close()
	if ran.Load() != 500 {
		t.Fatalf("ran %d jobs, want 500", ran.Load())
	}
	if n := p.started.Load(); n != 8 {
		t.Fatalf("started %d senders for 500 sequential requests, want the 8 started up front", n)
	}
}

// While requests are outstanding the grower adds senders ahead of need,
// but never more than the limit; beyond it a hand-off waits for a sender
// to come free.
func TestSenderPoolGrowsAheadUpToLimit(t *testing.T) {
	gate := make(chan struct{})
	var running atomic.Int64
	p := newSenderPool(2, 6, func(job) { running.Add(1); <-gate })
	ctx := context.Background()
	for i := range 3 {
		if !p.submit(ctx, job{i: i}) {
			t.Fatal("submit refused")
		}
	}
	waitFor(t, "three running jobs", func() bool { return running.Load() == 3 })
	// Two were started up front; the third request needed a sender the
	// grower added, and it keeps a spare one beyond that.
	waitFor(t, "an idle spare sender", func() bool { return p.idle.Load() >= 1 })
	for i := 3; i < 6; i++ {
		if !p.submit(ctx, job{i: i}) {
			t.Fatal("submit refused")
		}
	}
	waitFor(t, "six running jobs", func() bool { return running.Load() == 6 })
	if n := p.started.Load(); n != 6 {
		t.Fatalf("%d senders started, want the limit 6", n)
	}
	// All six senders are busy: the seventh hand-off must wait, and give
	// up when its context ends.
	cctx, cancel := context.WithCancel(ctx)
	refused := make(chan bool, 1)
	go func() { refused <- !p.submit(cctx, job{i: 6}) }()
	select {
	case <-refused:
		t.Fatal("a hand-off beyond the limit did not wait")
	default:
	}
	cancel()
	if !<-refused {
		t.Fatal("the waiting hand-off was taken although every sender was busy")
	}
	if n := p.started.Load(); n != 6 {
		t.Fatalf("%d senders started, limit 6", n)
	}
	// Freeing one sender lets the next hand-off through.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); p.submit(ctx, job{i: 7}) }()
	gate <- struct{}{}
	wg.Wait()
	waitFor(t, "the seventh job running", func() bool { return running.Load() == 7 })
	close(gate)
	p.close()
	if p.idle.Load() != 0 {
		t.Fatalf("%d senders still idle after close", p.idle.Load())
	}
}
