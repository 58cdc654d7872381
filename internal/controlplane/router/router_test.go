package router

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/workerapi"
)

// fakeWorker starts instances after a delay and runs invocations by
// waiting on a release channel, so tests control timing.
type fakeWorker struct {
	startDelay time.Duration
	startErr   error
	release    chan struct{} // nil: invocations return at once

	mu       sync.Mutex
	started  int
	stopped  map[string]bool
	live     map[string]bool
	maxLive  int
	invoked  map[string]int
	versions map[string]int
	insts    map[string]workerapi.Instance
	seq      atomic.Int64
	events   chan workerapi.Event
}

func newFakeWorker() *fakeWorker {
	return &fakeWorker{stopped: map[string]bool{}, live: map[string]bool{}, invoked: map[string]int{},
		versions: map[string]int{}, insts: map[string]workerapi.Instance{}, events: make(chan workerapi.Event, 16)}
}

func (f *fakeWorker) StartInstance(ctx context.Context, spec workerapi.InstanceSpec) (workerapi.Instance, error) {
	select {
	case <-time.After(f.startDelay):
	case <-ctx.Done():
		return workerapi.Instance{}, ctx.Err()
	}
	if f.startErr != nil {
		return workerapi.Instance{}, f.startErr
	}
	id := fmt.Sprintf("i%d", f.seq.Add(1))
	f.mu.Lock()
	f.started++
	f.live[id] = true
	f.versions[id] = spec.Version
	f.maxLive = max(f.maxLive, len(f.live))
	capacity := spec.Spec.Concurrency
	in := workerapi.Instance{ID: id, Worker: "fake", Function: spec.Function, Version: spec.Version, State: workerapi.Ready, Capacity: capacity, InitDuration: f.startDelay}
	f.insts[id] = in
	f.mu.Unlock()
	return in, nil
}

// WaitInstance returns the instance StartInstance started (this fake
// starts synchronously).
func (f *fakeWorker) WaitInstance(_ context.Context, id string) (workerapi.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	in, ok := f.insts[id]
	if !ok {
		return workerapi.Instance{}, workerapi.ErrUnknownInstance
	}
	return in, nil
}

func (f *fakeWorker) Instances(context.Context) ([]workerapi.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []workerapi.Instance
	for id := range f.live {
		out = append(out, f.insts[id])
	}
	return out, nil
}

func (f *fakeWorker) StopInstance(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped[id] = true
	delete(f.live, id)
	return nil
}

func (f *fakeWorker) Invoke(ctx context.Context, id string, inv workerapi.Invocation) (workerapi.Result, error) {
	f.mu.Lock()
	f.invoked[id]++
	v := f.versions[id]
	f.mu.Unlock()
	if f.release != nil {
		select {
		case <-f.release:
		case <-ctx.Done():
			return workerapi.Result{}, &workerapi.Failure{Kind: workerapi.FailureTimeout, Message: "timeout"}
		}
	}
	return workerapi.Result{Payload: []byte(fmt.Sprintf(`{"instance":%q,"version":%d}`, id, v))}, nil
}

func (f *fakeWorker) Events(context.Context, uint64) (<-chan workerapi.Event, error) {
	return f.events, nil
}
func (f *fakeWorker) Info(context.Context) (workerapi.Info, error) {
	return workerapi.Info{ID: "fake", Isolation: "none"}, nil
}
func (f *fakeWorker) Images(context.Context) ([]workerapi.Image, error) {
	return nil, workerapi.ErrNoImageStore
}
func (f *fakeWorker) CheckImage(context.Context, string) error { return workerapi.ErrNoImageStore }
func (f *fakeWorker) ImportImage(context.Context, string, io.Reader) (workerapi.Image, error) {
	return workerapi.Image{}, workerapi.ErrNoImageStore
}
func (f *fakeWorker) RemoveImage(context.Context, string, []string) error {
	return workerapi.ErrNoImageStore
}

