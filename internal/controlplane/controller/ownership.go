package controller

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/baton-faas/baton/internal/controlplane/router"
	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/store"
	"github.com/baton-faas/baton/internal/workerapi"
)

// Ownership is the split of functions between controller replicas
// (internal/cluster/ownership implements it): each function has one owner
// at a time, which alone keeps its queue, instances and scaling.
type Ownership interface {
	// Owns says whether this controller owns the function now.
	Owns(function string) bool
	// Owner names the controller that serves the function and its
	// address; ok is false while no controller is live.
	Owner(function string) (id, addr string, ok bool)
	// ShardOf is the unit of ownership a function belongs to.
	ShardOf(function string) int
	// Address is a live controller's advertised address ("" if unknown).
	Address(id string) string
	// Close hands everything this controller owns over to the others at
	// once, reporting it lost first.
	Close(ctx context.Context)
}

// ErrNoOwner: no controller took the function over within OwnerWait.
var ErrNoOwner = errdefs.New(errdefs.Unavailable, "no_owner", "no controller owns the function yet")

// ownerPoll is how often a request waiting for ownership to settle looks
// again: ownership moves in heartbeats (a second), so this costs little.
const ownerPoll = 20 * time.Millisecond

// forwardedPatience is how long a forwarded request waits while this
// controller sees another as the owner before sending it there: longer
// than views of a hand-over take to agree, so that requests do not bounce.
const forwardedPatience = 2 * time.Second

func (c *Controller) owns(name string) bool { return c.own == nil || c.own.Owns(name) }

// OwnsFunction says whether this controller serves a function now (every
// function, outside a cluster).
func (c *Controller) OwnsFunction(name string) bool { return c.owns(name) }

func (c *Controller) setKnown(fn function.Function) {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	if old, ok := c.known[fn.Name]; !ok || old.Version <= fn.Version {
		c.known[fn.Name] = fn
	}
}

func (c *Controller) forgetKnown(name string) {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	delete(c.known, name)
}

func (c *Controller) knownFunction(name string) (function.Function, bool) {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	fn, ok := c.known[name]
	return fn, ok
}

func (c *Controller) knownNames() []string {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	out := make([]string, 0, len(c.known))
	for name := range c.known {
		out = append(out, name)
	}
	return out
}

// OwnerOf names the controller that serves a function ("" outside a
// cluster, or while no controller is live).
func (c *Controller) OwnerOf(name string) string {
	if c.own == nil {
		return ""
	}
	id, _, _ := c.own.Owner(name)
	return id
}

// OwnerAddress is the address of the controller that owns a function
// now, when that is another live controller.
func (c *Controller) OwnerAddress(name string) (string, bool) {
	if c.own == nil {
		return "", false
	}
	id, addr, ok := c.own.Owner(name)
	return addr, ok && id != c.self && addr != ""
}

// AddressOf is the API address of a controller that owns functions (""
// when unknown): whatever the ownership last learned of it.
func (c *Controller) AddressOf(id string) string {
	if c.own == nil {
		return ""
	}
	return c.own.Address(id)
}

// Lookup reports whether a function is deployed. A name this controller
// has not heard of is read from the registry, so that a function deployed
// through another controller a moment ago is found before its change
// arrives here.
func (c *Controller) Lookup(ctx context.Context, name string) bool {
	if c.Exists(name) {
		return true
	}
	if c.changes == nil {
		return false
	}
	c.refresh(ctx, name)
	return c.Exists(name)
}

