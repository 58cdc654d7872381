// Package controller is Baton's control plane and data plane in one place
// (as in Dirigent): it owns the function registry, the router with its
// per-function queues and autoscaler, the invocation records and metrics,
// and talks to workers only through workerapi.Worker.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/baton-faas/baton/internal/async"
	"github.com/baton-faas/baton/internal/controlplane/metrics"
	"github.com/baton-faas/baton/internal/controlplane/records"
	"github.com/baton-faas/baton/internal/controlplane/registry"
	"github.com/baton-faas/baton/internal/controlplane/router"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/keyedlock"
	"github.com/baton-faas/baton/internal/requestid"
	"github.com/baton-faas/baton/internal/store"
	"github.com/baton-faas/baton/internal/transfer"
	"github.com/baton-faas/baton/internal/workerapi"
)

// Options configure the controller.
type Options struct {
	Registry *registry.Registry
	// Worker, if set, is added when the controller starts (the node of
	// `baton server`); more come and go with AddWorker and RemoveWorker.
	Worker  workerapi.Worker
	Records *records.Log
	Metrics *metrics.Metrics
	Router  router.Options
	Logger  *slog.Logger
	// Changes, when set, tells the controller of functions deployed or
	// deleted through other controllers (see FunctionChanges).
	Changes FunctionChanges
	// Ownership, when set, splits the functions between controllers
	// (cluster mode): this one routes only those it owns and sends the
	// others' requests to their owners (see Route). Self is this
	// controller's id in it. Unset, the controller owns every function.
	Ownership Ownership
	Self      string
	// AuditInterval is how often workers' instances are checked for ones
	// no controller routes to (default 10 s; cluster mode only).
	AuditInterval time.Duration
	// OwnerWait bounds how long a request waits for its function to have
	// an owner while ownership moves (default 30 s: when the NATS server
	// leading the lease bucket is lost, nobody can own anything until
	// JetStream elects another leader, which takes seconds on a busy
	// cluster; requests wait that out rather than fail).
	OwnerWait time.Duration
	// Suspect, when set, checks whether a node (worker or controller) that
	// could not be reached is gone, and if it provably is removes it from
	// the cluster at once (ownership.Expel) rather than after its
	// membership expires. It may block; the controller calls it at most
	// once at a time per node.
	Suspect func(ctx context.Context, node string)
	// Async, when set, takes asynchronous invocations and runs the events
	// of the functions this controller serves; AsyncRetryBase is the first
	// retry's wait (default 1 s, doubling after).
	Async          *async.Queue
	AsyncRetryBase time.Duration
	// HoldOwnership keeps the controller from taking functions over until
	// OpenOwnership: the process first adds the workers it knows, so that
	// the functions it takes over find their instances there.
	HoldOwnership bool
}

// FunctionChanges streams the names of functions as they are put or
// deleted in the registry's store, starting with every existing one; the
// channel closes when the stream breaks.
type FunctionChanges interface {
	WatchFunctions(ctx context.Context) (<-chan string, error)
}

// Controller serves the API's needs.
type Controller struct {
	reg     *registry.Registry
	local   workerapi.Worker
	changes FunctionChanges
	router  *router.Router
	records *records.Log
	metrics *metrics.Metrics
	log     *slog.Logger
	// perFunction orders deploys and deletes of one function, so that the
	// router always ends up with what the registry holds last. The lock is
	// per name: invocations and other functions never wait on it.
	perFunction keyedlock.Locks

	own           Ownership // nil: this controller owns every function
	self          string
	auditInterval time.Duration
	ownerWait     time.Duration
	// kick asks the ownership loop to bring the router in line with
	// what this controller owns.
	kick chan struct{}
	// ownershipOpen is closed (once) when the ownership loop may start.
	ownershipOpen chan struct{}
	openOnce      sync.Once

	suspect func(ctx context.Context, node string)

	queue          *async.Queue
	asyncRetryBase time.Duration
	dispatcher     *async.Dispatcher // set by Start
	// smu guards suspecting: nodes being checked, and when each was last.
	// It is a leaf.
	smu        sync.Mutex
	suspecting map[string]time.Time

	// fmu guards known: every deployed function, owned or not (the
	// router holds only the owned ones). Lock order: perFunction, then
	// fmu; fmu is held across no call.
	fmu   sync.Mutex
	known map[string]function.Function

	// ctx is the loops' lifetime, set by Start; stopLoops ends it, and
	// loops counts the loops (the router's, one events loop per worker)
	// so that Shutdown waits until they are gone.
	// lmu guards ctx and stopLoops against goLoop (a leaf).
	lmu       sync.Mutex
	ctx       context.Context
	stopLoops context.CancelFunc
	loops     sync.WaitGroup

	// wmu guards workers. It is a leaf: nothing else is locked, and no
	// worker is called, while it is held.
	wmu     sync.Mutex
	workers map[string]*workerLink
}