func (f *fakeWorker) liveCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.live)
}

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

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestColdThenWarm(t *testing.T) {
	fw := newFakeWorker()
	fw.startDelay = 20 * time.Millisecond
	r := New(fw, Options{})
	r.SetFunction(testFunction(1, nil))
	out, err := r.Invoke(context.Background(), "f", workerapi.Invocation{ID: "1"})
	if err != nil {
		t.Fatal(err)
	}
	if !out.Cold || out.Init != fw.startDelay || out.Wait < fw.startDelay {
		t.Fatalf("first call: cold=%v init=%v wait=%v, want cold with init %v", out.Cold, out.Init, out.Wait, fw.startDelay)
	}
	out2, err := r.Invoke(context.Background(), "f", workerapi.Invocation{ID: "2"})
	if err != nil {
		t.Fatal(err)
	}
	if out2.Cold || out2.Instance != out.Instance {
		t.Fatalf("second call cold=%v on %s, want warm on %s", out2.Cold, out2.Instance, out.Instance)
	}
	if fw.started != 1 {
		t.Fatalf("started %d instances, want 1", fw.started)
	}
}

func TestUnknownFunction(t *testing.T) {
	r := New(newFakeWorker(), Options{})
	if _, err := r.Invoke(context.Background(), "nope", workerapi.Invocation{}); !errors.Is(err, ErrUnknownFunction) {
		t.Fatalf("err = %v, want ErrUnknownFunction", err)
	}
}