// Route says where an invocation of a function runs: "" means here,
// otherwise the address of the controller that owns it. A request another
// controller forwarded here is not sent on at once: if ownership is
// moving, it waits until this controller owns the function, so two
// controllers that disagree for a moment cannot bounce it. Only when
// another controller has been the owner here for forwardedPatience (the
// forwarder's view was the stale one, and ownership settled elsewhere)
// does it go on there, rather than wait out OwnerWait for nothing.
func (c *Controller) Route(ctx context.Context, name string, forwarded bool) (string, error) {
	if c.own == nil {
		return "", nil
	}
	deadline := time.Now().Add(c.ownerWait)
	var elsewhereSince time.Time
	for {
		id, addr, ok := c.own.Owner(name)
		if !ok || id == c.self {
			elsewhereSince = time.Time{}
		}
		switch {
		case ok && id == c.self:
			if c.own.Owns(name) && c.router.Has(name) {
				return "", nil
			}
			// Taking it over: the lease or the instances are on their way.
			c.poke()
		case ok && !forwarded:
			return addr, nil
		case ok && addr != "":
			if elsewhereSince.IsZero() {
				elsewhereSince = time.Now()
			} else if time.Since(elsewhereSince) >= forwardedPatience {
				return addr, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%w: function %s (ownership is moving between controllers; retry)", ErrNoOwner, name)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(ownerPoll):
		}
	}
}

// suspectGap is the least time between two checks of one node.
const suspectGap = 250 * time.Millisecond

// Suspect asks the cluster to check a node that could not be reached
// (Options.Suspect), in the background, at most once at a time and once
// per suspectGap per node. Unreachable owners and workers are proven gone
// within milliseconds this way when their processes died.
func (c *Controller) Suspect(node string) {
	if c.suspect == nil || node == "" || node == c.self {
		return
	}
	now := time.Now()
	c.smu.Lock()
	if last, busy := c.suspecting[node]; busy && now.Sub(last) < suspectGap {
		c.smu.Unlock()
		return
	}
	c.suspecting[node] = now
	c.smu.Unlock()
	c.goLoop(func(ctx context.Context) {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		c.suspect(sctx, node)
	})
}

// OwnerUnreachable is told that the owner of a function could not be
// reached.
func (c *Controller) OwnerUnreachable(function string) {
	if c.own == nil {
		return
	}
	if id, _, ok := c.own.Owner(function); ok {
		c.Suspect(id)
	}
}

// goLoop runs f on a goroutine that Shutdown waits for, with the loops'
// context; before Start (or after Shutdown) it does nothing.
func (c *Controller) goLoop(f func(ctx context.Context)) {
	c.lmu.Lock()
	defer c.lmu.Unlock()
	if c.ctx == nil || c.ctx.Err() != nil {
		return
	}
	c.loops.Add(1)
	go func() {
		defer c.loops.Done()
		f(c.ctx)
	}()
}

// OpenOwnership lets the controller take functions over (see
// Options.HoldOwnership).
func (c *Controller) OpenOwnership() { c.openOnce.Do(func() { close(c.ownershipOpen) }) }

// ShardsChanged is told which shards this controller gained and lost
// (ownership.Options.OnChange). Lost functions are released at once,
// before the next owner may take them; gained ones are taken over by the
// ownership loop, which may take a while (it asks every worker).
func (c *Controller) ShardsChanged(gained, lost []int) {
	if len(lost) > 0 && c.own != nil {
		gone := make(map[int]bool, len(lost))
		for _, s := range lost {
			gone[s] = true
		}
		for _, name := range c.router.Held() {
			if gone[c.own.ShardOf(name)] && c.router.Release(name) {
				c.log.Info("function handed over", "function", name)
			}
		}
	}
	if len(gained) > 0 || len(lost) > 0 {
		c.poke()
	}
}

func (c *Controller) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// followOwnership keeps the router holding exactly the functions this
// controller owns, on every change and every second (ownership also
// changes without telling, when a lease runs out).
func (c *Controller) followOwnership(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-c.ownershipOpen:
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		c.syncOwned(ctx)
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-tick.C:
		}
	}
}

// syncOwned releases what this controller no longer owns and takes over
// what it newly owns, with the instances the workers already run for it.
func (c *Controller) syncOwned(ctx context.Context) {
	for _, name := range c.router.Held() {
		if !c.own.Owns(name) && c.router.Release(name) {
			c.log.Info("function handed over", "function", name)
		}
	}
	var gained []string
	for _, name := range c.knownNames() {
		if c.own.Owns(name) && !c.router.Has(name) {
			gained = append(gained, name)
		}
	}
	if len(gained) == 0 {
		return
	}
	want := make(map[string]bool, len(gained))
	for _, name := range gained {
		want[name] = true
	}
	found := c.instancesOf(ctx, want)
	for _, name := range gained {
		func() {
			defer c.perFunction.Lock(name)()
			fn, ok := c.knownFunction(name)
			if !ok || !c.own.Owns(name) || c.router.Has(name) {
				return
			}
			res := c.router.TakeOver(fn, found[name])
			adopted := 0
			for _, a := range res {
				if a == router.Adopted {
					adopted++
				}
			}
			c.log.Info("function taken over", "function", name, "version", fn.Version, "instancesAdopted", adopted)
		}()
		c.kickAsync(name)
		// Lost again while taking it over: the release above missed it.
		if !c.own.Owns(name) {
			c.router.Release(name)
		}
	}
}

