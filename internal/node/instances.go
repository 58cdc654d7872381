package node

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/node/grain"
	"github.com/baton-faas/baton/internal/node/runtimeapi"
	"github.com/baton-faas/baton/internal/sandbox"
	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/eventlog"
)

// tracked is an instance from StartInstance until it is gone.
type tracked struct {
	inst     workerapi.Instance // guarded by instanceTable.mu
	memoryMB int
	// cancel cancels the start (StopInstance, Close).
	cancel context.CancelCauseFunc
	// done is closed when the start ended; err says why it failed.
	done chan struct{}
	err  error
	// stopped: StopInstance was called (guarded by instanceTable.mu).
	stopped bool
}

// errStopped is the cause of a start cancelled by StopInstance.
var errStopped = errors.New("instance stopped while starting")

// instance is an instance whose process runs (or is being started).
type instance struct {
	id       string
	spec     workerapi.InstanceSpec
	app      string // key of its sandbox in the appTable
	sandbox  *app
	api      *runtimeapi.Server
	logs     *logCapture
	capacity int

	// Exactly one of proc (runtimes started as processes) and child
	// (forked from a grain worker) is set.
	proc  sandbox.Process
	child *grain.Child
	grain *grainWorker
	// group confines child where the sandbox enforces limits.
	group sandbox.Group
	// revived: child was forked from a grain worker kept after its
	// version had scaled to zero (keep.go); claimed is that grain worker
	// from the start's beginning until fork takes it.
	revived bool
	claimed *grainWorker
	// marks time the start's steps (only the start uses them).
	marks *startMarks

	done      chan struct{} // closed when the process is gone
	exitDesc  string        // set before done closes
	oomKilled bool          // set before done closes
	// released is closed once the instance's grain worker, sandbox and
	// code references are released (a last instance's zygote has exited).
	released chan struct{}
	stopping bool // guarded by instanceTable.mu
}

// instanceTable is the worker's instances: live holds them from
// StartInstance until they are gone (starting and ready), running those
// whose process runs. Its lock is taken alone (see the package comment).
type instanceTable struct {
	mu      sync.Mutex
	closed  bool
	live    map[string]*tracked
	running map[string]*instance
	ended   endedStarts
}

func (t *instanceTable) init() {
	t.live = map[string]*tracked{}
	t.running = map[string]*instance{}
}

// add registers a new start and counts it in starts; it fails once the
// worker is closing. Counting under the lock that close takes orders
// every count before Close's wait for starts.
func (t *instanceTable) add(tr *tracked, starts *sync.WaitGroup) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.live[tr.inst.ID] = tr
	starts.Add(1)
	return true
}

func (t *instanceTable) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
}

func (t *instanceTable) instance(id string) (*instance, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	in, ok := t.running[id]
	return in, ok
}

// register records that in's process runs.
func (t *instanceTable) register(in *instance) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.running[in.id] = in
}

// markStopping marks in as stopped by the worker, whose exit is then no
// news (no InstanceExited event).
func (t *instanceTable) markStopping(in *instance) {
	t.mu.Lock()
	defer t.mu.Unlock()
	in.stopping = true
}

// reserved sums what the live instances were promised.
func (t *instanceTable) reserved() (workerapi.Resources, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var r workerapi.Resources
	for _, tr := range t.live {
		r.MemoryMB += tr.memoryMB
		r.MilliCPUs += milliCPUsFor(tr.memoryMB)
	}
	return r, len(t.live)
}

// list returns the live instances.
func (t *instanceTable) list() []workerapi.Instance {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]workerapi.Instance, 0, len(t.live))
	for _, tr := range t.live {
		out = append(out, tr.inst)
	}
	return out
}

// ready makes a started instance ready, with its event, unless it was
// stopped or exited meanwhile (the returned error says which).
func (t *instanceTable) ready(tr *tracked, inst workerapi.Instance, events *eventlog.Log) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tr.stopped {
		return errStopped
	}
	if _, ok := t.running[inst.ID]; !ok {
		return fmt.Errorf("instance %s exited as it became ready", inst.ID)
	}
	tr.inst = inst
	ready := inst
	events.Append(workerapi.Event{Kind: workerapi.InstanceReady, Instance: inst.ID, Function: inst.Function, Version: inst.Version, Ready: &ready})
	return nil
}