// workerLink is a worker the controller routes to, and the end of its
// events loop.
type workerLink struct {
	api  workerapi.Worker
	stop context.CancelFunc
}

// New creates a controller; call Start before serving.
func New(o Options) *Controller {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Router.Observer = o.Metrics
	o.Router.Logger = o.Logger
	var c *Controller
	o.Router.OnWorkerUnreachable = func(id string) { c.Suspect(id) }
	if o.Ownership != nil {
		// Another controller adopts the instances when this one stops.
		o.Router.LeaveInstances = true
	}
	if o.AuditInterval <= 0 {
		o.AuditInterval = 10 * time.Second
	}
	if o.OwnerWait <= 0 {
		o.OwnerWait = 30 * time.Second
	}
	if o.AsyncRetryBase <= 0 {
		o.AsyncRetryBase = defaultAsyncRetryBase
	}
	c = &Controller{
		suspect: o.Suspect, suspecting: map[string]time.Time{}, queue: o.Async, asyncRetryBase: o.AsyncRetryBase,
		reg: o.Registry, local: o.Worker, changes: o.Changes, router: router.New(o.Router),
		records: o.Records, metrics: o.Metrics, log: o.Logger, stopLoops: func() {},
		workers: map[string]*workerLink{}, own: o.Ownership, self: o.Self,
		auditInterval: o.AuditInterval, ownerWait: o.OwnerWait, kick: make(chan struct{}, 1),
		known: map[string]function.Function{}, ownershipOpen: make(chan struct{}),
	}
	if !o.HoldOwnership {
		c.OpenOwnership()
	}
	return c
}

// Start loads the stored functions into the router and runs the
// background loops until ctx ends or Shutdown.
func (c *Controller) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	c.lmu.Lock()
	c.ctx, c.stopLoops = ctx, cancel
	c.lmu.Unlock()
	if c.local != nil {
		if err := c.AddWorker(ctx, c.local); err != nil {
			cancel()
			return err
		}
	}
	fns, err := c.reg.List(ctx)
	if err != nil {
		cancel()
		return fmt.Errorf("load functions: %w", err)
	}
	for _, fn := range fns {
		c.setKnown(fn)
		if c.own == nil {
			c.router.SetFunction(fn)
		}
		// In a cluster the ownership loop takes owned functions over,
		// with the instances the workers already run.
	}
	c.log.Info("functions loaded", "count", len(fns))
	c.loops.Add(1)
	go func() {
		defer c.loops.Done()
		c.router.Run(ctx)
	}()
	if err := c.startAsync(); err != nil {
		cancel()
		return fmt.Errorf("async invocations: %w", err)
	}
	if c.own != nil {
		c.loops.Add(2)
		go func() {
			defer c.loops.Done()
			c.followOwnership(ctx)
		}()
		go func() {
			defer c.loops.Done()
			c.auditLoop(ctx)
		}()
	}
	if c.changes != nil {
		c.loops.Add(1)
		go func() {
			defer c.loops.Done()
			c.followChanges(ctx)
		}()
	}
	return nil
}

