package router

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/workerapi"
)

// fakeClock is a clock the test advances; timers fire in their own
// goroutines, as time.AfterFunc's do.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers map[*fakeTimer]struct{}
}

type fakeTimer struct {
	at time.Time
	f  func()
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), timers: map[*fakeTimer]struct{}{}}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), f: f}
	if d <= 0 {
		go f()
		return func() bool { return false }
	}
	c.timers[t] = struct{}{}
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, pending := c.timers[t]
		delete(c.timers, t)
		return pending
	}
}

// Advance moves the clock and fires the timers that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	for t := range c.timers {
		if !t.at.After(c.now) {
			due = append(due, t)
			delete(c.timers, t)
		}
	}
	c.mu.Unlock()
	for _, t := range due {
		go t.f()
	}
}

// sleep blocks until the clock passed d (someone else advances it).
func (c *fakeClock) sleep(d time.Duration) {
	ch := make(chan struct{})
	c.AfterFunc(d, func() { close(ch) })
	<-ch
}

// waitDeadline bounds every wait of a test in real time: generous, so that
// a busy host does not fail a test, and only reached when one is broken.
const waitDeadline = 20 * time.Second

// eventually waits, without moving the clock, until cond holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// advanceUntil ticks the clock by step until cond holds, giving the
// router's goroutines a moment between ticks.
func advanceUntil(t *testing.T, clk *fakeClock, step time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s (fake time %s)", what, clk.Now().Format(time.StampMilli))
		}
		clk.Advance(step)
		time.Sleep(200 * time.Microsecond)
	}
}

// ticking advances the clock by step until the returned stop is called:
// for tests where many goroutines wait on fake time at once.
func ticking(clk *fakeClock, step time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			clk.Advance(step)
			time.Sleep(200 * time.Microsecond)
		}
	}()
	return func() { close(done); wg.Wait() }
}

// fakeWorker runs instances without processes, on the test's clock: a
// start becomes ready after startDelay (longer with other starts in
// progress when slowWithLoad is set, like a host whose CPU they share),
// and invocations take execTime or wait on release.
type fakeWorker struct {
	workerapi.Worker // methods the router does not call panic

	clk          *fakeClock
	id           string
	capacityMB   int
	startDelay   time.Duration
	slowWithLoad bool
	startErr     error
	execTime     time.Duration
	release      chan struct{} // nil: invocations return after execTime

	mu            sync.Mutex
	seq           int
	starting      map[string]*fakeStart // starts in progress
	starts        map[string]*fakeStart // every start, for WaitInstance
	maxStarting   int
	started       int // starts that became ready
	cancelled     int // starting instances stopped
	stopped       map[string]bool
	live          map[string]bool
	maxLive       int
	invoked       map[string]int
	versions      map[string]int
	startVersions []int
	startTimes    []time.Time // on the fake clock, when each start was asked for
}

type fakeStart struct {
	done  chan struct{}
	inst  workerapi.Instance
	err   error
	timer func() bool
}

func newFakeWorker(clk *fakeClock) *fakeWorker {
	return &fakeWorker{clk: clk, id: "w1", starting: map[string]*fakeStart{}, starts: map[string]*fakeStart{}, stopped: map[string]bool{},
		live: map[string]bool{}, invoked: map[string]int{}, versions: map[string]int{}}
}

func (f *fakeWorker) Info(context.Context) (workerapi.Info, error) {
	return workerapi.Info{ID: f.id, Isolation: "none", Capacity: workerapi.Resources{MemoryMB: f.capacityMB}}, nil
}

func (f *fakeWorker) StartInstance(ctx context.Context, spec workerapi.InstanceSpec) (workerapi.Instance, error) {
	if err := ctx.Err(); err != nil {
		return workerapi.Instance{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	id := fmt.Sprintf("%s-i%d", f.id, f.seq)
	delay := f.startDelay
	if f.slowWithLoad {
		delay *= time.Duration(1 + len(f.starting))
	}
	s := &fakeStart{done: make(chan struct{})}
	s.inst = workerapi.Instance{ID: id, Worker: f.id, Function: spec.Function, Version: spec.Version,
		State: workerapi.Starting, Capacity: spec.Spec.Concurrency}
	f.starting[id] = s
	f.starts[id] = s
	f.maxStarting = max(f.maxStarting, len(f.starting))
	f.startVersions = append(f.startVersions, spec.Version)
	f.startTimes = append(f.startTimes, f.clk.Now())
	s.timer = f.clk.AfterFunc(delay, func() { f.finishStart(id, delay) })
	return s.inst, nil
}

func (f *fakeWorker) finishStart(id string, took time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.starting[id]
	if !ok {
		return
	}
	delete(f.starting, id)
	if f.startErr != nil {
		s.err = f.startErr
		s.inst.State = workerapi.Failed
	} else {
		s.inst.State, s.inst.InitDuration = workerapi.Ready, took
		f.started++
		f.live[id] = true
		f.versions[id] = s.inst.Version
		f.maxLive = max(f.maxLive, len(f.live))
	}
	close(s.done)
}

func (f *fakeWorker) WaitInstance(ctx context.Context, id string) (workerapi.Instance, error) {
	f.mu.Lock()
	s, ok := f.starts[id]
	f.mu.Unlock()
	if !ok {
		return workerapi.Instance{}, fmt.Errorf("wait %s: %w", id, workerapi.ErrUnknownInstance)
	}
	select {
	case <-s.done:
		f.mu.Lock()
		defer f.mu.Unlock()
		return s.inst, s.err
	case <-ctx.Done():
		return workerapi.Instance{}, ctx.Err()
	}
}

func (f *fakeWorker) StopInstance(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.starting[id]; ok {
		s.timer()
		delete(f.starting, id)
		s.err = fmt.Errorf("instance %s was stopped while starting", id)
		s.inst.State = workerapi.Stopped
		close(s.done)
		f.cancelled++
	}
	f.stopped[id] = true
	delete(f.live, id)
	return nil
}

func (f *fakeWorker) Invoke(ctx context.Context, id string, inv workerapi.Invocation) (workerapi.Result, error) {
	f.mu.Lock()
	f.invoked[id]++
	v := f.versions[id]
	alive := f.live[id]
	f.mu.Unlock()
	if !alive {
		return workerapi.Result{}, &workerapi.Failure{Kind: workerapi.FailureInstanceGone, Message: "no such instance"}
	}
	wait := f.release
	if wait == nil && f.execTime > 0 {
		ch := make(chan struct{})
		stop := f.clk.AfterFunc(f.execTime, func() { close(ch) })
		defer stop()
		wait = ch
	}
	if wait != nil {
		select {
		case <-wait:
		case <-ctx.Done():
			return workerapi.Result{}, &workerapi.Failure{Kind: workerapi.FailureTimeout, Message: "timeout"}
		}
	}
	return workerapi.Result{Payload: fmt.Appendf(nil, `{"instance":%q,"version":%d}`, id, v)}, nil
}

func (f *fakeWorker) liveCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.live)
}

func (f *fakeWorker) startingCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.starting)
}

func (f *fakeWorker) startedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.started
}

// newRouter returns a router on clk with the workers added; Shutdown runs
// when the test ends.
func newRouter(t *testing.T, clk *fakeClock, opts Options, workers ...workerapi.Worker) *Router {
	t.Helper()
	opts.Clock = clk
	r := New(opts)
	for _, w := range workers {
		if err := r.AddWorker(context.Background(), w); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // do not wait for invocations a test left running
		stop := ticking(clk, 100*time.Millisecond)
		defer stop()
		_ = r.Shutdown(ctx)
	})
	return r
}
