package router

import (
	"fmt"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/workerapi"
)

// Hand-over between controllers (cluster mode): a router holds only the
// functions its controller owns. When ownership moves, the old owner
// releases a function (Release: its instances keep running) and the new
// one takes it over with the instances the workers report (TakeOver), so
// that no warm instance is lost or started twice. Instances found later
// (a worker that came back) are adopted one by one (Adopt).

// Adoption says what Adopt did with an instance.
type Adoption int

const (
	// Adopted: the router routes to the instance now.
	Adopted Adoption = iota
	// Known: the router already had the instance.
	Known
	// NotHeld: the router does not hold the instance's function.
	NotHeld
	// NotReady: the instance is starting or ended; whoever started it
	// decides.
	NotReady
	// UnknownWorker: the instance's worker is not one the router uses.
	UnknownWorker
	// Superseded: the instance runs an older version than the router
	// holds; it was stopped.
	Superseded
	// Newer: the instance runs a newer version than the router holds (its
	// deploy has yet to reach this router); it is left alone.
	Newer
)

func (a Adoption) String() string {
	switch a {
	case Adopted:
		return "adopted"
	case Known:
		return "known"
	case NotHeld:
		return "function not held"
	case NotReady:
		return "not ready"
	case UnknownWorker:
		return "unknown worker"
	case Superseded:
		return "superseded"
	case Newer:
		return "newer version"
	}
	return fmt.Sprintf("adoption(%d)", int(a))
}

// TakeOver adds a function together with instances of it that workers
// already run (a previous owner's), before the autoscaler first looks at
// it, so that they count as ready and nothing starts twice. Instances
// that do not fit (see Adopt) are reported, not taken.
func (r *Router) TakeOver(fn function.Function, found []workerapi.Instance) map[string]Adoption {
	r.mu.Lock()
	st, ok := r.fns[fn.Name]
	if !ok {
		st = &fnState{name: fn.Name, fn: fn, instances: map[instKey]*instance{}, starts: map[*pendingStart]struct{}{}}
		st.setScalerLocked(fn.Spec.Autoscaler)
		r.fns[fn.Name] = st
	}
	r.mu.Unlock()
	if ok {
		r.SetFunction(fn)
	}
	out := make(map[string]Adoption, len(found))
	for _, in := range found {
		out[in.Worker+"/"+in.ID] = r.adoptInto(st, in)
	}
	r.reconcile(st)
	return out
}

// Adopt takes over one ready instance a worker runs for a function the
// router holds. in.Worker names the worker.
func (r *Router) Adopt(in workerapi.Instance) Adoption {
	r.mu.RLock()
	st, ok := r.fns[in.Function]
	r.mu.RUnlock()
	if !ok {
		return NotHeld
	}
	a := r.adoptInto(st, in)
	if a == Adopted {
		r.reconcile(st)
	}
	return a
}

func (r *Router) adoptInto(st *fnState, found workerapi.Instance) Adoption {
	if found.State != workerapi.Ready {
		return NotReady
	}
	r.wmu.Lock()
	ws, ok := r.workers[found.Worker]
	r.wmu.Unlock()
	if !ok {
		return UnknownWorker
	}
	st.mu.Lock()
	if st.removed {
		st.mu.Unlock()
		return NotHeld
	}
	key := instKey{found.Worker, found.ID}
	if _, ok := st.instances[key]; ok {
		st.mu.Unlock()
		return Known
	}
	switch {
	case found.Version > st.fn.Version:
		st.mu.Unlock()
		return Newer
	case found.Version < st.fn.Version:
		st.mu.Unlock()
		r.goTask(func() { r.stopOnWorker(ws, found.ID, st.name) })
		return Superseded
	}
	res := r.reserveOn(ws, st.fn)
	now := r.clock.Now()
	in := &instance{id: found.ID, w: ws, res: res, version: found.Version, capacity: max(found.Capacity, 1),
		init: found.InitDuration, idleSince: now, lastUsed: now}
	st.instances[key] = in
	st.handoffLocked(in, now, false)
	st.mu.Unlock()
	r.log.Info("instance adopted", "function", st.name, "worker", ws.id, "instance", found.ID, "version", found.Version)
	return Adopted
}

// Tracks reports whether the router routes to an instance.
func (r *Router) Tracks(function, worker, id string) bool {
	r.mu.RLock()
	st, ok := r.fns[function]
	r.mu.RUnlock()
	if !ok {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	_, ok = st.instances[instKey{worker, id}]
	return ok
}

// Release forgets a function that another controller now owns, leaving
// its instances running for that controller to adopt. Requests waiting
// here fail with ErrReleased (they never ran, so they may be sent to the
// new owner); starts in progress are cancelled; invocations running finish
// on their instances.
func (r *Router) Release(name string) bool {
	r.mu.Lock()
	st, ok := r.fns[name]
	delete(r.fns, name)
	r.mu.Unlock()
	if !ok {
		return false
	}
	st.mu.Lock()
	st.removed, st.released = true, true
	r.updateTickedLocked(st)
	for _, w := range st.queue {
		w.ch <- grant{err: ErrReleased}
	}
	st.queue = nil
	for ps := range st.starts {
		ps.cancelled = true
		ps.cancel()
	}
	st.leaveAllLocked(r)
	st.mu.Unlock()
	r.observe(st)
	return true
}

// Held returns the names of the functions the router holds.
func (r *Router) Held() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.fns))
	for name := range r.fns {
		out = append(out, name)
	}
	return out
}

// leaveAllLocked drops the function's instances from the router's view
// without stopping them, and gives back what they held in placement.
func (st *fnState) leaveAllLocked(r *Router) {
	for k, in := range st.instances {
		in.state = stateStopping
		delete(st.instances, k)
		r.unreserve(in.res)
	}
}
