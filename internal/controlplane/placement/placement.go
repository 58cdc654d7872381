// Package placement chooses the worker that runs a new instance. A policy
// is a pure choice over a snapshot of the workers as the router knows
// them, so that policies are tested without workers and the router can
// call one while holding its worker lock.
package placement

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"

	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/workerapi"
)

// Request describes the instance to place.
type Request struct {
	Function string
	// App is the function's application: its instances share one sandbox
	// per host and fork from the app's warm grain workers there.
	App      string
	MemoryMB int
}

// Candidate is a worker as the caller knows it.
type Candidate struct {
	// Info holds the worker's ID and Capacity as the worker reported
	// them, and Reserved and Instances as the caller accounts for the
	// instances it started there (starting ones included). A zero
	// Capacity.MemoryMB means the worker reports no bound: it then
	// refuses a start itself when it is full.
	Info workerapi.Info
	// Apps counts the caller's instances per app on the worker. An app
	// with instances there has a sandbox and warm grain workers, so one
	// more instance is a fork (milliseconds), not a cold sandbox.
	// Read-only for the policy.
	Apps map[string]int
}

// Policy chooses a worker for an instance. Place returns the chosen
// worker's ID or an error wrapping ErrNoCapacity; it never chooses a
// worker without room (see Fits). workers is only lent for the call: the
// caller reuses it, so a policy keeps nothing of it.
type Policy interface {
	Place(req Request, workers []Candidate) (string, error)
}

// ErrNoCapacity: no worker has room for the instance (or there is none).
var ErrNoCapacity = errdefs.New(errdefs.Unavailable, "no_capacity", "no worker has room for the instance")

// ErrUnknownPolicy names a policy that does not exist.
var ErrUnknownPolicy = errdefs.New(errdefs.Invalid, "unknown_placement_policy", "unknown placement policy")

// Names lists the policies New knows, the default first.
func Names() []string { return []string{"default", "random", "round-robin"} }

// New returns the named policy ("" is the default).
func New(name string) (Policy, error) {
	switch name {
	case "", "default":
		return Default{}, nil
	case "random":
		return NewRandom(nil), nil
	case "round-robin":
		return &RoundRobin{}, nil
	}
	return nil, fmt.Errorf("%w %q (want one of %v)", ErrUnknownPolicy, name, Names())
}

// Fits reports whether the worker has room for the request's memory.
func Fits(req Request, c Candidate) bool {
	capacity := c.Info.Capacity.MemoryMB
	return capacity <= 0 || c.Info.Reserved.MemoryMB+req.MemoryMB <= capacity
}

func noRoom(req Request, workers []Candidate) error {
	if len(workers) == 0 {
		return fmt.Errorf("%w: there are no workers", ErrNoCapacity)
	}
	return fmt.Errorf("%w: none of %d workers has %d MB free for %s", ErrNoCapacity, len(workers), req.MemoryMB, req.Function)
}

// fitting returns the workers with room, ordered by ID so that the
// choice does not depend on the caller's order.
func fitting(req Request, workers []Candidate) []*Candidate {
	out := make([]*Candidate, 0, len(workers))
	for i := range workers {
		if Fits(req, workers[i]) {
			out = append(out, &workers[i])
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Info.ID < out[b].Info.ID })
	return out
}

// Default prefers a worker where the function's app already has
// instances (a fork there costs milliseconds, a new sandbox elsewhere a
// cold start), and otherwise the least loaded worker by reserved memory.
type Default struct{}

// Place implements Policy. It needs no ordered copy of the workers (the
// choice is one pass, and lessLoaded breaks ties by ID), so a start costs
// no allocation and no sort however many workers there are.
func (Default) Place(req Request, workers []Candidate) (string, error) {
	var best *Candidate
	bestWarm := false
	for i := range workers {
		c := &workers[i]
		if !Fits(req, *c) {
			continue
		}
		warm := c.Apps[req.App] > 0
		if best == nil || (warm && !bestWarm) || (warm == bestWarm && lessLoaded(c, best)) {
			best, bestWarm = c, warm
		}
	}
	if best == nil {
		return "", noRoom(req, workers)
	}
	return best.Info.ID, nil
}

// lessLoaded compares reserved memory as a share of capacity when both
// workers report one, in megabytes otherwise; ties go to the lower ID.
func lessLoaded(a, b *Candidate) bool {
	ra, rb := a.Info.Reserved.MemoryMB, b.Info.Reserved.MemoryMB
	ca, cb := a.Info.Capacity.MemoryMB, b.Info.Capacity.MemoryMB
	var la, lb int64 = int64(ra), int64(rb)
	if ca > 0 && cb > 0 {
		// ra/ca < rb/cb without floating point.
		la, lb = int64(ra)*int64(cb), int64(rb)*int64(ca)
	}
	if la != lb {
		return la < lb
	}
	return a.Info.ID < b.Info.ID
}

// Random chooses uniformly among the workers with room.
type Random struct {
	mu  sync.Mutex
	rng *rand.Rand
}

// NewRandom returns a Random policy drawing from src (nil: a random seed).
func NewRandom(src rand.Source) *Random {
	if src == nil {
		src = rand.NewPCG(rand.Uint64(), rand.Uint64())
	}
	return &Random{rng: rand.New(src)}
}

// Place implements Policy.
func (p *Random) Place(req Request, workers []Candidate) (string, error) {
	fit := fitting(req, workers)
	if len(fit) == 0 {
		return "", noRoom(req, workers)
	}
	p.mu.Lock()
	i := p.rng.IntN(len(fit))
	p.mu.Unlock()
	return fit[i].Info.ID, nil
}

// RoundRobin takes the workers with room in turn, in ID order. It
// remembers the last worker by ID, not by position, so that adding or
// removing workers does not skip or repeat one.
type RoundRobin struct {
	mu   sync.Mutex
	last string
}

// Place implements Policy.
func (p *RoundRobin) Place(req Request, workers []Candidate) (string, error) {
	fit := fitting(req, workers)
	if len(fit) == 0 {
		return "", noRoom(req, workers)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	next := fit[0]
	for _, c := range fit {
		if c.Info.ID > p.last {
			next = c
			break
		}
	}
	p.last = next.Info.ID
	return next.Info.ID, nil
}