// abandon forgets a failed start; a process it left running is returned,
// marked stopping (the start reports it: no exit event).
func (t *instanceTable) abandon(id string) *instance {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.live, id)
	in := t.running[id]
	if in != nil {
		in.stopping = true
	}
	return in
}

// failed records how a start failed, with its event.
func (t *instanceTable) failed(tr *tracked, err error, ev workerapi.Event, events *eventlog.Log) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tr.err = err
	t.ended.add(tr.inst.ID, err)
	events.Append(ev)
}

// lookup returns the live start id, or how it ended.
func (t *instanceTable) lookup(id string) (tr *tracked, endErr error, ended bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tr := t.live[id]; tr != nil {
		return tr, nil, false
	}
	endErr, ended = t.ended.errs[id]
	return nil, endErr, ended
}

// result is what a finished start came to.
func (t *instanceTable) result(tr *tracked) (workerapi.Instance, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return tr.inst, tr.err
}

// stop marks id stopped, returning its start.
func (t *instanceTable) stop(id string) *tracked {
	t.mu.Lock()
	defer t.mu.Unlock()
	tr := t.live[id]
	if tr != nil {
		tr.stopped = true
	}
	return tr
}

// stopping marks a running instance as stopped by the worker.
func (t *instanceTable) stopping(id string) (*instance, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	in, ok := t.running[id]
	if ok {
		in.stopping = true
	}
	return in, ok
}

// stopAll marks every running instance stopping and returns them.
func (t *instanceTable) stopAll() []*instance {
	t.mu.Lock()
	defer t.mu.Unlock()
	ins := make([]*instance, 0, len(t.running))
	for _, in := range t.running {
		in.stopping = true
		ins = append(ins, in)
	}
	return ins
}

// exited removes an instance whose process ended. It reports whether its
// end is news (a ready instance the worker did not stop), whether it was a
// ready instance the worker stopped (whose grain worker may be kept) and
// counts its release, so that Close, which no longer sees it, waits for
// it.
func (t *instanceTable) exited(in *instance, releases *releaseCount) (news, stopped bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.running, in.id)
	// Only a ready instance's end is news: a start that fails is
	// reported by its start (InstanceFailed).
	tr := t.live[in.id]
	wasReady := tr != nil && tr.inst.State == workerapi.Ready
	if wasReady {
		delete(t.live, in.id)
	}
	releases.add()
	return wasReady && !in.stopping, wasReady && in.stopping
}

// endedStarts remembers how the latest failed starts ended, so that
// WaitInstance answers after the instance is gone.
type endedStarts struct {
	errs  map[string]error
	order []string
}

const maxEndedStarts = 1024

func (e *endedStarts) add(id string, err error) {
	if e.errs == nil {
		e.errs = map[string]error{}
	}
	if len(e.order) == maxEndedStarts {
		delete(e.errs, e.order[0])
		e.order = e.order[1:]
	}
	e.errs[id] = err
	e.order = append(e.order, id)
}

// releaseCount counts instance and sandbox releases under way; Close
// waits until none is left, since a sandbox whose teardown the exiting
// process cuts short leaks its mounts and cgroups. A counter, not a
// WaitGroup: a release may begin while Close waits. Its lock is a leaf.
type releaseCount struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n reaches 0 with a waiter
}

func (r *releaseCount) add() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
}

func (r *releaseCount) done() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n--
	if r.n == 0 && r.idle != nil {
		close(r.idle)
		r.idle = nil
	}
}

