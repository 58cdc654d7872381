// Package router is Baton's data plane: it hands each invocation a slot on a
// ready instance of the function's newest version, queues it in a bounded
// per-function queue while instances start, drives the autoscaler, and
// places new instances on a set of workers through a placement policy.
//
// Locking: each function has its own mutex; no lock is held while calling
// a worker (starting, stopping, invoking), so a slow instance start never
// blocks other functions or other requests of the same function.
// Lock order, where the locks meet:
//
//	Router.mu → fnState.mu → Router.wmu (workers) → Router.tmu (tasks)
//	fnState.omu (observe) → fnState.mu → Router.amu (the ticked set)
//
// wmu, tmu, amu and workerState.rmu (starts waiting for their events) are
// leaves: nothing else is locked while they are held.
//
// Ticks: the periodic reconcile (Run) visits only the functions that may
// have something to do at that time (see nextTickLocked), not every
// deployed one, so its cost follows the load rather than the size of the
// catalogue or the number of idle instances.
//
// Goroutines: every start and stop runs as a task the router owns
// (Router.tasks); their contexts derive from the router's lifetime, which
// Shutdown cancels before it waits for them.
package router

import (
	"context"
	"errors"
	"fmt"
	"github.com/baton-faas/baton/internal/controlplane/autoscaler"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/baton-faas/baton/internal/controlplane/placement"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/workerapi"
)

// Options tune the router.
type Options struct {
	// QueueSize bounds the requests waiting per function.
	QueueSize int
	// QueueTimeout bounds how long a request waits for an instance; a
	// request whose expected wait is longer is refused at once.
	QueueTimeout time.Duration
	// StartTimeout bounds an instance start (runtime init included).
	StartTimeout time.Duration
	// StopTimeout bounds a stop request to a worker.
	StopTimeout time.Duration
	// Tick is the period of the scale-down and min-scale check.
	Tick time.Duration
	// Placement chooses a worker for each start (default: placement.Default).
	Placement placement.Policy
	// Observer receives gauge updates; may be nil.
	Observer Observer
	Logger   *slog.Logger
	// Clock is the time source (tests replace it; default: real time).
	Clock Clock
	// OnWorkerUnreachable, when set, is told (on the caller's goroutine;
	// it must return at once) of a worker that a start or an invocation
	// could not reach: the cluster may prove it gone before its
	// membership entry expires.
	OnWorkerUnreachable func(worker string)
	// LeaveInstances makes Shutdown leave instances running on their
	// workers instead of stopping them: in a cluster another controller
	// adopts them (see Adopt), so a controller restart costs no cold start.
	LeaveInstances bool
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
	// Worker is the id of the worker that ran the invocation.
	Worker string
	Cold   bool
	Wait   time.Duration
	Init   time.Duration
	Exec   time.Duration
	Result workerapi.Result
}

// Router dispatches invocations to instances.
type Router struct {
	opts   Options
	log    *slog.Logger
	clock  Clock
	policy placement.Policy

	// ctx is the router's lifetime: Shutdown cancels it, which cancels
	// pending starts and ends the workers' contexts.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.RWMutex
	fns      map[string]*fnState
	draining bool
	inflight sync.WaitGroup

	wmu     sync.Mutex
	workers map[string]*workerState
	cands   []placement.Candidate // place's scratch space

	// amu guards ticked: the functions Run reconciles, with the time each
	// is next due (see nextTickLocked). A function enters, leaves or
	// changes it under its own lock.
	amu    sync.Mutex
	ticked map[*fnState]time.Time

	// tmu guards closed; tasks counts the router's start and stop
	// goroutines. Once closed, no task is added (Shutdown is waiting).
	tmu    sync.Mutex
	closed bool
	tasks  sync.WaitGroup
}

