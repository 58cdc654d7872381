// Package router is Baton's data plane: it hands each invocation a slot on a
// ready instance of the function's current version, queues it in a bounded
// per-function queue while instances start, and drives the autoscaler.
//
// Locking: each function has its own mutex; no lock is held while calling
// the worker (starting, stopping, invoking), so a slow instance start never
// blocks other functions or other requests of the same function.
package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/baton-faas/baton/internal/controlplane/autoscaler"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/workerapi"

	"github.com/baton-faas/baton/internal/errdefs"
)

// Errors the API maps to HTTP statuses.
var (
	ErrUnknownFunction = errdefs.New(errdefs.NotFound, "function_not_found", "function not found")
	ErrQueueFull       = errdefs.New(errdefs.Overloaded, "queue_full", "function queue is full")
	ErrQueueTimeout    = errdefs.New(errdefs.Unavailable, "no_instance", "no instance became available in time")
	ErrShuttingDown    = errdefs.New(errdefs.Unavailable, "shutting_down", "server is shutting down")
	ErrFunctionRemoved = errdefs.New(errdefs.NotFound, "function_not_found", "function was deleted while the request waited")
	// ErrStartFailed wraps a failure of the platform (not of the
	// function's code) to start an instance.
	ErrStartFailed = errdefs.New(errdefs.Unavailable, "start_failed", "could not start an instance")
)

// Options tune the router.
type Options struct {
	// QueueSize bounds the requests waiting per function.
	QueueSize int
	// QueueTimeout bounds how long a request waits for an instance.
	QueueTimeout time.Duration
	// StartTimeout bounds an instance start (runtime init included).
	StartTimeout time.Duration
	// Tick is the period of the scale-down and min-scale check.
	Tick time.Duration
	// Observer receives gauge updates; may be nil.
	Observer Observer
	Logger   *slog.Logger
	// Now is the clock (tests replace it).
	Now func() time.Time
}

// Observer is told about instance counts and queue depth.
type Observer interface {
	ObserveInstances(function string, ready, starting int)
	ObserveQueue(function string, depth int)
}

// Outcome describes a completed invocation.
type Outcome struct {
	Version  int
	Instance string
	Cold     bool
	Wait     time.Duration
	Init     time.Duration
	Exec     time.Duration
	Result   workerapi.Result
}

// Router dispatches invocations to instances.
type Router struct {
	worker workerapi.Worker
	opts   Options
	log    *slog.Logger

	mu       sync.RWMutex
	fns      map[string]*fnState
	draining bool
	inflight sync.WaitGroup
}

// New returns a router that places instances on worker.
func New(worker workerapi.Worker, opts Options) *Router {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 1000
	}
	if opts.QueueTimeout <= 0 {
		opts.QueueTimeout = 60 * time.Second
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 30 * time.Second
	}
	if opts.Tick <= 0 {
		opts.Tick = 250 * time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Router{worker: worker, opts: opts, log: opts.Logger, fns: map[string]*fnState{}}
}

type instState int

const (
	stateReady instState = iota
	stateStopping
)

type instance struct {
	id        string
	version   int
	capacity  int
	inflight  int
	state     instState
	idleSince time.Time
	lastUsed  time.Time
	init      time.Duration
	served    int
	// recycle marks an instance to stop as soon as it is idle.
	recycle bool
}

type grant struct {
	inst *instance
	cold bool
	err  error
}

type waiter struct {
	ch       chan grant
	enqueued time.Time
}

type fnState struct {
	name string

	mu        sync.Mutex
	fn        function.Function
	removed   bool
	instances map[string]*instance
	starting  int // instance starts in progress for fn.Version
	queue     []*waiter
	// stopping counts stops sent to the worker that have not returned.
	stopping int
	// failures counts consecutive failed starts; until retryAt, starts
	// that only serve minScale (no request waiting) are held back, so a
	// broken function is not restarted in a tight loop.
	failures int
	retryAt  time.Time
	stopped  []string // instances to stop once the lock is released
}