// followChanges applies functions deployed or deleted elsewhere (another
// controller) until ctx ends, resubscribing when the stream breaks.
func (c *Controller) followChanges(ctx context.Context) {
	for ctx.Err() == nil {
		names, err := c.changes.WatchFunctions(ctx)
		if err == nil {
			for name := range names {
				c.refresh(ctx, name)
			}
		} else {
			c.log.Warn("watch functions", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// refresh makes the router hold what the registry holds for a function
// now. It reads the definition rather than trusting the change it was told
// of, so that the last refresh wins whatever the order of deploys and
// deletes made here and elsewhere.
func (c *Controller) refresh(ctx context.Context, name string) {
	defer c.perFunction.Lock(name)()
	fn, err := c.reg.Get(ctx, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		c.forgetKnown(name)
		if c.router.Has(name) {
			c.router.RemoveFunction(name)
			c.metrics.Forget(name)
			c.log.Info("function deleted elsewhere", "function", name)
		}
	case err != nil:
		c.log.Warn("read a changed function", "function", name, "err", err)
	default:
		c.setKnown(fn)
		c.applyKnown(fn)
	}
}

// applyKnown gives the router a function's new definition: directly when
// it holds the function (or there is no cluster); through the ownership
// loop when this controller owns the function but has yet to take it over,
// so that instances already running are adopted rather than duplicated.
func (c *Controller) applyKnown(fn function.Function) {
	switch {
	case c.own == nil || c.router.Has(fn.Name):
		c.router.SetFunction(fn)
	case c.own.Owns(fn.Name):
		c.poke()
	}
}

// AddWorker starts routing to a worker (after Start). Its events are
// followed before the router may start instances on it, so that no exit
// goes unseen.
func (c *Controller) AddWorker(ctx context.Context, w workerapi.Worker) error {
	info, err := w.Info(ctx)
	if err != nil {
		return fmt.Errorf("add worker: %w", err)
	}
	lctx, stop := context.WithCancel(c.ctx)
	events, err := w.Events(lctx, 0)
	if err != nil {
		stop()
		return fmt.Errorf("worker %s events: %w", info.ID, err)
	}
	c.wmu.Lock()
	if _, dup := c.workers[info.ID]; dup {
		c.wmu.Unlock()
		stop()
		return fmt.Errorf("add worker %s: %w", info.ID, router.ErrWorkerExists)
	}
	c.workers[info.ID] = &workerLink{api: w, stop: stop}
	c.wmu.Unlock()
	if err := c.router.AddWorker(ctx, w); err != nil {
		c.wmu.Lock()
		delete(c.workers, info.ID)
		c.wmu.Unlock()
		stop()
		return err
	}
	c.loops.Add(1)
	go func() {
		defer c.loops.Done()
		c.followEvents(lctx, info.ID, w, events)
	}()
	// A worker that comes back may still run instances: adopt the wanted
	// ones, stop those of deleted functions.
	c.adoptFrom(ctx, info.ID, w)
	return nil
}

// RemoveWorker stops routing to a worker: its instances leave the routing
// tables and calls running there fail (see router.RemoveWorker).
func (c *Controller) RemoveWorker(id string) bool {
	c.wmu.Lock()
	link, ok := c.workers[id]
	delete(c.workers, id)
	c.wmu.Unlock()
	if ok {
		link.stop()
	}
	return c.router.RemoveWorker(id) || ok
}

// anyWorker returns the worker that answers host questions (images,
// isolation): the local one, else any.
func (c *Controller) anyWorker() (workerapi.Worker, error) {
	if c.local != nil {
		return c.local, nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for _, l := range c.workers {
		return l.api, nil
	}
	return nil, fmt.Errorf("%w: no worker has joined", workerapi.ErrWorkerUnavailable)
}

// followEvents handles a worker's events until ctx ends, resuming the
// stream where it broke off.
func (c *Controller) followEvents(ctx context.Context, id string, w workerapi.Worker, events <-chan workerapi.Event) {
	var last uint64
	for {
		// Starts on the worker wait for their outcome on this stream
		// while it flows, and ask the worker otherwise.
		c.router.FollowingEvents(id, true)
		for ev := range events {
			last = ev.Seq
			if ev.Worker == "" {
				ev.Worker = id
			}
			switch ev.Kind {
			case workerapi.InstanceReady, workerapi.InstanceFailed:
				c.router.StartEvent(ev)
			case workerapi.InstanceExited:
				c.router.InstanceExited(ev)
			case workerapi.Resync:
				c.router.FollowingEvents(id, false)
				c.resync(ctx, id, w)
				c.router.FollowingEvents(id, true)
			}
		}
		if ctx.Err() != nil {
			return // removed: the worker may be back already, under a new stream
		}
		c.router.FollowingEvents(id, false)
		// The stream broke: the worker may be gone.
		c.Suspect(id)
		for {
			if ctx.Err() != nil {
				return
			}
			var err error
			if events, err = w.Events(ctx, last); err == nil {
				break
			}
			c.log.Warn("worker events: resuming", "worker", id, "after", last, "err", err)
			c.Suspect(id) // still unreachable: check again
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// resync drops the instances the router knows on a worker that the worker
// no longer runs: their exits were among the events lost.
func (c *Controller) resync(ctx context.Context, id string, w workerapi.Worker) {
	live, err := w.Instances(ctx)
	if err != nil {
		c.log.Warn("worker events lost, and its instances could not be listed", "worker", id, "err", err)
		return
	}
	alive := make(map[string]bool, len(live))
	for _, in := range live {
		alive[in.ID] = true
	}
	fns, err := c.reg.List(ctx)
	if err != nil {
		c.log.Warn("worker events lost, and the functions could not be listed", "worker", id, "err", err)
		return
	}
	for _, fn := range fns {
		st, _ := c.router.Status(fn.Name)
		for _, in := range st.Instances {
			if in.Worker == id && !alive[in.ID] {
				c.router.InstanceExited(workerapi.Event{Kind: workerapi.InstanceExited, Worker: id, Function: fn.Name,
					Instance: in.ID, Version: in.Version, Reason: "gone from the worker (events were lost)"})
			}
		}
	}
}

// Shutdown drains in-flight invocations until ctx ends, then stops all
// instances and the controller's loops, and waits for them.
func (c *Controller) Shutdown(ctx context.Context) error {
	if c.own != nil {
		// Hand the functions over before draining: requests waiting here
		// follow them to their next owners, which adopt the instances
		// (left running) without waiting for this controller's leases to
		// expire.
		handCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		c.own.Close(handCtx)
		cancel()
	}
	if c.dispatcher != nil {
		// Running events end with the router; unfinished ones are
		// delivered again later.
		c.dispatcher.Stop()
		defer c.dispatcher.Close()
	}
	err := c.router.Shutdown(ctx)
	c.lmu.Lock()
	c.stopLoops()
	c.lmu.Unlock()
	c.loops.Wait()
	return err
}

// Isolation describes the worker's sandboxing.
func (c *Controller) Isolation(ctx context.Context) string {
	w, err := c.anyWorker()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	info, err := w.Info(ctx)
	if err != nil {
		c.log.Warn("worker info", "err", err)
		return "unknown (worker unavailable)"
	}
	return info.Isolation
}

// Deploy registers or updates a function.
func (c *Controller) Deploy(ctx context.Context, name string, spec function.Spec, code []byte) (registry.DeployResult, error) {
	if err := c.checkImage(ctx, spec); err != nil {
		return registry.DeployResult{}, err
	}
	defer c.perFunction.Lock(name)()
	res, err := c.reg.Deploy(ctx, name, spec, code)
	if err != nil {
		return res, err
	}
	c.setKnown(res.Function)
	c.applyKnown(res.Function)
	c.log.Info("function deployed", "function", name, "version", res.Function.Version, "created", res.Created, "newVersion", res.NewVersion)
	return res, nil
}

// Get returns a function and its live status.
func (c *Controller) Get(ctx context.Context, name string) (function.Function, router.Status, error) {
	if err := function.ValidateName(name); err != nil {
		return function.Function{}, router.Status{}, err
	}
	fn, err := c.reg.Get(ctx, name)
	if err != nil {
		return fn, router.Status{}, err
	}
	st, _ := c.router.Status(name)
	return fn, st, nil
}

// List returns all functions.
func (c *Controller) List(ctx context.Context) ([]function.Function, error) {
	return c.reg.List(ctx)
}

// Recycle stops all instances of a function (busy ones once idle).
func (c *Controller) Recycle(name string) (stopped, pending int, err error) {
	if err := function.ValidateName(name); err != nil {
		return 0, 0, err
	}
	stopped, pending, ok := c.router.Recycle(name)
	if !ok {
		return 0, 0, fmt.Errorf("function %q: %w", name, store.ErrNotFound)
	}
	return stopped, pending, nil
}

// Exists reports whether a function is deployed (from memory, no store
// access: it runs before every invocation).
func (c *Controller) Exists(name string) bool {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	_, ok := c.known[name]
	return ok
}

// Status returns a function's live state.
func (c *Controller) Status(name string) router.Status {
	st, _ := c.router.Status(name)
	return st
}

// Delete removes a function; its instances stop once idle.
func (c *Controller) Delete(ctx context.Context, name string) error {
	if err := function.ValidateName(name); err != nil {
		return err
	}
	defer c.perFunction.Lock(name)()
	if _, err := c.reg.Delete(ctx, name); err != nil {
		return err
	}
	c.forgetKnown(name)
	c.router.RemoveFunction(name)
	c.metrics.Forget(name)
	c.log.Info("function deleted", "function", name)
	return nil
}

// Invocation is the outcome of Invoke. Err is nil on success and for a
// function error (FunctionError set); otherwise it says what failed.
type Invocation struct {
	ID       string
	Version  int
	Instance string
	Worker   string // the worker the instance ran on
	Cold     bool
	Wait     time.Duration
	Init     time.Duration
	Exec     time.Duration
	Payload  []byte
	// FunctionError is the error the function itself returned.
	FunctionError *workerapi.FunctionError
	Err           error
	// Ref stands for the result when the worker kept it (ByRef).
	Ref *transfer.Ref
}

// Invoke runs one event. Errors before an invocation exists (unknown
// function, full queue) are returned as error; everything after is in the
// Invocation and recorded.
// An empty id gets a fresh one.
func (c *Controller) Invoke(ctx context.Context, name, id string, payload []byte) (Invocation, error) {
	return c.InvokeWith(ctx, name, id, payload, InvokeOptions{})
}

// InvokeOptions are what an asynchronous attempt adds to an invocation.
type InvokeOptions struct {
	// ClientContext is passed to the function (JSON, Lambda's client
	// context).
	ClientContext []byte
	// Attempt (1-based) marks the record as an asynchronous attempt.
	Attempt int
	// ByRef takes a reference instead of a large result (see
	// workerapi.Invocation.ByRef): only where Baton passes the data on.
	ByRef bool
}

// InvokeWith is Invoke with options.
func (c *Controller) InvokeWith(ctx context.Context, name, id string, payload []byte, o InvokeOptions) (Invocation, error) {
	if id == "" {
		id = NewRequestID()
	}
	start := time.Now()
	out, err := c.router.Invoke(ctx, name, workerapi.Invocation{ID: id, Payload: payload, ClientContext: o.ClientContext, ByRef: o.ByRef})
	end := time.Now()
	switch {
	case errors.Is(err, router.ErrQueueFull):
		c.metrics.ObserveRejection(name, "queue-full")
		return Invocation{ID: id}, err
	case errors.Is(err, router.ErrShuttingDown) && out.Instance == "":
		c.metrics.ObserveRejection(name, "shutting-down")
		return Invocation{ID: id}, err
	case errors.Is(err, router.ErrUnknownFunction):
		if _, exists := c.knownFunction(name); exists && c.own != nil {
			// The router let the function go after the caller found it
			// here: it moved to another controller, and the event did
			// not run there or here; the caller may follow it.
			err = fmt.Errorf("%w (%v)", router.ErrReleased, err)
		}
		return Invocation{ID: id}, err
	case errors.Is(err, router.ErrReleased):
		return Invocation{ID: id}, err
	}
	inv := Invocation{
		ID: id, Version: out.Version, Instance: out.Instance, Worker: out.Worker, Cold: out.Cold,
		Wait: out.Wait, Init: out.Init, Exec: out.Exec, Payload: out.Result.Payload,
		FunctionError: out.Result.Error, Err: err, Ref: out.Result.Ref,
	}
	rec := &records.Record{
		ID: id, Function: name, Version: out.Version, Start: start.UTC(), End: end.UTC(),
		DurationMs: ms(end.Sub(start)), WaitMs: ms(out.Wait), InitMs: ms(out.Init), ExecMs: ms(out.Exec),
		Cold: out.Cold, Instance: out.Instance, Logs: string(out.Result.Logs), LogsTruncated: out.Result.LogsTruncated,
		ResponseBytes: responseBytes(out.Result), RequestBytes: len(payload),
		Status: records.StatusSuccess, Error: out.Result.Error, Attempt: o.Attempt,
	}
	rec.SetOutcome(err)
	c.records.Add(rec)
	c.metrics.ObserveInvocation(name, rec.Status, out.Cold, end.Sub(start).Seconds(), out.Wait.Seconds())
	return inv, nil
}

// responseBytes is a result's size, also when the worker kept it.
func responseBytes(r workerapi.Result) int {
	if r.Ref != nil {
		return int(r.Ref.Size)
	}
	return len(r.Payload)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// NewRequestID returns a fresh invocation id (see requestid).
func NewRequestID() string { return requestid.New() }

// Record returns an invocation record.
func (c *Controller) Record(id string) (records.Record, bool) { return c.records.Get(id) }

// Records returns recent records, newest first.
func (c *Controller) Records(fn string, limit int) []records.Record {
	return c.records.Query(fn, limit)
}