// New returns a router without workers; add them with AddWorker.
func New(opts Options) *Router {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 1000
	}
	if opts.QueueTimeout <= 0 {
		opts.QueueTimeout = 60 * time.Second
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 30 * time.Second
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 10 * time.Second
	}
	if opts.Tick <= 0 {
		opts.Tick = 250 * time.Millisecond
	}
	if opts.Clock == nil {
		opts.Clock = realClock{}
	}
	if opts.Placement == nil {
		opts.Placement = placement.Default{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Router{
		opts: opts, log: opts.Logger, clock: opts.Clock, policy: opts.Placement,
		fns: map[string]*fnState{}, workers: map[string]*workerState{}, ticked: map[*fnState]time.Time{},
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r
}

// goTask runs f as a task the router owns. It returns false, without
// running f, once Shutdown stopped accepting tasks.
func (r *Router) goTask(f func()) bool {
	r.tmu.Lock()
	defer r.tmu.Unlock()
	if r.closed {
		return false
	}
	r.tasks.Add(1)
	go func() {
		defer r.tasks.Done()
		f()
	}()
	return true
}

type instState int

const (
	stateReady instState = iota
	stateStopping
)

type instKey struct{ worker, id string }

type instance struct {
	id        string
	w         *workerState
	res       *reservation
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

func (in *instance) key() instKey { return instKey{in.w.id, in.id} }

// pendingStart is an instance start in progress.
type pendingStart struct {
	version int
	cancel  context.CancelFunc
	// cancelled: the start is no longer wanted (its version was
	// superseded or the function removed); it is not a failure.
	cancelled bool
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

	mu      sync.Mutex
	fn      function.Function // the newest version
	removed bool
	// released: removed because another controller took the function
	// over; its instances are left running for that controller.
	released  bool
	instances map[instKey]*instance
	starts    map[*pendingStart]struct{}
	queue     []*waiter
	// stopping counts stops sent to the worker that have not returned.
	stopping int
	// failures counts consecutive failed starts of failedVersion; until
	// retryAt, starts that only serve minScale (no request waiting) are
	// held back, so a broken version is not restarted in a tight loop.
	// A newer version starts afresh.
	failures      int
	failedVersion int
	retryAt       time.Time
	stopped       []*instance // instances to stop once the lock is released
	// service is the observed time an invocation holds its slot (an
	// exponentially weighted mean); zero until observed.
	service time.Duration
	// scaler is the function's autoscaling policy (it may keep history),
	// made anew when the spec names another one.
	scaler autoscaler.Policy

	// omu serialises observe, so that the gauges end at the last values
	// computed; shown holds what was last published (guarded by mu).
	omu   sync.Mutex
	shown *shownGauges
}

// shownGauges are the gauge values last given to the Observer.
type shownGauges struct{ ready, starting, depth int }

// idempotent reports whether the function's events may run twice.
func (st *fnState) idempotent() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.fn.Spec.Idempotent
}

// setScalerLocked makes the policy the spec names, keeping the current one
// (and its history) when it is the same.
func (st *fnState) setScalerLocked(name string) {
	if st.scaler != nil && st.fn.Spec.Autoscaler == name {
		return
	}
	p, err := autoscaler.New(name)
	if err != nil { // specs are validated; fall back rather than stop scaling
		p = autoscaler.Immediate{}
	}
	st.scaler = p
}

// states returns the functions' states.
func (r *Router) states() []*fnState {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*fnState, 0, len(r.fns))
	for _, st := range r.fns {
		out = append(out, st)
	}
	return out
}

// reconcileAll reconciles every function that may have something to do
// now: the others' reconcile would plan nothing.
func (r *Router) reconcileAll() {
	for _, st := range r.tickedStates(r.clock.Now()) {
		r.reconcile(st)
	}
}

// tickedStates returns the functions in the ticked set that are due at now.
func (r *Router) tickedStates(now time.Time) []*fnState {
	r.amu.Lock()
	defer r.amu.Unlock()
	out := make([]*fnState, 0, len(r.ticked))
	for st, due := range r.ticked {
		if !now.Before(due) {
			out = append(out, st)
		}
	}
	return out
}

// nextTickLocked says when a periodic reconcile could next change
// anything for the function (ok false: never, until something happens to
// it, which reconciles it anyway). Waiting requests or minScale may need a
// start at any tick (after a failed start's back-off, or once a worker
// has room), as may a start in progress that fails, and a policy other
// than immediate plans from its history: those are due at every tick (the
// zero time). Otherwise only idle instances of the newest version are
// scaled down, when the oldest of them has been idle for the idle
// timeout; busy ones reconcile when released, older versions' ones stop
// when idle without a tick.
func (st *fnState) nextTickLocked() (due time.Time, ok bool) {
	if st.removed {
		return time.Time{}, false
	}
	if _, immediate := st.scaler.(autoscaler.Immediate); !immediate {
		return time.Time{}, true
	}
	if len(st.queue) > 0 || len(st.starts) > 0 || st.fn.Spec.MinScale > 0 {
		return time.Time{}, true
	}
	for _, in := range st.instances {
		if in.state != stateReady || in.version != st.fn.Version || in.inflight > 0 {
			continue
		}
		if at := in.idleSince.Add(st.fn.Spec.IdleTimeout()); !ok || at.Before(due) {
			due, ok = at, true
		}
	}
	return due, ok
}

// updateTickedLocked puts the function in the ticked set, with when it is
// next due, or takes it out; st.mu is held, so that concurrent updates of
// one function apply in order.
func (r *Router) updateTickedLocked(st *fnState) {
	due, ok := st.nextTickLocked()
	r.amu.Lock()
	if ok {
		r.ticked[st] = due
	} else {
		delete(r.ticked, st)
	}
	r.amu.Unlock()
}

// SetFunction adds or updates a function. A new version takes all new
// requests once it has a ready instance; until then, instances of older
// versions that are still busy keep serving the queue, so a redeploy (or a
// storm of them) never leaves the function without instances. Starts of
// superseded versions are cancelled.
func (r *Router) SetFunction(fn function.Function) {
	r.mu.Lock()
	st, ok := r.fns[fn.Name]
	if !ok {
		st = &fnState{name: fn.Name, fn: fn, instances: map[instKey]*instance{}, starts: map[*pendingStart]struct{}{}}
		st.setScalerLocked(fn.Spec.Autoscaler)
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
		for ps := range st.starts {
			if ps.version < fn.Version {
				ps.cancelled = true
				ps.cancel()
			}
		}
	}
	st.setScalerLocked(fn.Spec.Autoscaler)
	st.fn = fn
	for _, in := range st.instances {
		if in.version != fn.Version && in.inflight == 0 {
			st.stopLocked(in)
		}
	}
	st.mu.Unlock()
	r.reconcile(st)
}

// RemoveFunction forgets a function: waiting requests fail, starts are
// cancelled, idle instances stop now, busy ones when their invocation ends.
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
	r.updateTickedLocked(st)
	for _, w := range st.queue {
		w.ch <- grant{err: ErrFunctionRemoved}
	}
	st.queue = nil
	for ps := range st.starts {
		ps.cancelled = true
		ps.cancel()
	}
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
	arrived := r.clock.Now()

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
		// A lost worker may or may not have run the event: only a
		// function that says running it twice is harmless gets it again.
		if attempt < maxDeliveryAttempts && errors.As(err, &failure) && failure.Kind == workerapi.FailureWorkerLost && st.idempotent() {
			r.log.Info("worker lost, retrying the idempotent function's event on another instance", "function", name, "invocation", inv.ID, "reason", failure.Message)
			continue
		}
		return out, err
	}
}