// instancesOf asks every worker, at once, which instances it runs of the
// wanted functions. A worker that does not answer is skipped: its
// instances are adopted when it next joins or at the next audit.
func (c *Controller) instancesOf(ctx context.Context, want map[string]bool) map[string][]workerapi.Instance {
	links := c.workerLinks()
	var mu sync.Mutex
	out := map[string][]workerapi.Instance{}
	var wg sync.WaitGroup
	for id, w := range links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			list, err := w.Instances(lctx)
			if err != nil {
				c.log.Warn("list a worker's instances to take functions over", "worker", id, "err", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, in := range list {
				if want[in.Function] {
					in.Worker = id
					out[in.Function] = append(out[in.Function], in)
				}
			}
		}()
	}
	wg.Wait()
	return out
}

func (c *Controller) workerLinks() map[string]workerapi.Worker {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	out := make(map[string]workerapi.Worker, len(c.workers))
	for id, l := range c.workers {
		out[id] = l.api
	}
	return out
}

// adoptFrom looks at what a worker runs: ready instances of functions
// this controller owns are adopted, those of functions that no longer
// exist are stopped. Others are left to their owners.
func (c *Controller) adoptFrom(ctx context.Context, id string, w workerapi.Worker) {
	list, err := w.Instances(ctx)
	if err != nil {
		c.log.Warn("list a joining worker's instances", "worker", id, "err", err)
		return
	}
	c.settle(ctx, id, w, list, nil)
}

// settle adopts or stops instances on a worker that the router does not
// route to. only, when set, limits it to the instances it names.
func (c *Controller) settle(ctx context.Context, id string, w workerapi.Worker, list []workerapi.Instance, only map[string]bool) {
	for _, in := range list {
		if only != nil && !only[in.ID] {
			continue
		}
		if in.State != workerapi.Ready || !c.owns(in.Function) {
			continue
		}
		in.Worker = id
		if a := c.router.Adopt(in); a != router.NotHeld {
			continue
		}
		// Not held although owned: deleted, or not yet heard of here.
		if c.deployed(ctx, in.Function) {
			continue
		}
		c.log.Info("stopping an orphaned instance", "worker", id, "function", in.Function, "instance", in.ID)
		if err := w.StopInstance(ctx, in.ID); err != nil && !errors.Is(err, workerapi.ErrUnknownInstance) {
			c.log.Warn("stop an orphaned instance", "worker", id, "instance", in.ID, "err", err)
		}
	}
}

// deployed asks the registry itself whether a function exists; on error
// it says yes, so that nothing is stopped on a guess.
func (c *Controller) deployed(ctx context.Context, name string) bool {
	_, err := c.reg.Get(ctx, name)
	return !errors.Is(err, store.ErrNotFound)
}

// auditLoop looks for instances that no controller routes to: started by
// a controller that died before it heard they were ready, or left on a
// worker while it was cut off. An instance is settled only when two
// audits in a row found it untracked, so that a start whose answer is
// still on its way is not mistaken for one.
func (c *Controller) auditLoop(ctx context.Context) {
	suspects := map[string]map[string]bool{} // worker → instance ids
	tick := time.NewTicker(c.auditInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		next := map[string]map[string]bool{}
		for id, w := range c.workerLinks() {
			lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			list, err := w.Instances(lctx)
			if err != nil {
				cancel()
				continue
			}
			untracked := map[string]bool{}
			for _, in := range list {
				if in.State == workerapi.Ready && c.owns(in.Function) && !c.router.Tracks(in.Function, id, in.ID) {
					untracked[in.ID] = true
				}
			}
			again := map[string]bool{}
			for iid := range untracked {
				if suspects[id][iid] {
					again[iid] = true
				}
			}
			if len(again) > 0 {
				c.settle(lctx, id, w, list, again)
			}
			cancel()
			next[id] = untracked
		}
		suspects = next
	}
}