// SetFunction adds or updates a function. A new version takes all new
// requests at once; instances of older versions finish what they are doing
// and are then stopped.
func (r *Router) SetFunction(fn function.Function) {
	r.mu.Lock()
	st, ok := r.fns[fn.Name]
	if !ok {
		st = &fnState{name: fn.Name, fn: fn, instances: map[string]*instance{}}
		r.fns[fn.Name] = st
	}
	r.mu.Unlock()
	if !ok {
		r.reconcile(st)
		return
	}
	st.mu.Lock()
	if fn.Version < st.fn.Version {
		// A stale update (versions only grow while a function exists).
		st.mu.Unlock()
		return
	}
	if fn.Version != st.fn.Version {
		st.failures, st.retryAt = 0, time.Time{}
		st.starting = 0 // in-flight starts of the old version are discarded when they finish
	}
	st.fn = fn
	for _, in := range st.instances {
		if in.version != fn.Version && in.inflight == 0 {
			st.stopLocked(in)
		}
	}
	st.mu.Unlock()
	r.reconcile(st)
}

// RemoveFunction forgets a function: waiting requests fail, idle instances
// stop now, busy ones when their invocation ends.
func (r *Router) RemoveFunction(name string) {
	r.mu.Lock()
	st, ok := r.fns[name]
	delete(r.fns, name)
	r.mu.Unlock()
	if !ok {
		return
	}
	st.mu.Lock()
	st.removed = true
	for _, w := range st.queue {
		w.ch <- grant{err: ErrFunctionRemoved}
	}
	st.queue = nil
	for _, in := range st.instances {
		if in.inflight == 0 {
			st.stopLocked(in)
		}
	}
	st.mu.Unlock()
	r.flushStops(st)
	r.observe(st)
}

func (r *Router) lookup(name string) (*fnState, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.draining {
		return nil, ErrShuttingDown
	}
	st, ok := r.fns[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownFunction, name)
	}
	r.inflight.Add(1)
	return st, nil
}

// Invoke runs one event on the named function. ctx bounds the whole call
// (the client going away cancels it); the function's timeout bounds
// execution.
func (r *Router) Invoke(ctx context.Context, name string, inv workerapi.Invocation) (Outcome, error) {
	st, err := r.lookup(name)
	if err != nil {
		return Outcome{}, err
	}
	defer r.inflight.Done()
	arrived := r.opts.Now()

	for attempt := 1; ; attempt++ {
		out, err := r.invokeOnce(ctx, st, inv, arrived)
		var failure *workerapi.Failure
		// An event the dead instance never received is run again on
		// another one: the client should not see a crash of an instance
		// that was idle.
		if attempt < maxDeliveryAttempts && errors.As(err, &failure) && failure.Kind == workerapi.FailureNotDelivered {
			r.log.Info("event not delivered, retrying on another instance", "function", name, "invocation", inv.ID, "reason", failure.Message)
			continue
		}
		return out, err
	}
}

// maxDeliveryAttempts bounds how often an undelivered event is retried.
const maxDeliveryAttempts = 3

func (r *Router) invokeOnce(ctx context.Context, st *fnState, inv workerapi.Invocation, arrived time.Time) (Outcome, error) {
	g, err := r.acquire(ctx, st)
	if err != nil {
		return Outcome{}, err
	}
	st.mu.Lock()
	spec := st.fn.Spec
	version := g.inst.version
	st.mu.Unlock()
	out := Outcome{Version: version, Instance: g.inst.id, Cold: g.cold, Wait: r.opts.Now().Sub(arrived)}
	if g.cold {
		// The part of the instance's init this request actually waited
		// for: a request that arrived late in a start waited less.
		out.Init = min(g.inst.init, out.Wait)
	}

	started := r.opts.Now()
	inv.Deadline = started.Add(spec.Timeout())
	// A client that goes away does not cancel the invocation (as on
	// Lambda): it runs to completion or its timeout and is recorded.
	ictx, cancel := context.WithDeadline(context.WithoutCancel(ctx), inv.Deadline)
	res, err := r.worker.Invoke(ictx, g.inst.id, inv)
	cancel()
	out.Exec = r.opts.Now().Sub(started)
	out.Result = res

	var failure *workerapi.Failure
	dead := errors.As(err, &failure) && !failure.InstanceAlive
	r.release(st, g.inst, dead)
	if dead && r.isDraining() {
		// The shutdown grace ran out and the instance was stopped under it.
		return out, fmt.Errorf("%w: the invocation was stopped when the shutdown grace period ended (%v)", ErrShuttingDown, err)
	}
	return out, err
}

func (r *Router) isDraining() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.draining
}