// wait returns once no release is under way, or when ctx ends.
func (r *releaseCount) wait(ctx context.Context) error {
	r.mu.Lock()
	if r.n == 0 {
		r.mu.Unlock()
		return nil
	}
	if r.idle == nil {
		r.idle = make(chan struct{})
	}
	idle := r.idle
	r.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// StartInstance implements workerapi.Worker: the start runs in a
// goroutine of the worker, under a context of the worker's (Close and
// StopInstance cancel it), not the caller's.
func (w *Worker) StartInstance(ctx context.Context, spec workerapi.InstanceSpec) (workerapi.Instance, error) {
	if err := ctx.Err(); err != nil {
		return workerapi.Instance{}, fmt.Errorf("start instance: %w", err)
	}
	sctx, cancel := context.WithCancelCause(w.ctx)
	t := &tracked{
		inst: workerapi.Instance{ID: newID("i-"), Worker: w.opts.ID, Function: spec.Function, Version: spec.Version,
			State: workerapi.Starting, Capacity: max(spec.Spec.Concurrency, 1)},
		memoryMB: spec.Spec.MemoryMB, cancel: cancel, done: make(chan struct{}),
	}
	if !w.instances.add(t, &w.starts) {
		cancel(nil)
		return workerapi.Instance{}, fmt.Errorf("start instance: worker is shutting down: %w", workerapi.ErrWorkerUnavailable)
	}
	inst := t.inst // runStart may change t.inst as soon as it runs
	go w.runStart(sctx, t, spec)
	return inst, nil
}

// runStart runs a start and reports how it ended.
func (w *Worker) runStart(ctx context.Context, t *tracked, spec workerapi.InstanceSpec) {
	defer w.starts.Done()
	defer t.cancel(nil)
	defer close(t.done)
	id := t.inst.ID
	sctx, cancel := context.WithTimeout(ctx, w.opts.StartTimeout)
	inst, err := w.start(sctx, id, spec)
	cancel()
	if err == nil {
		inst.Worker, inst.State = w.opts.ID, workerapi.Ready
		if err = w.instances.ready(t, inst, w.events); err == nil {
			w.log.Debug("instance ready", "function", spec.Function, "version", spec.Version, "instance", id, "init", inst.InitDuration, "forked", inst.Forked)
			return
		}
	}
	if in := w.instances.abandon(id); in != nil {
		// Ready, but stopped (or gone) meanwhile.
		if w.killAndWait(in) {
			<-in.released
		}
	}
	ev := workerapi.Event{Kind: workerapi.InstanceFailed, Instance: id, Function: spec.Function, Version: spec.Version, Reason: err.Error()}
	var initErr *workerapi.InitError
	if errors.As(err, &initErr) {
		ev.InitErr = initErr
	}
	w.instances.failed(t, err, ev, w.events)
}

// WaitInstance implements workerapi.Worker.
func (w *Worker) WaitInstance(ctx context.Context, id string) (workerapi.Instance, error) {
	if err := ctx.Err(); err != nil {
		return workerapi.Instance{}, fmt.Errorf("wait for instance %s: %w", id, err)
	}
	t, endErr, ended := w.instances.lookup(id)
	if t == nil {
		if ended {
			return workerapi.Instance{}, endErr
		}
		return workerapi.Instance{}, fmt.Errorf("instance %s: %w", id, workerapi.ErrUnknownInstance)
	}
	select {
	case <-t.done:
	case <-ctx.Done():
		return workerapi.Instance{}, fmt.Errorf("wait for instance %s: %w", id, ctx.Err())
	}
	return w.instances.result(t)
}

// Instances implements workerapi.Worker.
func (w *Worker) Instances(ctx context.Context) ([]workerapi.Instance, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	return w.instances.list(), nil
}

// StopInstance implements workerapi.Worker.
func (w *Worker) StopInstance(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("stop instance %s: %w", id, err)
	}
	if t := w.instances.stop(id); t != nil {
		// A start under way is cancelled; it releases what it took
		// (and kills an instance that became ready meanwhile).
		t.cancel(errStopped)
		select {
		case <-t.done:
		case <-ctx.Done():
			return fmt.Errorf("stop instance %s: %w", id, ctx.Err())
		}
	}
	in, ok := w.instances.stopping(id)
	if !ok {
		return nil
	}
	w.kill(in)
	// Returns once everything the instance held is released, so that a
	// function reported at zero really holds no process.
	select {
	case <-in.released:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop instance %s: %w", id, ctx.Err())
	}
}

