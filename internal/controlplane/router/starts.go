package router

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/baton-faas/baton/internal/controlplane/autoscaler"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/workerapi"
)

// Scaling: the autoscaler's plan carried out, instance starts on the
// workers (cancelled when superseded) and stops.

// reconcile runs the autoscaler for one function and carries out its plan.
func (r *Router) reconcile(st *fnState) {
	st.mu.Lock()
	if st.removed {
		r.updateTickedLocked(st)
		st.mu.Unlock()
		r.flushStops(st)
		return
	}
	now := r.clock.Now()
	version := st.fn.Version
	in := autoscaler.Input{
		Demand:      len(st.queue),
		Concurrency: st.fn.Spec.Concurrency,
		Starting:    st.startingLocked(version),
		MinScale:    st.fn.Spec.MinScale,
		MaxScale:    st.fn.Spec.MaxScale,
		IdleTimeout: st.fn.Spec.IdleTimeout(),
		Now:         now,
	}
	idle := map[string]*instance{}
	for _, i := range st.instances {
		// Calls running on older versions finish there; only the queue
		// and the newest version's own calls are its demand, so a
		// redeploy does not start instances the old calls never use.
		if i.state != stateReady || i.version != version {
			continue
		}
		in.Ready++
		in.Demand += i.inflight
		if i.inflight == 0 {
			id := i.w.id + "/" + i.id // instance ids are unique per worker
			idle[id] = i
			in.Idle = append(in.Idle, autoscaler.IdleInstance{ID: id, Since: i.idleSince})
		}
	}
	d := st.scaler.Plan(in)
	if d.Start > 0 && st.failedVersion == version && now.Before(st.retryAt) {
		demandOnly := in
		demandOnly.MinScale = 0
		d.Start = max(0, autoscaler.Desired(demandOnly)-in.Ready-in.Starting)
	}
	for _, id := range d.Stop {
		st.stopLocked(idle[id])
	}
	type launch struct {
		ps  *pendingStart
		ctx context.Context
	}
	launches := make([]launch, 0, d.Start)
	for range d.Start {
		ctx, cancel := context.WithCancel(r.ctx)
		ps := &pendingStart{version: version, cancel: cancel}
		st.starts[ps] = struct{}{}
		launches = append(launches, launch{ps, ctx})
	}
	fn := st.fn
	r.updateTickedLocked(st)
	st.mu.Unlock()

	for _, l := range launches {
		if !r.goTask(func() { r.start(l.ctx, st, fn, l.ps) }) {
			st.mu.Lock()
			delete(st.starts, l.ps)
			st.mu.Unlock()
			l.ps.cancel()
		}
	}
	r.flushStops(st)
	r.observe(st)
}

// flushStops asks the workers to stop the instances stopLocked collected.
func (r *Router) flushStops(st *fnState) {
	st.mu.Lock()
	stopped := st.stopped
	st.stopped = nil
	st.stopping += len(stopped)
	st.mu.Unlock()
	for _, in := range stopped {
		stop := func() {
			r.stopOnWorker(in.w, in.id, st.name)
			r.unreserve(in.res)
			st.mu.Lock()
			st.stopping--
			st.mu.Unlock()
		}
		if !r.goTask(stop) {
			stop() // shutting down: the caller waits for it
		}
	}
}

// stopOnWorker stops an instance (ready or starting) on its worker. It
// outlives the router's lifetime (a stop is cleanup) but not StopTimeout.
func (r *Router) stopOnWorker(w *workerState, id, fn string) {
	ctx, cancel := r.withTimeout(context.WithoutCancel(r.ctx), r.opts.StopTimeout)
	defer cancel()
	if err := w.api.StopInstance(ctx, id); err != nil {
		r.log.Warn("stop instance", "function", fn, "worker", w.id, "instance", id, "err", err)
	}
}