// cancelledCall says whether an invocation's error only says that its
// context ended: the worker client's answer when the caller gave up.
func cancelledCall(err error) bool {
	var failure *workerapi.Failure
	if errors.As(err, &failure) {
		return failure.Kind == workerapi.FailureInstanceGone
	}
	return errors.Is(err, context.Canceled)
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
	st.mu.Unlock()
	in := g.inst
	out := Outcome{Version: in.version, Instance: in.id, Worker: in.w.id, Cold: g.cold, Wait: r.clock.Now().Sub(arrived)}
	if g.cold {
		// The part of the instance's init this request actually waited
		// for: a request that arrived late in a start waited less.
		out.Init = min(in.init, out.Wait)
	}

	if in.w.ctx.Err() != nil && r.ctx.Err() == nil {
		// The worker was removed after this slot was granted: the event
		// was never sent, so it may run on another instance.
		r.release(st, in, true, 0)
		return out, &workerapi.Failure{Kind: workerapi.FailureNotDelivered, Message: fmt.Sprintf("worker %s was removed", in.w.id)}
	}
	started := r.clock.Now()
	inv.Deadline = started.Add(spec.Timeout())
	// A client that goes away does not cancel the invocation (as on
	// Lambda): it runs to completion or its timeout and is recorded. The
	// worker's removal (or the router's shutdown) does end it.
	ictx, cancel := r.withTimeout(context.WithoutCancel(ctx), spec.Timeout())
	stopLink := context.AfterFunc(in.w.ctx, cancel)
	res, err := in.w.api.Invoke(ictx, in.id, inv)
	stopLink()
	cancel()
	out.Exec = r.clock.Now().Sub(started)
	out.Result = res
	if err != nil && errors.Is(context.Cause(ictx), errTimedOut) && cancelledCall(err) {
		// The function's time ran out here a moment before the worker's
		// own answer saying so (a remote worker kills the instance
		// before it answers), so the call ended as cancelled: the
		// failure is the timeout. The worker kills the instance of a
		// cancelled call.
		err = &workerapi.Failure{Kind: workerapi.FailureTimeout, Message: fmt.Sprintf("function timed out after %s", spec.Timeout())}
	}

	var failure *workerapi.Failure
	dead := errors.As(err, &failure) && !failure.InstanceAlive
	if errors.Is(err, workerapi.ErrWorkerUnavailable) || (failure != nil &&
		(failure.Kind == workerapi.FailureWorkerLost || failure.Kind == workerapi.FailureNotDelivered)) {
		// An instance that died says this too: only a hint to check.
		r.suspectWorker(in.w)
	}
	if err != nil && in.w.ctx.Err() != nil {
		dead = true
		if r.ctx.Err() == nil {
			err = &workerapi.Failure{Kind: workerapi.FailureWorkerLost, Message: fmt.Sprintf("worker %s was lost while the invocation ran: %v", in.w.id, err)}
		}
	}
	r.release(st, in, dead, out.Exec)
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
		st.takeLocked(in, r.clock.Now())
		st.mu.Unlock()
		return grant{inst: in}, nil
	}
	if err := r.admitLocked(st); err != nil {
		st.mu.Unlock()
		return grant{}, err
	}
	w := &waiter{ch: make(chan grant, 1), enqueued: r.clock.Now()}
	st.queue = append(st.queue, w)
	st.mu.Unlock()
	r.reconcile(st)

	timeout, stopTimer := r.after(r.opts.QueueTimeout)
	defer stopTimer()
	var cause error
	select {
	case g := <-w.ch:
		return g, g.err
	case <-ctx.Done():
		cause = ctx.Err()
	case <-timeout:
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
		r.release(st, g.inst, false, 0)
	}
	return grant{}, cause
}