// watch waits for the instance's process and reports unexpected exits.
func (w *Worker) watch(in *instance) {
	if in.child != nil {
		<-in.child.Done()
		in.exitDesc = describeChildExit(in.child.Exit())
		if in.group != nil {
			in.oomKilled = in.group.Close()
		}
	} else {
		st, err := in.proc.Wait()
		in.exitDesc = describeExit(st, err)
		in.oomKilled = st.OOMKilled
	}
	close(in.done)
	in.api.Close()

	news, stopped := w.instances.exited(in, &w.releases)
	if in.grain != nil {
		// A grain worker whose last instance the worker stopped (not one
		// that crashed) may be kept for the version's return.
		w.releaseGrainKeeping(in.grain, stopped)
	}
	w.releaseApp(in.app, in.spec.Spec.MemoryMB)
	w.releaseCode(in.spec.CodeDigest)
	close(in.released)
	w.releases.done() // before the event, which may wait for a reader
	if news {
		w.log.Info("instance exited", "function", in.spec.Function, "instance", in.id, "reason", in.exitDesc)
		w.events.Append(workerapi.Event{Kind: workerapi.InstanceExited, Instance: in.id, Function: in.spec.Function, Version: in.spec.Version, Reason: in.exitDesc})
	}
}

func describeExit(st sandbox.ExitStatus, err error) string {
	if err != nil {
		return err.Error()
	}
	if st.Signal != 0 {
		return "killed by signal " + syscall.Signal(st.Signal).String()
	}
	return "exit status " + strconv.Itoa(st.Code)
}

func describeChildExit(e grain.ExitStatus) string {
	if e.ZygoteLost {
		return "grain worker died"
	}
	return describeExit(sandbox.ExitStatus{Code: e.Code, Signal: e.Signal}, nil)
}

// killAndWait kills an instance and waits, bounded, until its process is
// gone; it reports whether the process really ended. A process that
// escaped every signal is logged and abandoned rather than blocking the
// caller forever.
func (w *Worker) killAndWait(in *instance) bool {
	w.kill(in)
	select {
	case <-in.done:
		return true
	case <-time.After(killWait):
		w.log.Error("instance did not die after SIGKILL; abandoning it", "function", in.spec.Function, "instance", in.id)
		return false
	}
}

// killWait bounds how long a killed instance may take to be reaped.
const killWait = 5 * time.Second

func (w *Worker) kill(in *instance) {
	var err error
	if in.group != nil {
		// Reaches whatever the instance started, in any session.
		err = in.group.Kill()
	} else if in.child != nil {
		err = in.child.Kill(syscall.SIGKILL)
	} else if in.proc != nil {
		err = in.proc.Kill()
	}
	if err != nil {
		w.log.Debug("kill instance", "instance", in.id, "err", err)
	}
}