// start places an instance of fn, starts it and waits until it is ready.
// It runs as a task; ctx ends when the start is cancelled (superseded
// version, removed function) or the router shuts down.
func (r *Router) start(ctx context.Context, st *fnState, fn function.Function, ps *pendingStart) {
	defer ps.cancel()
	ctx, cancel := r.withTimeout(ctx, r.opts.StartTimeout)
	defer cancel()
	began := r.clock.Now()
	res, err := r.place(fn)
	var w *workerState
	var ready workerapi.Instance
	if err != nil {
		// The placement's error first: its code (no_capacity) is what
		// clients should see.
		err = fmt.Errorf("%w (%w)", err, ErrStartFailed)
	} else {
		w = res.w
		// The worker's removal cancels the start too.
		unlink := context.AfterFunc(w.ctx, cancel)
		ready, err = r.startOn(ctx, w, fn)
		unlink()
	}
	timedOut := errors.Is(context.Cause(ctx), errTimedOut)
	if err != nil && timedOut {
		err = fmt.Errorf("%w: the instance was not ready within %s: %w", ErrStartFailed, r.opts.StartTimeout, err)
	}
	if err == nil {
		switch ready.State {
		case workerapi.Starting, workerapi.Failed, workerapi.Stopped:
			err = fmt.Errorf("%w: the worker answered state %q for a finished start", ErrStartFailed, ready.State)
		}
	}

	st.mu.Lock()
	delete(st.starts, ps)
	// A start that ended because it was no longer wanted is not a failure.
	cancelled := ps.cancelled || r.ctx.Err() != nil || (w != nil && w.ctx.Err() != nil && !timedOut)
	current := !st.removed && st.fn.Version == fn.Version && !cancelled
	// A worker the start could not reach is not the function's failure:
	// the start goes elsewhere and the worker is passed over.
	unreachable := err != nil && w != nil && !timedOut && errors.Is(err, workerapi.ErrWorkerUnavailable)
	if err != nil && current && !unreachable {
		// Counted under the lock that drops the start, so that a
		// reconcile before startFailed runs sees the back-off, not
		// just a missing instance (it would retry at once).
		st.countFailureLocked(fn.Version, r.clock.Now())
	}
	if err != nil || !current {
		st.mu.Unlock()
		if unreachable {
			r.log.Warn("a start could not reach its worker; starting elsewhere", "function", fn.Name, "worker", w.id, "err", err)
			r.workerUnreachable(w)
			err = nil
		}
		switch {
		case ready.ID != "" && unreachable:
			// Do not hold the next start up on a worker that may hang.
			id := ready.ID
			r.goTask(func() { r.stopOnWorker(w, id, fn.Name) })
		case ready.ID != "":
			// Stopping a starting instance cancels its start on the
			// worker; stopping a failed one is harmless.
			r.stopOnWorker(w, ready.ID, fn.Name)
		}
		r.unreserve(res)
		if err != nil && current {
			r.startFailed(st, fn, err, r.clock.Now().Sub(began))
			return
		}
		if err != nil {
			r.log.Debug("instance start cancelled", "function", fn.Name, "version", fn.Version, "err", err)
		}
		if !st.isRemoved() {
			r.reconcile(st)
		}
		return
	}
	now := r.clock.Now()
	in := &instance{id: ready.ID, w: w, res: res, version: fn.Version, capacity: max(ready.Capacity, 1), init: ready.InitDuration}
	in.idleSince, in.lastUsed = now, now
	if st.failedVersion == fn.Version {
		st.failures, st.retryAt = 0, time.Time{}
	}
	st.instances[in.key()] = in
	st.handoffLocked(in, now, true)
	st.mu.Unlock()
	r.reconcile(st)
}

// startOn asks w to start an instance of fn and waits for the start to
// end. The returned instance has an ID whenever the worker accepted the
// start, even on error, so that the caller can stop it.
func (r *Router) startOn(ctx context.Context, w *workerState, fn function.Function) (workerapi.Instance, error) {
	requested := w.startRequested()
	started, err := w.api.StartInstance(ctx, workerapi.InstanceSpec{
		Function: fn.Name, Version: fn.Version, App: function.AppOf(fn.Name, fn.Spec), Spec: fn.Spec, CodeDigest: fn.CodeDigest,
	})
	if err != nil {
		requested()
		return workerapi.Instance{}, err
	}
	event, withdraw := w.awaitEvent(started.ID)
	requested()
	ready, err := r.waitReady(ctx, w, started.ID, event, withdraw)
	if err != nil {
		return workerapi.Instance{ID: started.ID}, err
	}
	ready.ID = started.ID
	return ready, nil
}

func (st *fnState) isRemoved() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.removed
}

// startFailed handles a failed start of the function's newest version.
func (r *Router) startFailed(st *fnState, fn function.Function, err error, took time.Duration) {
	var initErr *workerapi.InitError
	isInit := errors.As(err, &initErr)
	attrs := []any{"function", fn.Name, "version", fn.Version, "after", took, "err", err}
	if isInit && len(initErr.Logs) > 0 {
		// What the function printed usually says why it failed; a
		// start no request waits for (minScale, a retry) has no
		// record to keep it in.
		attrs = append(attrs, "output", logTail(initErr.Logs, maxLoggedInitOutput))
	}
	r.log.Warn("instance start failed", attrs...)
	waiterErr := err
	if !isInit && !errors.Is(err, ErrStartFailed) {
		waiterErr = fmt.Errorf("%w: %w", ErrStartFailed, err)
	}

	st.mu.Lock()
	if st.removed || st.fn.Version != fn.Version {
		st.mu.Unlock()
		return
	}
	// Fail as many waiting requests as this instance would have served:
	// a broken function answers every request with its init error
	// instead of letting them all time out, while a transient failure
	// costs only the requests it was meant to serve. Requests that older
	// versions' instances can still serve keep waiting for them.
	if !st.versionReadyLocked(fn.Version) && st.olderVersionAliveLocked() {
		st.mu.Unlock()
		r.reconcile(st)
		return
	}
	for n := fn.Spec.Concurrency; n > 0 && len(st.queue) > 0; n-- {
		st.queue[0].ch <- grant{err: waiterErr}
		st.queue = st.queue[1:]
	}
	st.mu.Unlock()
	r.reconcile(st)
}

// countFailureLocked counts a failed start of version and sets when the
// next start that only serves minScale may be tried.
func (st *fnState) countFailureLocked(version int, now time.Time) {
	if st.failedVersion != version {
		st.failedVersion, st.failures = version, 0
	}
	st.failures++
	st.retryAt = now.Add(startBackoff(st.failures))
}

// olderVersionAliveLocked reports whether an instance of an older version
// can still serve waiting requests.
func (st *fnState) olderVersionAliveLocked() bool {
	for _, in := range st.instances {
		if in.version != st.fn.Version && in.state == stateReady && !in.recycle {
			return true
		}
	}
	return false
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