func TestBurstScalesToMaxAndNobodyFails(t *testing.T) {
	fw := newFakeWorker()
	fw.startDelay = 30 * time.Millisecond
	fw.release = make(chan struct{})
	r := New(fw, Options{QueueSize: 500})
	r.SetFunction(testFunction(1, func(s *function.Spec) { s.MaxScale = 20 }))
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.Invoke(context.Background(), "f", workerapi.Invocation{ID: fmt.Sprint(i)}); err != nil {
				failed.Add(1)
				t.Error(err)
			}
		}()
	}
	eventually(t, "20 instances", func() bool { return fw.liveCount() == 20 })
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
	fw := newFakeWorker()
	fw.startDelay = time.Hour // nothing ever becomes ready
	r := New(fw, Options{QueueSize: 2, StartTimeout: time.Hour})
	r.SetFunction(testFunction(1, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 0; i < 2; i++ {
		go func() { _, _ = r.Invoke(ctx, "f", workerapi.Invocation{}) }()
	}
	eventually(t, "two queued", func() bool { s, _ := r.Status("f"); return s.Queued == 2 })
	if _, err := r.Invoke(context.Background(), "f", workerapi.Invocation{}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("err = %v, want ErrQueueFull", err)
	}
}

func TestQueuedRequestLeavesOnCancel(t *testing.T) {
	fw := newFakeWorker()
	fw.startDelay = time.Hour
	r := New(fw, Options{StartTimeout: time.Hour})
	r.SetFunction(testFunction(1, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := r.Invoke(ctx, "f", workerapi.Invocation{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if s, _ := r.Status("f"); s.Queued != 0 {
		t.Fatalf("queue depth %d after cancel, want 0", s.Queued)
	}
}

func TestStartFailureFailsWaiters(t *testing.T) {
	fw := newFakeWorker()
	fw.startErr = &workerapi.InitError{Err: workerapi.FunctionError{Type: "ImportError", Message: "no module"}}
	r := New(fw, Options{})
	r.SetFunction(testFunction(1, nil))
	_, err := r.Invoke(context.Background(), "f", workerapi.Invocation{})
	var ie *workerapi.InitError
	if !errors.As(err, &ie) || ie.Err.Type != "ImportError" {
		t.Fatalf("err = %v, want the init error", err)
	}
}

// TestStartFailureLogsOutput checks that a failed start with nobody
// waiting (minScale) still leaves the function's output where an operator
// looks: the server log, its end kept when it is long.
func TestStartFailureLogsOutput(t *testing.T) {
	fw := newFakeWorker()
	output := strings.Repeat("noise\n", 1000) + "ImportError: no module named app\n"
	fw.startErr = &workerapi.InitError{Err: workerapi.FunctionError{Type: "Runtime.ImportModuleError", Message: "no module"}, Logs: []byte(output)}
	var buf syncBuffer
	r := New(fw, Options{Logger: slog.New(slog.NewTextHandler(&buf, nil)), Tick: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
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
	fw := newFakeWorker()
	r := New(fw, Options{Tick: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	r.SetFunction(testFunction(1, nil)) // idle timeout 1 s
	if _, err := r.Invoke(context.Background(), "f", workerapi.Invocation{}); err != nil {
		t.Fatal(err)
	}
	if fw.liveCount() != 1 {
		t.Fatalf("live = %d, want 1", fw.liveCount())
	}
	eventually(t, "scale to zero", func() bool { return fw.liveCount() == 0 })

	r.SetFunction(testFunction(1, func(s *function.Spec) { s.MinScale = 2 }))
	eventually(t, "min scale 2", func() bool { return fw.liveCount() == 2 })
	time.Sleep(1200 * time.Millisecond)
	if fw.liveCount() != 2 {
		t.Fatalf("live = %d after idle timeout, want minScale 2", fw.liveCount())
	}
}

func TestNewVersionTakesNewRequestsOldDrains(t *testing.T) {
	fw := newFakeWorker()
	fw.release = make(chan struct{})
	r := New(fw, Options{})
	r.SetFunction(testFunction(1, nil))
	oldDone := make(chan Outcome, 1)
	go func() {
		out, err := r.Invoke(context.Background(), "f", workerapi.Invocation{})
		if err != nil {
			t.Error(err)
		}
		oldDone <- out
	}()
	eventually(t, "v1 busy", func() bool { s, _ := r.Status("f"); return len(s.Instances) == 1 && s.Instances[0].InFlight == 1 })
	r.SetFunction(testFunction(2, func(s *function.Spec) { s.Env = map[string]string{"V": "2"} }))
	newDone := make(chan Outcome, 1)
	go func() {
		out, err := r.Invoke(context.Background(), "f", workerapi.Invocation{})
		if err != nil {
			t.Error(err)
		}
		newDone <- out
	}()
	eventually(t, "v2 started", func() bool { fw.mu.Lock(); defer fw.mu.Unlock(); return fw.started == 2 })
	close(fw.release)
	if o := <-oldDone; o.Version != 1 {
		t.Fatalf("in-flight call finished on version %d, want 1", o.Version)
	}
	if o := <-newDone; o.Version != 2 {
		t.Fatalf("new call ran on version %d, want 2", o.Version)
	}
	eventually(t, "v1 instance stopped", func() bool { return fw.liveCount() == 1 })
}

func TestConcurrencyPacksOneInstance(t *testing.T) {
	fw := newFakeWorker()
	fw.release = make(chan struct{})
	r := New(fw, Options{})
	r.SetFunction(testFunction(1, func(s *function.Spec) { s.Runtime = "nodejs"; s.Concurrency = 4 }))
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.Invoke(context.Background(), "f", workerapi.Invocation{}); err != nil {
				t.Error(err)
			}
		}()
	}
	eventually(t, "4 in flight", func() bool {
		s, _ := r.Status("f")
		return len(s.Instances) == 1 && s.Instances[0].InFlight == 4
	})
	close(fw.release)
	wg.Wait()
	if fw.started != 1 {
		t.Fatalf("started %d instances for 4 events at concurrency 4, want 1", fw.started)
	}
}

func TestCrashedInstanceReplaced(t *testing.T) {
	fw := newFakeWorker()
	r := New(fw, Options{})
	r.SetFunction(testFunction(1, func(s *function.Spec) { s.MinScale = 1 }))
	eventually(t, "min scale", func() bool { return fw.liveCount() == 1 })
	var id string
	fw.mu.Lock()
	for k := range fw.live {
		id = k
	}
	delete(fw.live, id)
	fw.mu.Unlock()
	r.InstanceExited(workerapi.Event{Kind: workerapi.InstanceExited, Function: "f", Instance: id})
	eventually(t, "replacement", func() bool { return fw.liveCount() == 1 })
}

func TestRemoveFunctionFailsWaitersAndStops(t *testing.T) {
	fw := newFakeWorker()
	fw.startDelay = time.Hour
	r := New(fw, Options{StartTimeout: time.Hour})
	r.SetFunction(testFunction(1, nil))
	errc := make(chan error, 1)
	go func() { _, err := r.Invoke(context.Background(), "f", workerapi.Invocation{}); errc <- err }()
	eventually(t, "queued", func() bool { s, _ := r.Status("f"); return s.Queued == 1 })
	r.RemoveFunction("f")
	if err := <-errc; !errors.Is(err, ErrFunctionRemoved) {
		t.Fatalf("err = %v, want ErrFunctionRemoved", err)
	}
}

func TestShutdownWaitsForInflight(t *testing.T) {
	fw := newFakeWorker()
	fw.release = make(chan struct{})
	r := New(fw, Options{})
	r.SetFunction(testFunction(1, nil))
	done := make(chan error, 1)
	go func() { _, err := r.Invoke(context.Background(), "f", workerapi.Invocation{}); done <- err }()
	eventually(t, "in flight", func() bool { s, _ := r.Status("f"); return len(s.Instances) == 1 && s.Instances[0].InFlight == 1 })
	shut := make(chan error, 1)
	go func() { shut <- r.Shutdown(context.Background()) }()
	time.Sleep(20 * time.Millisecond)
	if _, err := r.Invoke(context.Background(), "f", workerapi.Invocation{}); !errors.Is(err, ErrShuttingDown) {
		t.Fatalf("invoke during shutdown: %v, want ErrShuttingDown", err)
	}
	select {
	case <-shut:
		t.Fatal("shutdown returned with an invocation in flight")
	default:
	}
	close(fw.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if fw.liveCount() != 0 {
		t.Fatalf("%d instances alive after shutdown", fw.liveCount())
	}
}

func TestBrokenMinScaleBacksOff(t *testing.T) {
	fw := newFakeWorker()
	var attempts atomic.Int64
	fw.startErr = errors.New("boom")
	counting := &countingWorker{fakeWorker: fw, attempts: &attempts}
	r := New(counting, Options{Tick: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	r.SetFunction(testFunction(1, func(s *function.Spec) { s.MinScale = 1 }))
	time.Sleep(time.Second)
	// 0, 250 ms, 750 ms: a tight loop would make hundreds of attempts.
	if n := attempts.Load(); n < 2 || n > 4 {
		t.Fatalf("%d start attempts in 1 s, want 2-4 with backoff", n)
	}
	// A request still gets an attempt of its own right away.
	before := attempts.Load()
	if _, err := r.Invoke(context.Background(), "f", workerapi.Invocation{}); err == nil {
		t.Fatal("invoke of a broken function succeeded")
	}
	if attempts.Load() == before {
		t.Fatal("a waiting request did not trigger a start during backoff")
	}
}

type countingWorker struct {
	*fakeWorker
	attempts *atomic.Int64
}

func (c *countingWorker) StartInstance(ctx context.Context, spec workerapi.InstanceSpec) (workerapi.Instance, error) {
	c.attempts.Add(1)
	return c.fakeWorker.StartInstance(ctx, spec)
}

// flakyWorker fails the first invocation as undelivered.
type flakyWorker struct {
	*fakeWorker
	failed atomic.Bool
}

func (f *flakyWorker) Invoke(ctx context.Context, id string, inv workerapi.Invocation) (workerapi.Result, error) {
	if f.failed.CompareAndSwap(false, true) {
		return workerapi.Result{}, &workerapi.Failure{Kind: workerapi.FailureNotDelivered, Message: "died idle"}
	}
	return f.fakeWorker.Invoke(ctx, id, inv)
}

func TestUndeliveredEventRetried(t *testing.T) {
	fw := &flakyWorker{fakeWorker: newFakeWorker()}
	r := New(fw, Options{})
	r.SetFunction(testFunction(1, nil))
	out, err := r.Invoke(context.Background(), "f", workerapi.Invocation{ID: "x"})
	if err != nil {
		t.Fatalf("undelivered event was not retried: %v", err)
	}
	if fw.started != 2 || out.Instance != "i2" {
		t.Fatalf("ran on %s after %d starts, want a second instance", out.Instance, fw.started)
	}
}

func TestRecycle(t *testing.T) {
	fw := newFakeWorker()
	fw.release = make(chan struct{})
	r := New(fw, Options{})
	r.SetFunction(testFunction(1, func(s *function.Spec) { s.MinScale = 0 }))
	done := make(chan Outcome, 1)
	go func() { out, _ := r.Invoke(context.Background(), "f", workerapi.Invocation{}); done <- out }()
	eventually(t, "busy", func() bool { s, _ := r.Status("f"); return len(s.Instances) == 1 && s.Instances[0].InFlight == 1 })
	stopped, pending, ok := r.Recycle("f")
	if !ok || stopped != 0 || pending != 1 {
		t.Fatalf("Recycle = %d, %d, %v; want 0 stopped, 1 pending", stopped, pending, ok)
	}
	close(fw.release)
	first := <-done
	eventually(t, "recycled", func() bool { return fw.liveCount() == 0 })
	out, err := r.Invoke(context.Background(), "f", workerapi.Invocation{})
	if err != nil {
		t.Fatal(err)
	}
	if !out.Cold || out.Instance == first.Instance {
		t.Fatalf("after recycle: cold=%v on %s (before: %s), want a new cold instance", out.Cold, out.Instance, first.Instance)
	}
}