// Invoke implements workerapi.Worker.
func (w *Worker) Invoke(ctx context.Context, id string, inv workerapi.Invocation) (workerapi.Result, error) {
	if err := ctx.Err(); err != nil {
		return workerapi.Result{}, fmt.Errorf("invoke instance %s: %w", id, err)
	}
	in, ok := w.instances.instance(id)
	if !ok {
		// The instance died (or was stopped) before the router heard of
		// it: no runtime saw the event, so it may run on another one.
		return workerapi.Result{}, &workerapi.Failure{Kind: workerapi.FailureNotDelivered, Message: "instance " + id + " is gone; the event was not delivered"}
	}
	// The worker enforces the invocation's deadline itself: across a
	// network the caller's context carries no cause, only cancellation.
	parent, cancelDeadline := ctx, context.CancelFunc(func() {})
	if !inv.Deadline.IsZero() {
		parent, cancelDeadline = context.WithDeadline(ctx, inv.Deadline)
	}
	defer cancelDeadline()
	ictx, cancel := context.WithCancel(parent)
	defer cancel()
	go func() {
		select {
		case <-in.done:
			cancel()
		case <-ictx.Done():
		}
	}()
	payload, err := w.resolvePayload(ictx, in, inv)
	if err != nil {
		// Nothing ran: the instance is as it was.
		return workerapi.Result{}, err
	}
	in.logs.begin(inv.ID)
	began := time.Now()
	res, err := in.api.Invoke(ictx, runtimeapi.Event{
		RequestID: inv.ID, Payload: payload, Deadline: inv.Deadline, TraceID: inv.TraceID, ClientContext: inv.ClientContext,
		FunctionARN: function.ARN(in.spec.Function, in.spec.Version),
	})
	elapsed := time.Since(began)
	if err != nil {
		f := w.invokeFailure(ctx, parent, in, inv, err)
		if f.Kind == workerapi.FailureCrash || f.Kind == workerapi.FailureOutOfMemory {
			// What the instance printed as it died names no invocation
			// when several were in flight; each one it failed gets it.
			f.Logs, f.LogsTruncated = in.logs.endFailed(inv.ID)
		} else {
			f.Logs, f.LogsTruncated = in.logs.end(inv.ID)
		}
		return workerapi.Result{Duration: elapsed}, f
	}
	// The Runtime API bounded the function's error when it read it.
	out := workerapi.Result{Payload: res.Payload, Duration: elapsed, Error: res.Error}
	out.Logs, out.LogsTruncated = in.logs.end(inv.ID)
	w.keepResult(in, inv, &out)
	return out, nil
}

// invokeFailure classifies an invocation the runtime did not answer; an
// instance that may still be busy with the event is killed.
func (w *Worker) invokeFailure(ctx, parent context.Context, in *instance, inv workerapi.Invocation, err error) *workerapi.Failure {
	select {
	case <-in.done:
		if errors.Is(err, runtimeapi.ErrNotDelivered) {
			return &workerapi.Failure{Kind: workerapi.FailureNotDelivered, Message: "instance " + in.id + " died before it received the event: " + in.exitDesc}
		}
		if in.oomKilled {
			return &workerapi.Failure{Kind: workerapi.FailureOutOfMemory, Message: fmt.Sprintf(
				"instance %s ran out of memory (memoryMB %d) and was killed", in.id, in.spec.Spec.MemoryMB)}
		}
		return &workerapi.Failure{Kind: workerapi.FailureCrash, Message: "instance " + in.id + " died during the invocation: " + in.exitDesc}
	default:
	}
	switch {
	case errors.Is(err, runtimeapi.ErrProtocol):
		// A runtime client that broke the socket protocol cannot be
		// trusted with the next event either.
		w.killAndWait(in)
		return &workerapi.Failure{Kind: workerapi.FailureCrash, Message: "instance " + in.id + "'s runtime client broke the Runtime API: " + err.Error()}
	case errors.Is(err, runtimeapi.ErrResponseTooLarge):
		// Runtime clients treat the refused post as fatal (aws-lambda-go
		// exits), so the instance is replaced rather than trusted.
		w.killAndWait(in)
		return &workerapi.Failure{Kind: workerapi.FailureTooLarge,
			Message: fmt.Sprintf("response is larger than the %d byte limit", w.opts.MaxResponseBytes)}
	case errors.Is(parent.Err(), context.DeadlineExceeded) ||
		(ctx.Err() != nil && !inv.Deadline.IsZero() && !time.Now().Before(inv.Deadline)):
		// Either this worker's deadline fired or the caller's own timer
		// did, at the same instant, a little earlier. The runtime is
		// still busy with the event and cannot be interrupted: the
		// instance has to go.
		w.killAndWait(in)
		return &workerapi.Failure{Kind: workerapi.FailureTimeout,
			Message: fmt.Sprintf("function timed out after %s", in.spec.Spec.Timeout())}
	case ctx.Err() != nil:
		w.killAndWait(in)
		return &workerapi.Failure{Kind: workerapi.FailureInstanceGone, Message: "invocation cancelled: " + ctx.Err().Error()}
	default:
		w.killAndWait(in)
		return &workerapi.Failure{Kind: workerapi.FailureWorkerFailure, Message: err.Error()}
	}
}