// acquire returns a slot, waiting in the queue if needed.
func (r *Router) acquire(ctx context.Context, st *fnState) (grant, error) {
	st.mu.Lock()
	if st.removed {
		st.mu.Unlock()
		return grant{}, ErrFunctionRemoved
	}
	if in := st.pickLocked(); in != nil {
		st.takeLocked(in, r.opts.Now())
		st.mu.Unlock()
		return grant{inst: in}, nil
	}
	if len(st.queue) >= r.opts.QueueSize {
		st.mu.Unlock()
		return grant{}, fmt.Errorf("%w: %d requests of %s are waiting", ErrQueueFull, r.opts.QueueSize, st.name)
	}
	w := &waiter{ch: make(chan grant, 1), enqueued: r.opts.Now()}
	st.queue = append(st.queue, w)
	st.mu.Unlock()
	r.reconcile(st)

	timer := time.NewTimer(r.opts.QueueTimeout)
	defer timer.Stop()
	var cause error
	select {
	case g := <-w.ch:
		return g, g.err
	case <-ctx.Done():
		cause = ctx.Err()
	case <-timer.C:
		cause = fmt.Errorf("%w: waited %s for %s", ErrQueueTimeout, r.opts.QueueTimeout, st.name)
	}
	st.mu.Lock()
	for i, q := range st.queue {
		if q == w {
			st.queue = append(st.queue[:i], st.queue[i+1:]...)
			st.mu.Unlock()
			r.observe(st)
			return grant{}, cause
		}
	}
	st.mu.Unlock()
	// The grant raced with our giving up: hand the slot back.
	if g := <-w.ch; g.inst != nil {
		r.release(st, g.inst, false)
	}
	return grant{}, cause
}

// release returns a slot; dead says the instance did not survive.
func (r *Router) release(st *fnState, in *instance, dead bool) {
	st.mu.Lock()
	in.inflight--
	now := r.opts.Now()
	switch {
	case dead:
		if _, ok := st.instances[in.id]; ok {
			st.stopLocked(in)
		}
	case in.state != stateReady:
	case st.removed || in.version != st.fn.Version || in.recycle:
		if in.inflight == 0 {
			st.stopLocked(in)
		}
	default:
		st.handoffLocked(in, now, false)
		if in.inflight == 0 {
			in.idleSince = now
		}
	}
	st.mu.Unlock()
	r.reconcile(st)
}

// pickLocked prefers the busiest instance with a free slot, then the most
// recently used, so that load packs onto few instances and the rest go idle
// and can be scaled down.
func (st *fnState) pickLocked() *instance {
	var best *instance
	for _, in := range st.instances {
		if in.state != stateReady || in.version != st.fn.Version || in.inflight >= in.capacity || in.recycle {
			continue
		}
		if best == nil || in.inflight > best.inflight ||
			(in.inflight == best.inflight && in.lastUsed.After(best.lastUsed)) {
			best = in
		}
	}
	return best
}

func (st *fnState) takeLocked(in *instance, now time.Time) {
	in.inflight++
	in.served++
	in.lastUsed = now
}

// handoffLocked gives free slots of in to queued requests, oldest first.
func (st *fnState) handoffLocked(in *instance, now time.Time, cold bool) {
	for len(st.queue) > 0 && in.inflight < in.capacity {
		w := st.queue[0]
		st.queue = st.queue[1:]
		st.takeLocked(in, now)
		w.ch <- grant{inst: in, cold: cold}
	}
}

func (st *fnState) stopLocked(in *instance) {
	if in.state == stateStopping {
		return
	}
	in.state = stateStopping
	delete(st.instances, in.id)
	st.stopped = append(st.stopped, in.id)
}

// reconcile runs the autoscaler for one function and carries out its plan.
func (r *Router) reconcile(st *fnState) {
	st.mu.Lock()
	if st.removed {
		st.mu.Unlock()
		r.flushStops(st)
		return
	}
	now := r.opts.Now()
	in := autoscaler.Input{
		Demand:      len(st.queue),
		Concurrency: st.fn.Spec.Concurrency,
		Starting:    st.starting,
		MinScale:    st.fn.Spec.MinScale,
		MaxScale:    st.fn.Spec.MaxScale,
		IdleTimeout: st.fn.Spec.IdleTimeout(),
		Now:         now,
	}
	for _, i := range st.instances {
		if i.version != st.fn.Version || i.state != stateReady {
			continue
		}
		in.Ready++
		in.Demand += i.inflight
		if i.inflight == 0 {
			in.Idle = append(in.Idle, autoscaler.IdleInstance{ID: i.id, Since: i.idleSince})
		}
	}
	d := autoscaler.Plan(in)
	if d.Start > 0 && now.Before(st.retryAt) {
		demandOnly := in
		demandOnly.MinScale = 0
		d.Start = max(0, autoscaler.Desired(demandOnly)-in.Ready-in.Starting)
	}
	for _, id := range d.Stop {
		st.stopLocked(st.instances[id])
	}
	st.starting += d.Start
	fn := st.fn
	st.mu.Unlock()

	for i := 0; i < d.Start; i++ {
		go r.start(st, fn)
	}
	r.flushStops(st)
	r.observe(st)
}

