package router

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/baton-faas/baton/internal/controlplane/placement"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/workerapi"
)

// workerState is a worker the router places instances on.
type workerState struct {
	id        string
	api       workerapi.Worker
	isolation string
	capacity  workerapi.Resources
	// ctx ends when the worker is removed or the router shuts down:
	// starts placed on the worker and invocations running there end with
	// it.
	ctx    context.Context
	cancel context.CancelFunc

	// Guarded by Router.wmu: what the router's own instances (starting
	// ones included) hold on the worker.
	reserved  workerapi.Resources
	instances int
	apps      map[string]int
	// unreachableUntil: a start could not reach the worker; placement
	// passes it over until then (it is probably gone, and will be removed
	// when the cluster proves it or its membership expires).
	unreachableUntil time.Time

	// rmu guards ready: starts waiting for their events (readiness.go).
	rmu   sync.Mutex
	ready readiness
}

// unreachableFor is how long placement passes over a worker a start could
// not reach.
const unreachableFor = 5 * time.Second

// workerUnreachable notes that a start could not reach w, and tells the
// cluster.
func (r *Router) workerUnreachable(w *workerState) {
	r.wmu.Lock()
	w.unreachableUntil = r.clock.Now().Add(unreachableFor)
	r.wmu.Unlock()
	r.suspectWorker(w)
}

// suspectWorker tells the cluster that w may be gone.
func (r *Router) suspectWorker(w *workerState) {
	if r.opts.OnWorkerUnreachable != nil {
		r.opts.OnWorkerUnreachable(w.id)
	}
}

// reservation is what one instance (or start) holds on its worker until
// it stops; release is idempotent.
type reservation struct {
	w        *workerState
	memoryMB int
	app      string
	released bool // guarded by Router.wmu
}

// AddWorker adds a worker to place instances on, identified by the ID its
// Info reports. Functions waiting for room are reconsidered at once.
func (r *Router) AddWorker(ctx context.Context, w workerapi.Worker) error {
	info, err := w.Info(ctx)
	if err != nil {
		return fmt.Errorf("add worker: %w", err)
	}
	if info.ID == "" {
		return fmt.Errorf("add worker: the worker reports no id")
	}
	ws := &workerState{id: info.ID, api: w, isolation: info.Isolation, capacity: info.Capacity, apps: map[string]int{}}
	ws.ctx, ws.cancel = context.WithCancel(r.ctx)
	r.wmu.Lock()
	if _, ok := r.workers[info.ID]; ok {
		r.wmu.Unlock()
		ws.cancel()
		return fmt.Errorf("add worker %s: %w", info.ID, ErrWorkerExists)
	}
	r.workers[info.ID] = ws
	r.wmu.Unlock()
	r.log.Info("worker added", "worker", info.ID, "isolation", info.Isolation, "memoryMB", info.Capacity.MemoryMB)
	r.reconcileAll()
	return nil
}

// RemoveWorker forgets a worker (gone, or leaving): starts placed on it
// are cancelled and retried elsewhere, its instances leave the router's
// view, and invocations running on them fail as a worker failure (the
// event may have run, so it is not retried). Requests in the queue are
// served by instances on the other workers.
func (r *Router) RemoveWorker(id string) bool {
	r.wmu.Lock()
	ws, ok := r.workers[id]
	delete(r.workers, id)
	r.wmu.Unlock()
	if !ok {
		return false
	}
	ws.cancel()
	for _, st := range r.states() {
		st.mu.Lock()
		for k, in := range st.instances {
			if in.w == ws {
				in.state = stateStopping
				delete(st.instances, k)
				r.unreserve(in.res)
			}
		}
		st.mu.Unlock()
	}
	r.log.Info("worker removed", "worker", id)
	r.reconcileAll()
	return true
}

// Workers returns the IDs of the workers instances are placed on.
func (r *Router) Workers() []string {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	ids := make([]string, 0, len(r.workers))
	for id := range r.workers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// place chooses a worker for an instance of fn and reserves its memory
// there, so that concurrent placements see each other.
func (r *Router) place(fn function.Function) (*reservation, error) {
	req := placement.Request{Function: fn.Name, App: function.AppOf(fn.Name, fn.Spec), MemoryMB: fn.Spec.MemoryMB}
	now := r.clock.Now()
	r.wmu.Lock()
	defer r.wmu.Unlock()
	// One candidate slice, reused under wmu: the policy keeps none of it.
	cands := r.cands[:0]
	for _, ws := range r.workers {
		if now.Before(ws.unreachableUntil) {
			continue
		}
		cands = append(cands, placement.Candidate{
			Info: workerapi.Info{
				ID: ws.id, Isolation: ws.isolation, Capacity: ws.capacity,
				Reserved: ws.reserved, Instances: ws.instances, Sandboxes: len(ws.apps),
			},
			Apps: ws.apps,
		})
	}
	id, err := r.policy.Place(req, cands)
	clear(cands) // drop the apps maps' references until the next start
	r.cands = cands
	if err != nil {
		return nil, err
	}
	ws, ok := r.workers[id]
	if !ok {
		return nil, fmt.Errorf("placement chose %q, which is not a worker", id)
	}
	return reserveLocked(ws, req), nil
}

// reserveOn reserves what an instance of fn holds on ws (an instance
// adopted rather than placed).
func (r *Router) reserveOn(ws *workerState, fn function.Function) *reservation {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	return reserveLocked(ws, placement.Request{Function: fn.Name, App: function.AppOf(fn.Name, fn.Spec), MemoryMB: fn.Spec.MemoryMB})
}

// reserveLocked counts an instance on ws; Router.wmu is held.
func reserveLocked(ws *workerState, req placement.Request) *reservation {
	ws.reserved.MemoryMB += req.MemoryMB
	ws.instances++
	ws.apps[req.App]++
	return &reservation{w: ws, memoryMB: req.MemoryMB, app: req.App}
}

func (r *Router) unreserve(res *reservation) {
	if res == nil {
		return
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if res.released {
		return
	}
	res.released = true
	ws := res.w
	ws.reserved.MemoryMB -= res.memoryMB
	ws.instances--
	if ws.apps[res.app]--; ws.apps[res.app] <= 0 {
		delete(ws.apps, res.app)
	}
}
