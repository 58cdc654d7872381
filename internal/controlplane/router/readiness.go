package router

import (
	"context"
	"fmt"
	"time"

	"github.com/baton-faas/baton/internal/workerapi"
)

// Readiness from events: a worker reports how each start ended on its event
// stream (InstanceReady, InstanceFailed). When the router's owner follows
// that stream and passes those events on (StartEvent), a start waits for
// its event instead of a WaitInstance call: one RPC fewer per cold start.
// Whenever the stream cannot be trusted to deliver it (not followed,
// broken, events lost), the start falls back to WaitInstance.

// startOutcome is how a start ended, as its event told; fallback says no
// event will come and WaitInstance must answer.
type startOutcome struct {
	inst     workerapi.Instance
	err      error
	fallback bool
}

// readiness is a worker's part of it, guarded by its own mutex (a leaf).
type readiness struct {
	// followed: the worker's events reach StartEvent.
	followed bool
	// waits holds the starts waiting for their event, by instance id.
	waits map[string]chan startOutcome
	// requests counts StartInstance calls in flight: an event can arrive
	// before its start registered its wait; while a call is in flight,
	// events nobody waits for are kept in early (bounded, oldest dropped).
	requests   int
	early      map[string]startOutcome
	earlyOrder []string
}

// maxEarly bounds the events kept for starts not yet registered; a worker
// shared by several controllers also reports the others' starts.
const maxEarly = 1024

// eventGrace is how long a start waits for its event before it asks
// WaitInstance anyway: a safety net should an event go missing unnoticed.
const eventGrace = 5 * time.Second

// StartEvent passes on a worker's InstanceReady or InstanceFailed event
// (other kinds are ignored). The worker is ev.Worker.
func (r *Router) StartEvent(ev workerapi.Event) {
	var out startOutcome
	switch ev.Kind {
	case workerapi.InstanceReady:
		if ev.Ready != nil {
			out.inst = *ev.Ready
		} else {
			out.inst = workerapi.Instance{ID: ev.Instance, Function: ev.Function, Version: ev.Version, State: workerapi.Ready}
		}
		if out.inst.State == "" {
			out.inst.State = workerapi.Ready
		}
	case workerapi.InstanceFailed:
		if ev.InitErr != nil {
			out.err = ev.InitErr
		} else {
			out.err = fmt.Errorf("instance %s failed to start: %s", ev.Instance, ev.Reason)
		}
	default:
		return
	}
	ws := r.worker(ev.Worker)
	if ws == nil {
		return
	}
	rd := &ws.ready
	ws.rmu.Lock()
	defer ws.rmu.Unlock()
	if ch, ok := rd.waits[ev.Instance]; ok {
		delete(rd.waits, ev.Instance)
		ch <- out
		return
	}
	if rd.requests == 0 || !rd.followed {
		return // not one of this router's starts, or one that fell back
	}
	if rd.early == nil {
		rd.early = map[string]startOutcome{}
	}
	if _, dup := rd.early[ev.Instance]; !dup {
		rd.earlyOrder = append(rd.earlyOrder, ev.Instance)
	}
	rd.early[ev.Instance] = out
	for len(rd.earlyOrder) > maxEarly {
		delete(rd.early, rd.earlyOrder[0])
		rd.earlyOrder = rd.earlyOrder[1:]
	}
}

// FollowingEvents says whether the worker's InstanceReady and
// InstanceFailed events reach StartEvent from now on. false (the stream
// broke, or events were lost) sends the starts waiting for an event to
// WaitInstance; a Resync is false then true.
func (r *Router) FollowingEvents(worker string, on bool) {
	ws := r.worker(worker)
	if ws == nil {
		return
	}
	ws.rmu.Lock()
	defer ws.rmu.Unlock()
	ws.ready.followed = on
	if on {
		return
	}
	for id, ch := range ws.ready.waits {
		delete(ws.ready.waits, id)
		ch <- startOutcome{fallback: true}
	}
	ws.ready.early, ws.ready.earlyOrder = nil, nil
}

// worker returns the worker with the id, or nil.
func (r *Router) worker(id string) *workerState {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	return r.workers[id]
}

// startRequested counts a StartInstance call in flight on ws; done undoes it.
func (ws *workerState) startRequested() (done func()) {
	ws.rmu.Lock()
	ws.ready.requests++
	ws.rmu.Unlock()
	return func() {
		ws.rmu.Lock()
		ws.ready.requests--
		if ws.ready.requests == 0 {
			ws.ready.early, ws.ready.earlyOrder = nil, nil
		}
		ws.rmu.Unlock()
	}
}

// awaitEvent registers a wait for the instance's start event. It returns
// nil when the worker's events are not followed (use WaitInstance), else
// a channel that receives the outcome once, and a function that withdraws
// the wait. Call it before the StartInstance call is counted done.
func (ws *workerState) awaitEvent(id string) (<-chan startOutcome, func()) {
	ws.rmu.Lock()
	defer ws.rmu.Unlock()
	rd := &ws.ready
	if !rd.followed {
		return nil, nil
	}
	ch := make(chan startOutcome, 1)
	if out, ok := rd.early[id]; ok {
		delete(rd.early, id) // its id stays in earlyOrder until trimmed
		ch <- out
		return ch, func() {}
	}
	if rd.waits == nil {
		rd.waits = map[string]chan startOutcome{}
	}
	rd.waits[id] = ch
	return ch, func() {
		ws.rmu.Lock()
		defer ws.rmu.Unlock()
		if rd.waits[id] == ch {
			delete(rd.waits, id)
		}
	}
}

// waitReady waits for the started instance to leave Starting: by its
// event when the worker's events are followed, else (or when they fail
// us) with WaitInstance.
func (r *Router) waitReady(ctx context.Context, w *workerState, id string, ch <-chan startOutcome, withdraw func()) (workerapi.Instance, error) {
	if ch != nil {
		grace, stop := r.after(eventGrace)
		select {
		case out := <-ch:
			stop()
			if !out.fallback {
				return out.inst, out.err
			}
		case <-ctx.Done():
			stop()
			withdraw()
			return workerapi.Instance{}, fmt.Errorf("wait for instance %s: %w", id, ctx.Err())
		case <-grace:
			withdraw()
			r.log.Debug("no start event in time, asking the worker", "worker", w.id, "instance", id)
		}
	}
	return w.api.WaitInstance(ctx, id)
}