func (r *Router) flushStops(st *fnState) {
	st.mu.Lock()
	ids := st.stopped
	st.stopped = nil
	st.stopping += len(ids)
	st.mu.Unlock()
	for _, id := range ids {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := r.worker.StopInstance(ctx, id); err != nil {
				r.log.Warn("stop instance", "function", st.name, "instance", id, "err", err)
			}
			st.mu.Lock()
			st.stopping--
			st.mu.Unlock()
		}()
	}
}

func (r *Router) start(st *fnState, fn function.Function) {
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.StartTimeout)
	defer cancel()
	began := r.opts.Now()
	info, err := r.worker.StartInstance(ctx, workerapi.InstanceSpec{
		Function: fn.Name, Version: fn.Version, App: function.AppOf(fn.Name, fn.Spec), Spec: fn.Spec, CodeDigest: fn.CodeDigest,
	})
	st.mu.Lock()
	current := !st.removed && st.fn.Version == fn.Version
	if current && st.starting > 0 {
		st.starting--
	}
	if err != nil {
		if current {
			st.failures++
			st.retryAt = r.opts.Now().Add(startBackoff(st.failures))
		}
		var initErr *workerapi.InitError
		isInit := errors.As(err, &initErr)
		attrs := []any{"function", fn.Name, "version", fn.Version, "after", r.opts.Now().Sub(began), "err", err}
		if isInit && len(initErr.Logs) > 0 {
			// What the function printed usually says why it failed; a
			// start no request waits for (minScale, a retry) has no
			// record to keep it in.
			attrs = append(attrs, "output", logTail(initErr.Logs, maxLoggedInitOutput))
		}
		r.log.Warn("instance start failed", attrs...)
		// Fail as many waiting requests as this instance would have
		// served: a broken function answers every request with its init
		// error instead of letting them all time out, while a transient
		// failure costs only the requests it was meant to serve.
		n := fn.Spec.Concurrency
		waiterErr := err
		if !isInit {
			waiterErr = fmt.Errorf("%w: %w", ErrStartFailed, err)
		}
		for n > 0 && len(st.queue) > 0 && current {
			st.queue[0].ch <- grant{err: waiterErr}
			st.queue = st.queue[1:]
			n--
		}
		st.mu.Unlock()
		if current {
			r.reconcile(st)
		}
		return
	}
	in := &instance{id: info.ID, version: fn.Version, capacity: max(info.Capacity, 1), init: info.InitDuration}
	now := r.opts.Now()
	in.idleSince, in.lastUsed = now, now
	if !current {
		st.stopped = append(st.stopped, in.id)
		st.mu.Unlock()
		r.flushStops(st)
		return
	}
	st.failures, st.retryAt = 0, time.Time{}
	st.instances[in.id] = in
	st.handoffLocked(in, now, true)
	st.mu.Unlock()
	r.reconcile(st)
}

// maxLoggedInitOutput bounds the init output in the server log: its end
// is where a failing start says why.
const maxLoggedInitOutput = 2048

// logTail returns at most the last n bytes of b as valid UTF-8, marked
// when cut.
func logTail(b []byte, n int) string {
	if len(b) <= n {
		return strings.ToValidUTF8(string(b), "\uFFFD")
	}
	return "…" + strings.ToValidUTF8(string(b[len(b)-n:]), "")
}

// startBackoff doubles from 250 ms up to 30 s with consecutive failures.
func startBackoff(failures int) time.Duration {
	d := 250 * time.Millisecond
	for i := 1; i < failures && d < 30*time.Second; i++ {
		d *= 2
	}
	return min(d, 30*time.Second)
}

// Recycle stops every instance of a function: idle ones now, busy ones
// when their invocation ends. The function stays deployed and the next
// request is a cold start (benchmarks use this to measure cold starts
// deterministically; operators to drop instances after a host change).
// It returns how many instances were stopped at once and how many will be.
func (r *Router) Recycle(name string) (stopped, pending int, ok bool) {
	r.mu.RLock()
	st, ok := r.fns[name]
	r.mu.RUnlock()
	if !ok {
		return 0, 0, false
	}
	st.mu.Lock()
	for _, in := range st.instances {
		if in.inflight == 0 {
			st.stopLocked(in)
			stopped++
		} else {
			in.recycle = true
			pending++
		}
	}
	st.mu.Unlock()
	r.flushStops(st)
	r.observe(st)
	return stopped, pending, true
}

