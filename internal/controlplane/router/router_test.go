package router

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/workerapi"
)

func testFunction(version int, mod func(*function.Spec)) function.Function {
	spec, err := function.Spec{Runtime: "python3", Handler: "app.handler", MaxScale: 20, IdleTimeoutSeconds: 1}.Normalize()
	if err != nil {
		panic(err)
	}
	if mod != nil {
		mod(&spec)
	}
	return function.Function{Name: "f", Version: version, Spec: spec}
}

type result struct {
	out Outcome
	err error
}

// invokeAsync runs an invocation in the background.
func invokeAsync(r *Router, ctx context.Context) <-chan result {
	ch := make(chan result, 1)
	go func() {
		out, err := r.Invoke(ctx, "f", workerapi.Invocation{})
		ch <- result{out, err}
	}()
	return ch
}

// await ticks the clock by 5 ms until the invocation ends.
func await(t *testing.T, clk *fakeClock, ch <-chan result) result {
	t.Helper()
	return awaitEvery(t, clk, 5*time.Millisecond, ch)
}

// awaitEvery ticks the clock by step until the invocation ends.
func awaitEvery(t *testing.T, clk *fakeClock, step time.Duration, ch <-chan result) result {
	t.Helper()
	var res result
	got := false
	advanceUntil(t, clk, step, "the invocation to end", func() bool {
		select {
		case res = <-ch:
			got = true
		default:
		}
		return got
	})
	return res
}

func TestColdThenWarm(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	fw.startDelay = 20 * time.Millisecond
	r := newRouter(t, clk, Options{}, fw)
	r.SetFunction(testFunction(1, nil))
	res := await(t, clk, invokeAsync(r, context.Background()))
	if res.err != nil {
		t.Fatal(res.err)
	}
	out := res.out
	if !out.Cold || out.Init != fw.startDelay || out.Wait < fw.startDelay || out.Worker != "w1" {
		t.Fatalf("first call: cold=%v init=%v wait=%v worker=%q, want cold on w1 with init %v", out.Cold, out.Init, out.Wait, out.Worker, fw.startDelay)
	}
	out2, err := r.Invoke(context.Background(), "f", workerapi.Invocation{ID: "2"})
	if err != nil {
		t.Fatal(err)
	}
	if out2.Cold || out2.Instance != out.Instance {
		t.Fatalf("second call cold=%v on %s, want warm on %s", out2.Cold, out2.Instance, out.Instance)
	}
	if n := fw.startedCount(); n != 1 {
		t.Fatalf("started %d instances, want 1", n)
	}
}

func TestUnknownFunction(t *testing.T) {
	clk := newFakeClock()
	r := newRouter(t, clk, Options{}, newFakeWorker(clk))
	_, err := r.Invoke(context.Background(), "nope", workerapi.Invocation{})
	if !errors.Is(err, ErrUnknownFunction) {
		t.Fatalf("err = %v, want ErrUnknownFunction", err)
	}
	if c, code := errdefs.Classify(err); c != errdefs.NotFound || code != "function_not_found" {
		t.Fatalf("class %s %s, want not-found function_not_found", c, code)
	}
}

func TestBurstScalesToMaxAndNobodyFails(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	fw.startDelay = 30 * time.Millisecond
	fw.release = make(chan struct{})
	r := newRouter(t, clk, Options{QueueSize: 500}, fw)
	r.SetFunction(testFunction(1, func(s *function.Spec) { s.MaxScale = 20 }))
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.Invoke(context.Background(), "f", workerapi.Invocation{ID: fmt.Sprint(i)}); err != nil {
				failed.Add(1)
				t.Error(err)
			}
		}()
	}
	advanceUntil(t, clk, 5*time.Millisecond, "20 instances", func() bool { return fw.liveCount() == 20 })
	close(fw.release)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed", failed.Load())
	}
	if fw.maxLive != 20 {
		t.Fatalf("max live instances = %d, want 20 (maxScale)", fw.maxLive)
	}
}