// release returns a slot; dead says the instance did not survive; exec is
// how long the slot was used (0: not used).
func (r *Router) release(st *fnState, in *instance, dead bool, exec time.Duration) {
	st.mu.Lock()
	in.inflight--
	if exec > 0 {
		st.observeServiceLocked(exec)
	}
	now := r.clock.Now()
	switch {
	case st.released:
		// The instance belongs to the new owner now; nothing to hand over.
	case dead:
		if st.instances[in.key()] == in {
			st.stopLocked(in)
		}
	case in.state != stateReady:
	case st.removed || in.recycle:
		if in.inflight == 0 {
			st.stopLocked(in)
		}
	case in.version != st.fn.Version:
		// An instance of an older version serves waiting requests only
		// while the newest version has no ready instance.
		if !st.versionReadyLocked(st.fn.Version) {
			st.handoffLocked(in, now, false)
		}
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

// versionReadyLocked reports whether the version has a ready instance.
func (st *fnState) versionReadyLocked(version int) bool {
	for _, in := range st.instances {
		if in.version == version && in.state == stateReady && !in.recycle {
			return true
		}
	}
	return false
}

// pickLocked prefers the busiest instance of the newest version with a
// free slot, then the most recently used, so that load packs onto few
// instances and the rest go idle and can be scaled down. While the newest
// version has no ready instance, instances of older versions still alive
// (busy when it was deployed) are used instead.
func (st *fnState) pickLocked() *instance {
	var best, fallback *instance
	newestReady := false
	better := func(in, than *instance) bool {
		return than == nil || in.inflight > than.inflight ||
			(in.inflight == than.inflight && in.lastUsed.After(than.lastUsed))
	}
	for _, in := range st.instances {
		if in.state != stateReady || in.recycle {
			continue
		}
		if in.version == st.fn.Version {
			newestReady = true
		}
		if in.inflight >= in.capacity {
			continue
		}
		if in.version == st.fn.Version {
			if better(in, best) {
				best = in
			}
		} else if better(in, fallback) {
			fallback = in
		}
	}
	if best == nil && !newestReady {
		return fallback
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
	delete(st.instances, in.key())
	st.stopped = append(st.stopped, in)
}

// startingLocked counts the starts in progress of a version.
func (st *fnState) startingLocked(version int) int {
	n := 0
	for ps := range st.starts {
		if ps.version == version && !ps.cancelled {
			n++
		}
	}
	return n
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

// InstanceExited handles a worker event about an instance that died. An
// event without a worker id matches the instance id on any worker.
func (r *Router) InstanceExited(ev workerapi.Event) {
	r.mu.RLock()
	st, ok := r.fns[ev.Function]
	r.mu.RUnlock()
	if !ok {
		return
	}
	st.mu.Lock()
	var found *instance
	for k, in := range st.instances {
		if k.id == ev.Instance && (ev.Worker == "" || k.worker == ev.Worker) {
			found = in
			break
		}
	}
	if found != nil {
		found.state = stateStopping
		delete(st.instances, found.key())
	}
	st.mu.Unlock()
	if found != nil {
		r.unreserve(found.res)
		r.log.Info("instance exited", "function", ev.Function, "worker", found.w.id, "instance", ev.Instance, "reason", ev.Reason)
		r.reconcile(st)
	}
}

// Run performs periodic scale-down and min-scale checks until ctx ends.
func (r *Router) Run(ctx context.Context) {
	for {
		tick, stop := r.after(r.opts.Tick)
		select {
		case <-ctx.Done():
			stop()
			return
		case <-r.ctx.Done():
			stop()
			return
		case <-tick:
		}
		r.reconcileAll()
	}
}

// Shutdown refuses new requests, lets in-flight ones finish until ctx ends,
// then cancels pending starts, stops every instance and waits for the
// router's goroutines.
func (r *Router) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	r.draining = true
	r.mu.Unlock()

	done := make(chan struct{})
	go func() { r.inflight.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("in-flight invocations did not finish: %w", ctx.Err())
	}
	for _, st := range r.states() {
		st.mu.Lock()
		st.removed = true
		r.updateTickedLocked(st)
		for _, w := range st.queue {
			w.ch <- grant{err: ErrShuttingDown}
		}
		st.queue = nil
		for ps := range st.starts {
			ps.cancelled = true
		}
		if r.opts.LeaveInstances {
			st.released = true
			st.leaveAllLocked(r)
		} else {
			for _, in := range st.instances {
				st.stopLocked(in)
			}
		}
		st.mu.Unlock()
		r.flushStops(st)
	}
	// Pending starts end now and stop their starting instances
	// themselves; invocations still running end with their workers.
	r.cancel()
	r.tmu.Lock()
	r.closed = true
	r.tmu.Unlock()
	r.tasks.Wait()
	// Invocations cut off above return as their workers' contexts end;
	// wait for them (and the goroutine counting them), within reason.
	late, stop := r.after(r.opts.StopTimeout)
	defer stop()
	select {
	case <-done:
	case <-late:
		r.log.Warn("invocations still running after shutdown")
	}
	return err
}

// observe publishes the function's gauges, skipping those unchanged since
// the last call (the Observer's label lookups are not free, and most
// reconciles change nothing).
func (r *Router) observe(st *fnState) {
	if r.opts.Observer == nil {
		return
	}
	st.omu.Lock()
	defer st.omu.Unlock()
	st.mu.Lock()
	g := shownGauges{depth: len(st.queue)}
	if !st.removed {
		for _, in := range st.instances {
			if in.state == stateReady {
				g.ready++
			}
		}
		g.starting = st.startingLocked(st.fn.Version)
	}
	last := st.shown
	st.shown = &g
	st.mu.Unlock()
	if last == nil || last.ready != g.ready || last.starting != g.starting {
		r.opts.Observer.ObserveInstances(st.name, g.ready, g.starting)
	}
	if last == nil || last.depth != g.depth {
		r.opts.Observer.ObserveQueue(st.name, g.depth)
	}
}

// InstanceStatus describes one instance for status output.
type InstanceStatus struct {
	ID       string    `json:"id"`
	Worker   string    `json:"worker,omitempty"`
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
	now := r.clock.Now()
	st.mu.Lock()
	defer st.mu.Unlock()
	s := Status{Starting: st.startingLocked(st.fn.Version), Stopping: st.stopping, Queued: len(st.queue), Instances: []InstanceStatus{}}
	for ps := range st.starts {
		if ps.cancelled {
			s.Stopping++ // a cancelled start ends with a stop on its worker
		}
	}
	for _, in := range st.instances {
		is := InstanceStatus{ID: in.id, Worker: in.w.id, Version: in.version, InFlight: in.inflight, Capacity: in.capacity, Served: in.served, LastUsed: in.lastUsed}
		if in.inflight == 0 {
			is.IdleFor = now.Sub(in.idleSince).Round(time.Millisecond).String()
		}
		s.Instances = append(s.Instances, is)
	}
	sort.Slice(s.Instances, func(a, b int) bool { return s.Instances[a].ID < s.Instances[b].ID })
	return s, true
}