// InstanceExited handles a worker event about an instance that died.
func (r *Router) InstanceExited(ev workerapi.Event) {
	r.mu.RLock()
	st, ok := r.fns[ev.Function]
	r.mu.RUnlock()
	if !ok {
		return
	}
	st.mu.Lock()
	in, ok := st.instances[ev.Instance]
	if ok {
		in.state = stateStopping
		delete(st.instances, in.id)
	}
	st.mu.Unlock()
	if ok {
		r.log.Info("instance exited", "function", ev.Function, "instance", ev.Instance, "reason", ev.Reason)
		r.reconcile(st)
	}
}

// Run performs periodic scale-down until ctx ends.
func (r *Router) Run(ctx context.Context) {
	t := time.NewTicker(r.opts.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.mu.RLock()
		states := make([]*fnState, 0, len(r.fns))
		for _, st := range r.fns {
			states = append(states, st)
		}
		r.mu.RUnlock()
		for _, st := range states {
			r.reconcile(st)
		}
	}
}

// Shutdown refuses new requests, lets in-flight ones finish until ctx ends,
// then stops every instance.
func (r *Router) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	r.draining = true
	states := make([]*fnState, 0, len(r.fns))
	for _, st := range r.fns {
		states = append(states, st)
	}
	r.mu.Unlock()

	done := make(chan struct{})
	go func() { r.inflight.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("in-flight invocations did not finish: %w", ctx.Err())
	}
	var ids []string
	for _, st := range states {
		st.mu.Lock()
		st.removed = true
		for _, w := range st.queue {
			w.ch <- grant{err: ErrShuttingDown}
		}
		st.queue = nil
		for id := range st.instances {
			ids = append(ids, id)
		}
		st.instances = map[string]*instance{}
		st.mu.Unlock()
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = r.worker.StopInstance(stopCtx, id)
		}()
	}
	wg.Wait()
	return err
}

func (r *Router) observe(st *fnState) {
	if r.opts.Observer == nil {
		return
	}
	st.mu.Lock()
	ready := 0
	for _, in := range st.instances {
		if in.state == stateReady {
			ready++
		}
	}
	starting, depth, removed := st.starting, len(st.queue), st.removed
	st.mu.Unlock()
	if removed {
		ready, starting = 0, 0
	}
	r.opts.Observer.ObserveInstances(st.name, ready, starting)
	r.opts.Observer.ObserveQueue(st.name, depth)
}

// InstanceStatus describes one instance for status output.
type InstanceStatus struct {
	ID       string    `json:"id"`
	Version  int       `json:"version"`
	InFlight int       `json:"inFlight"`
	Capacity int       `json:"capacity"`
	Served   int       `json:"served"`
	IdleFor  string    `json:"idleFor,omitempty"`
	LastUsed time.Time `json:"lastUsed"`
}

// Status describes a function's live state.
type Status struct {
	Instances []InstanceStatus `json:"instances"`
	Starting  int              `json:"starting"`
	// Stopping counts instances being stopped: a function is at zero when
	// Instances, Starting and Stopping are all empty.
	Stopping int `json:"stopping"`
	Queued   int `json:"queued"`
}

// Has reports whether the router knows a function.
func (r *Router) Has(name string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.fns[name]
	return ok
}

// Status returns the live state of a function.
func (r *Router) Status(name string) (Status, bool) {
	r.mu.RLock()
	st, ok := r.fns[name]
	r.mu.RUnlock()
	if !ok {
		return Status{}, false
	}
	now := r.opts.Now()
	st.mu.Lock()
	defer st.mu.Unlock()
	s := Status{Starting: st.starting, Stopping: st.stopping, Queued: len(st.queue), Instances: []InstanceStatus{}}
	for _, in := range st.instances {
		is := InstanceStatus{ID: in.id, Version: in.version, InFlight: in.inflight, Capacity: in.capacity, Served: in.served, LastUsed: in.lastUsed}
		if in.inflight == 0 {
			is.IdleFor = now.Sub(in.idleSince).Round(time.Millisecond).String()
		}
		s.Instances = append(s.Instances, is)
	}
	sort.Slice(s.Instances, func(a, b int) bool { return s.Instances[a].ID < s.Instances[b].ID })
	return s, true
}