func TestQueueFull(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	fw.startDelay = time.Hour // nothing becomes ready
	r := newRouter(t, clk, Options{QueueSize: 2, StartTimeout: 2 * time.Hour, QueueTimeout: 2 * time.Hour}, fw)
	r.SetFunction(testFunction(1, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 2 {
		invokeAsync(r, ctx)
	}
	eventually(t, "two queued", func() bool { s, _ := r.Status("f"); return s.Queued == 2 })
	_, err := r.Invoke(context.Background(), "f", workerapi.Invocation{})
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("err = %v, want ErrQueueFull", err)
	}
	var oe *OverloadError
	if c, code := errdefs.Classify(err); c != errdefs.Overloaded || code != "queue_full" || !errors.As(err, &oe) || oe.RetryAfter() < time.Second {
		t.Fatalf("err %v: class %s %s, want overloaded queue_full with a retry-after of at least 1 s", err, c, code)
	}
}

func TestQueuedRequestLeavesOnCancel(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	fw.startDelay = time.Hour
	r := newRouter(t, clk, Options{StartTimeout: 2 * time.Hour}, fw)
	r.SetFunction(testFunction(1, nil))
	ctx, cancel := context.WithCancel(context.Background())
	ch := invokeAsync(r, ctx)
	eventually(t, "queued", func() bool { s, _ := r.Status("f"); return s.Queued == 1 })
	cancel()
	if res := <-ch; !errors.Is(res.err, context.Canceled) {
		t.Fatalf("err = %v, want context canceled", res.err)
	}
	if s, _ := r.Status("f"); s.Queued != 0 {
		t.Fatalf("queue depth %d after cancel, want 0", s.Queued)
	}
}

func TestQueueTimeout(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	fw.startDelay = time.Hour
	r := newRouter(t, clk, Options{StartTimeout: 2 * time.Hour, QueueTimeout: time.Second}, fw)
	r.SetFunction(testFunction(1, nil))
	res := await(t, clk, invokeAsync(r, context.Background()))
	if !errors.Is(res.err, ErrQueueTimeout) {
		t.Fatalf("err = %v, want ErrQueueTimeout", res.err)
	}
}

func TestStartFailureFailsWaiters(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	fw.startErr = &workerapi.InitError{Err: workerapi.FunctionError{Type: "ImportError", Message: "no module"}}
	r := newRouter(t, clk, Options{}, fw)
	r.SetFunction(testFunction(1, nil))
	res := await(t, clk, invokeAsync(r, context.Background()))
	var ie *workerapi.InitError
	if !errors.As(res.err, &ie) || ie.Err.Type != "ImportError" {
		t.Fatalf("err = %v, want the init error", res.err)
	}
}

func TestStartTimeoutIsStartFailed(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	fw.startDelay = time.Hour
	r := newRouter(t, clk, Options{StartTimeout: time.Second, QueueTimeout: time.Hour}, fw)
	r.SetFunction(testFunction(1, nil))
	res := await(t, clk, invokeAsync(r, context.Background()))
	if !errors.Is(res.err, ErrStartFailed) {
		t.Fatalf("err = %v, want ErrStartFailed", res.err)
	}
	if c, code := errdefs.Classify(res.err); c != errdefs.Unavailable || code != "start_failed" {
		t.Fatalf("class %s %s, want unavailable start_failed", c, code)
	}
	// The timed-out start was stopped on the worker.
	eventually(t, "the start cancelled on the worker", func() bool { return fw.startingCount() == 0 })
}

// TestStartFailureLogsOutput checks that a failed start with nobody
// waiting (minScale) still leaves the function's output where an operator
// looks: the server log, its end kept when it is long.
func TestStartFailureLogsOutput(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	output := strings.Repeat("noise\n", 1000) + "ImportError: no module named app\n"
	fw.startErr = &workerapi.InitError{Err: workerapi.FunctionError{Type: "Runtime.ImportModuleError", Message: "no module"}, Logs: []byte(output)}
	var buf syncBuffer
	r := newRouter(t, clk, Options{Logger: slog.New(slog.NewTextHandler(&buf, nil))}, fw)
	r.SetFunction(testFunction(1, func(s *function.Spec) { s.MinScale = 1 }))
	eventually(t, "a logged start failure", func() bool { return strings.Contains(buf.String(), "instance start failed") })
	line, _, _ := strings.Cut(buf.String()[strings.Index(buf.String(), "instance start failed"):], "\n")
	if !strings.Contains(line, `ImportError: no module named app\n`) || len(line) > 3*maxLoggedInitOutput {
		t.Errorf("log line of %d bytes lacks the end of the init output: %.300s", len(line), line)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestScaleToZeroAndMinScale(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	r := newRouter(t, clk, Options{Tick: 10 * time.Millisecond}, fw)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	r.SetFunction(testFunction(1, nil)) // idle timeout 1 s
	if res := await(t, clk, invokeAsync(r, context.Background())); res.err != nil {
		t.Fatal(res.err)
	}
	if fw.liveCount() != 1 {
		t.Fatalf("live = %d, want 1", fw.liveCount())
	}
	advanceUntil(t, clk, 10*time.Millisecond, "scale to zero", func() bool { return fw.liveCount() == 0 })

	r.SetFunction(testFunction(1, func(s *function.Spec) { s.MinScale = 2 }))
	advanceUntil(t, clk, 10*time.Millisecond, "min scale 2", func() bool { return fw.liveCount() == 2 })
	// Well past the idle timeout, with ticks all along, minScale holds.
	end := clk.Now().Add(3 * time.Second)
	advanceUntil(t, clk, 10*time.Millisecond, "3 s of ticks", func() bool { return !clk.Now().Before(end) })
	if fw.liveCount() != 2 {
		t.Fatalf("live = %d after idle timeout, want minScale 2", fw.liveCount())
	}
}

func TestNewVersionTakesNewRequestsOldDrains(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	fw.release = make(chan struct{})
	r := newRouter(t, clk, Options{}, fw)
	r.SetFunction(testFunction(1, nil))
	oldDone := invokeAsync(r, context.Background())
	eventually(t, "v1 busy", func() bool { s, _ := r.Status("f"); return len(s.Instances) == 1 && s.Instances[0].InFlight == 1 })
	r.SetFunction(testFunction(2, func(s *function.Spec) { s.Env = map[string]string{"V": "2"} }))
	// The call running on v1 is not v2's demand: v2 starts for the new call.
	newDone := invokeAsync(r, context.Background())
	eventually(t, "v2 started", func() bool { return fw.startedCount() == 2 })
	close(fw.release)
	if o := <-oldDone; o.err != nil || o.out.Version != 1 {
		t.Fatalf("in-flight call finished on version %d (%v), want 1", o.out.Version, o.err)
	}
	if o := <-newDone; o.err != nil || o.out.Version != 2 {
		t.Fatalf("new call ran on version %d (%v), want 2", o.out.Version, o.err)
	}
	eventually(t, "v1 instance stopped", func() bool { return fw.liveCount() == 1 })
}

func TestConcurrencyPacksOneInstance(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	fw.release = make(chan struct{})
	r := newRouter(t, clk, Options{}, fw)
	r.SetFunction(testFunction(1, func(s *function.Spec) { s.Runtime = "nodejs"; s.Concurrency = 4 }))
	var chans []<-chan result
	for range 4 {
		chans = append(chans, invokeAsync(r, context.Background()))
	}
	eventually(t, "4 in flight", func() bool {
		s, _ := r.Status("f")
		return len(s.Instances) == 1 && s.Instances[0].InFlight == 4
	})
	close(fw.release)
	for _, ch := range chans {
		if res := <-ch; res.err != nil {
			t.Error(res.err)
		}
	}
	if n := fw.startedCount(); n != 1 {
		t.Fatalf("started %d instances for 4 events at concurrency 4, want 1", n)
	}
}

func TestCrashedInstanceReplaced(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	r := newRouter(t, clk, Options{}, fw)
	r.SetFunction(testFunction(1, func(s *function.Spec) { s.MinScale = 1 }))
	eventually(t, "min scale", func() bool { s, _ := r.Status("f"); return len(s.Instances) == 1 })
	var id string
	fw.mu.Lock()
	for k := range fw.live {
		id = k
	}
	delete(fw.live, id)
	fw.mu.Unlock()
	r.InstanceExited(workerapi.Event{Kind: workerapi.InstanceExited, Worker: "w1", Function: "f", Instance: id})
	eventually(t, "replacement", func() bool { return fw.liveCount() == 1 && fw.startedCount() == 2 })
}

func TestRemoveFunctionFailsWaitersAndCancelsStarts(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	fw.startDelay = time.Hour
	r := newRouter(t, clk, Options{StartTimeout: 2 * time.Hour}, fw)
	r.SetFunction(testFunction(1, nil))
	ch := invokeAsync(r, context.Background())
	eventually(t, "queued", func() bool { s, _ := r.Status("f"); return s.Queued == 1 })
	r.RemoveFunction("f")
	if res := <-ch; !errors.Is(res.err, ErrFunctionRemoved) {
		t.Fatalf("err = %v, want ErrFunctionRemoved", res.err)
	}
	eventually(t, "the start cancelled", func() bool { return fw.startingCount() == 0 })
}

func TestShutdownWaitsForInflight(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	fw.release = make(chan struct{})
	r := newRouter(t, clk, Options{}, fw)
	r.SetFunction(testFunction(1, nil))
	done := invokeAsync(r, context.Background())
	eventually(t, "in flight", func() bool { s, _ := r.Status("f"); return len(s.Instances) == 1 && s.Instances[0].InFlight == 1 })
	shut := make(chan error, 1)
	go func() { shut <- r.Shutdown(context.Background()) }()
	eventually(t, "draining", r.isDraining)
	if _, err := r.Invoke(context.Background(), "f", workerapi.Invocation{}); !errors.Is(err, ErrShuttingDown) {
		t.Fatalf("invoke during shutdown: %v, want ErrShuttingDown", err)
	}
	select {
	case <-shut:
		t.Fatal("shutdown returned with an invocation in flight")
	default:
	}
	close(fw.release)
	if res := <-done; res.err != nil {
		t.Fatal(res.err)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if fw.liveCount() != 0 {
		t.Fatalf("%d instances alive after shutdown", fw.liveCount())
	}
}

// TestShutdownCancelsPendingStarts: a start in progress when the router
// shuts down is cancelled on the worker, and Shutdown returns only after
// the router's goroutines ended.
func TestShutdownCancelsPendingStarts(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	fw.startDelay = time.Hour
	r := newRouter(t, clk, Options{StartTimeout: 2 * time.Hour}, fw)
	r.SetFunction(testFunction(1, func(s *function.Spec) { s.MinScale = 3 }))
	eventually(t, "3 starts", func() bool { return fw.startingCount() == 3 })
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	// No ticking clock: only cancellation can have ended the starts.
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if len(fw.starting) != 0 || fw.cancelled != 3 {
		t.Fatalf("after Shutdown: %d starts still running, %d cancelled; want 0 and 3", len(fw.starting), fw.cancelled)
	}
}

func TestBrokenMinScaleBacksOff(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	fw.startErr = errors.New("boom")
	r := newRouter(t, clk, Options{Tick: 10 * time.Millisecond}, fw)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	r.SetFunction(testFunction(1, func(s *function.Spec) { s.MinScale = 1 }))
	var at []time.Time
	advanceUntil(t, clk, 10*time.Millisecond, "4 start attempts", func() bool {
		fw.mu.Lock()
		defer fw.mu.Unlock()
		at = append(at[:0], fw.startTimes...)
		return len(at) >= 4
	})
	// Each attempt waits for the backoff (250 ms, 500 ms, 1 s): a tight
	// loop would make an attempt per tick.
	for i, want := range []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second} {
		if gap := at[i+1].Sub(at[i]); gap < want {
			t.Errorf("attempt %d came %v after the previous one, want at least %v", i+2, gap, want)
		}
	}
	// A request still gets an attempt of its own right away.
	eventually(t, "no start in progress", func() bool { s, _ := r.Status("f"); return s.Starting == 0 })
	fw.mu.Lock()
	before := len(fw.startVersions)
	fw.mu.Unlock()
	if res := <-invokeAsync(r, context.Background()); res.err == nil {
		t.Fatal("invoke of a broken function succeeded")
	}
	fw.mu.Lock()
	after := len(fw.startVersions)
	fw.mu.Unlock()
	if after == before {
		t.Fatal("a waiting request did not trigger a start during backoff")
	}
}

// flakyWorker fails the first invocation as undelivered.
type flakyWorker struct {
	*fakeWorker
	failed atomic.Bool
}

func (f *flakyWorker) Invoke(ctx context.Context, id string, inv workerapi.Invocation) (workerapi.Result, error) {
	if f.failed.CompareAndSwap(false, true) {
		f.mu.Lock()
		delete(f.live, id)
		f.mu.Unlock()
		return workerapi.Result{}, &workerapi.Failure{Kind: workerapi.FailureNotDelivered, Message: "died idle"}
	}
	return f.fakeWorker.Invoke(ctx, id, inv)
}

func TestUndeliveredEventRetried(t *testing.T) {
	clk := newFakeClock()
	fw := &flakyWorker{fakeWorker: newFakeWorker(clk)}
	r := newRouter(t, clk, Options{}, fw)
	r.SetFunction(testFunction(1, nil))
	res := <-invokeAsync(r, context.Background())
	if res.err != nil {
		t.Fatalf("undelivered event was not retried: %v", res.err)
	}
	if n := fw.startedCount(); n != 2 || res.out.Instance != "w1-i2" {
		t.Fatalf("ran on %s after %d starts, want a second instance", res.out.Instance, n)
	}
}

func TestRecycle(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	fw.release = make(chan struct{})
	r := newRouter(t, clk, Options{}, fw)
	r.SetFunction(testFunction(1, func(s *function.Spec) { s.MinScale = 0 }))
	done := invokeAsync(r, context.Background())
	eventually(t, "busy", func() bool { s, _ := r.Status("f"); return len(s.Instances) == 1 && s.Instances[0].InFlight == 1 })
	stopped, pending, ok := r.Recycle("f")
	if !ok || stopped != 0 || pending != 1 {
		t.Fatalf("Recycle = %d, %d, %v; want 0 stopped, 1 pending", stopped, pending, ok)
	}
	close(fw.release)
	first := <-done
	eventually(t, "recycled", func() bool { return fw.liveCount() == 0 })
	res := <-invokeAsync(r, context.Background())
	if res.err != nil {
		t.Fatal(res.err)
	}
	if !res.out.Cold || res.out.Instance == first.out.Instance {
		t.Fatalf("after recycle: cold=%v on %s (before: %s), want a new cold instance", res.out.Cold, res.out.Instance, first.out.Instance)
	}
}

// A function on the KPA policy keeps its instance through the stable window
// and the scale-to-zero grace, where the immediate policy would have
// stopped it after its 1 s idle timeout, and reaches zero after them; a
// redeploy to the immediate policy switches policies.
func TestKPAFunctionScalesByWindows(t *testing.T) {
	clk := newFakeClock()
	fw := newFakeWorker(clk)
	r := newRouter(t, clk, Options{Tick: 100 * time.Millisecond}, fw)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	r.SetFunction(testFunction(1, func(s *function.Spec) { s.Autoscaler = function.AutoscalerKPA }))
	if res := await(t, clk, invokeAsync(r, context.Background())); res.err != nil {
		t.Fatal(res.err)
	}
	end := clk.Now().Add(20 * time.Second) // far past the idle timeout, inside the windows
	advanceUntil(t, clk, 100*time.Millisecond, "20 s of ticks", func() bool { return !clk.Now().Before(end) })
	if n := fw.liveCount(); n != 1 {
		t.Fatalf("live = %d 20 s after the only call under KPA, want 1", n)
	}
	advanceUntil(t, clk, 100*time.Millisecond, "KPA scale to zero", func() bool { return fw.liveCount() == 0 })

	if res := await(t, clk, invokeAsync(r, context.Background())); res.err != nil {
		t.Fatal(res.err)
	}
	r.SetFunction(testFunction(1, func(s *function.Spec) { s.Autoscaler = function.AutoscalerImmediate }))
	end = clk.Now().Add(3 * time.Second)
	advanceUntil(t, clk, 100*time.Millisecond, "immediate scale to zero", func() bool { return fw.liveCount() == 0 })
	if clk.Now().After(end) {
		t.Fatalf("immediate policy took until %v to stop an instance idle for 1 s", clk.Now())
	}
}
