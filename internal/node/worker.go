// Package node is Baton's host agent: it creates sandboxes, grain workers
// and function instances, gives every instance its own AWS Lambda Runtime
// API endpoint, and runs invocations on them.
package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/image"
	"github.com/baton-faas/baton/internal/image/baseimage"
	"github.com/baton-faas/baton/internal/keyedlock"
	"github.com/baton-faas/baton/internal/node/grain"
	"github.com/baton-faas/baton/internal/node/runtimeapi"
	"github.com/baton-faas/baton/internal/runtimes"
	"github.com/baton-faas/baton/internal/sandbox"
	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/eventlog"
)

// Options configure a worker.
type Options struct {
	ID        string
	DataDir   string
	Sandboxes sandbox.Runtime
	// Code is where the worker fetches function code by digest.
	Code   workerapi.CodeStore
	Logger *slog.Logger
	// Capacity is what the host offers to instances; a zero field means
	// what the host has (its memory, its CPUs).
	Capacity workerapi.Resources
	// StartTimeout bounds an instance start, runtime init included
	// (default 30 s).
	StartTimeout time.Duration
	// EventBuffer is how many events the worker keeps for readers of its
	// event stream that fell behind (default eventlog.DefaultSize).
	EventBuffer int
	// Images is the host's image store behind the worker API's image
	// calls; nil when the host has none.
	Images *image.Store
	// BaseImages builds the runtime base images into Images on demand.
	BaseImages *baseimage.Cache
	// MaxResponseBytes caps a function's response.
	MaxResponseBytes int64
	// LogLimit caps the output kept per invocation.
	LogLimit      int
	ArchiveLimits archive.Limits
	// CodeCacheBytes bounds the disk this host's code cache (unpacked
	// code or code layers) may use; zero means DefaultCodeCacheBytes.
	CodeCacheBytes int64
	// RootFS provides sandbox root filesystems. Set it with a runtime that
	// isolates (containers); leave it nil with the process runtime, whose
	// instances see the host's files.
	RootFS RootFSProvider
	// Layers stores functions' code as read-only layers for isolated
	// sandboxes (required with RootFS).
	Layers *image.Store
}

// RootFSProvider mounts the image a sandbox's root is made of.
type RootFSProvider interface {
	// RootFS mounts the named image or, when image is empty, the host's
	// runtimes: a root with every runtime's base image that this host can
	// build (runtime's own first and required), so that the functions of
	// an app share one sandbox whatever their runtimes. Release unmounts
	// it when the sandbox is gone.
	RootFS(ctx context.Context, runtime, image string) (RootImage, error)
}

// RootImage is a mounted image.
type RootImage struct {
	Name string
	// LowerDirs are the mounted layers, top-most first.
	LowerDirs []string
	// Env is the image's environment (PATH in particular).
	Env []string
	// Interpreters are the runtimes' interpreters inside the image, by
	// runtime; a runtime missing here has its interpreter looked up by
	// name on the image's PATH.
	Interpreters map[string]string
	Release      func()
}

// Worker implements workerapi.Worker on the local host.
//
// Lock order: Worker.mu, then app.codeMu; the event log's lock is a leaf
// taken under either. No lock is held across a sandbox or process call.
type Worker struct {
	opts     Options
	log      *slog.Logger
	runtimes runtimes.Paths
	budget   *codeBudget // see codebudget.go
	python   string
	node     string
	events   *eventlog.Log
	capacity workerapi.Resources

	// ctx is the parent of every start; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	// starts counts the start goroutines; Close waits for them.
	starts sync.WaitGroup

	mu sync.Mutex
	// live holds the instances from StartInstance until they are gone,
	// starting and ready; instances those whose process runs.
	live       map[string]*tracked
	ended      endedStarts
	instances  map[string]*instance
	grains     map[string]*grainWorker
	apps       map[string]*app
	extracting map[string]chan struct{}
	closed     bool
	codeUses   map[string]*codeUse
	stop       chan struct{}
	// grainProcs counts zygote processes not yet reaped, including those
	// being stopped in the background, so Close can wait for all of them.
	grainProcs sync.WaitGroup
	// codeLocks orders checking for a digest's code against removing it.
	codeLocks keyedlock.Locks
	// releases counts instance and sandbox releases under way; Close
	// waits until none is left (releasesIdle), since a sandbox whose
	// teardown the exiting process cuts short leaks its mounts and
	// cgroups. A counter under mu, not a WaitGroup: a release may begin
	// while Close waits.
	releases     int
	releasesIdle chan struct{}
}

type app struct {
	key       string
	sb        sandbox.Sandbox
	instances int
	ready     chan struct{}
	err       error
	// Isolated sandboxes only: the image, and the view (bound at
	// /var/task) to which each version's code layer is attached.
	image RootImage
	task  *image.View
	// memoryMB sums the memory of the app's live instances (guarded by
	// Worker.mu); the sandbox's limit follows it.
	memoryMB  int
	codeMu    sync.Mutex
	codes     map[string]bool // digests attached to task (guarded by codeMu)
	attaching keyedlock.Locks // one attach per digest at a time
}

type instance struct {
	id       string
	spec     workerapi.InstanceSpec
	app      string // key of its sandbox in Worker.apps
	sandbox  *app
	api      *runtimeapi.Server
	logs     *logCapture
	capacity int

	// Exactly one of proc (node, provided) and child (forked python) is set.
	proc  sandbox.Process
	child *grain.Child
	grain *grainWorker
	// group confines child where the sandbox enforces limits.
	group sandbox.Group

	done      chan struct{} // closed when the process is gone
	exitDesc  string        // set before done closes
	oomKilled bool          // set before done closes
	// released is closed once the instance's grain worker, sandbox and
	// code references are released (a last instance's zygote has exited).
	released chan struct{}
	stopping bool // guarded by Worker.mu
}

// New creates a worker; it installs Baton's runtime clients under DataDir.
func New(opts Options) (*Worker, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.LogLimit <= 0 {
		opts.LogLimit = 16 << 10
	}
	if opts.MaxResponseBytes <= 0 {
		opts.MaxResponseBytes = 32 << 20
	}
	if opts.ArchiveLimits == (archive.Limits{}) {
		opts.ArchiveLimits = archive.DefaultLimits()
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 30 * time.Second
	}
	if opts.Code == nil {
		return nil, errors.New("worker: no code store (Options.Code)")
	}
	if opts.RootFS != nil && opts.Layers == nil {
		return nil, errors.New("worker: isolated sandboxes need a layer store for code (Options.Layers)")
	}
	paths, err := runtimes.Install(filepath.Join(opts.DataDir, "runtimes"))
	if err != nil {
		return nil, fmt.Errorf("install runtime clients: %w", err)
	}
	w := &Worker{
		opts: opts, log: opts.Logger, runtimes: paths, budget: newCodeBudget(opts.CodeCacheBytes),
		events:     eventlog.New(opts.ID, opts.EventBuffer),
		capacity:   hostCapacity(opts.Capacity),
		live:       map[string]*tracked{},
		instances:  map[string]*instance{},
		grains:     map[string]*grainWorker{},
		apps:       map[string]*app{},
		extracting: map[string]chan struct{}{},
		codeUses:   map[string]*codeUse{},
		stop:       make(chan struct{}),
	}
	// Unpacked code is a cache: nothing of a previous run is in use.
	if err := os.RemoveAll(filepath.Join(opts.DataDir, "code")); err != nil {
		return nil, fmt.Errorf("clear code cache: %w", err)
	}
	if w.isolated() {
		if err := w.adoptCodeLayers(); err != nil {
			return nil, err
		}
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.janitor()
	// Interpreters are optional: a host without Node still runs Python.
	// TODO(driver): resolve runtimes.Driver.HostInterpreter once per driver
	// instead of the python/node fields.
	w.python = runtimes.Python()
	w.node, _ = exec.LookPath("node")
	return w, nil
}

// tracked is an instance from StartInstance until it is gone.
type tracked struct {
	inst     workerapi.Instance // guarded by Worker.mu
	memoryMB int
	// cancel cancels the start (StopInstance, Close).
	cancel context.CancelCauseFunc
	// done is closed when the start ended; err says why it failed.
	done chan struct{}
	err  error
	// stopped: StopInstance was called (guarded by Worker.mu).
	stopped bool
}

// errStopped is the cause of a start cancelled by StopInstance.
var errStopped = errors.New("instance stopped while starting")

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

// Info implements workerapi.Worker.
func (w *Worker) Info(ctx context.Context) (workerapi.Info, error) {
	if err := ctx.Err(); err != nil {
		return workerapi.Info{}, fmt.Errorf("worker info: %w", err)
	}
	info := workerapi.Info{ID: w.opts.ID, Isolation: w.opts.Sandboxes.Isolation(), Capacity: w.capacity}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, t := range w.live {
		info.Reserved.MemoryMB += t.memoryMB
		info.Reserved.MilliCPUs += milliCPUsFor(t.memoryMB)
	}
	info.Instances = len(w.live)
	info.Sandboxes = len(w.apps)
	return info, nil
}

// milliCPUsFor is the CPU an instance is promised: in proportion to its
// memory, one core at 1769 MB (the weight cpuSharesFor gives it).
func milliCPUsFor(memoryMB int) int { return memoryMB * 1000 / 1769 }

// hostCapacity fills what o leaves zero with what the host has.
func hostCapacity(o workerapi.Resources) workerapi.Resources {
	if o.MilliCPUs <= 0 {
		o.MilliCPUs = runtime.NumCPU() * 1000
	}
	if o.MemoryMB <= 0 {
		var si unix.Sysinfo_t
		if err := unix.Sysinfo(&si); err == nil {
			o.MemoryMB = int(uint64(si.Totalram) * uint64(si.Unit) >> 20)
		}
	}
	return o
}

// Events implements workerapi.Worker.
func (w *Worker) Events(ctx context.Context, after uint64) (<-chan workerapi.Event, error) {
	ch, err := w.events.Stream(ctx, after)
	if err != nil {
		return nil, fmt.Errorf("worker events: %w", err)
	}
	return ch, nil
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
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		cancel(nil)
		return workerapi.Instance{}, fmt.Errorf("start instance: worker is shutting down: %w", workerapi.ErrWorkerUnavailable)
	}
	w.live[t.inst.ID] = t
	w.starts.Add(1)
	inst := t.inst
	w.mu.Unlock()
	go w.runStart(sctx, t, spec)
	return inst, nil
}

func (w *Worker) runStart(ctx context.Context, t *tracked, spec workerapi.InstanceSpec) {
	defer w.starts.Done()
	defer t.cancel(nil)
	id := t.inst.ID
	sctx, cancel := context.WithTimeout(ctx, w.opts.StartTimeout)
	inst, err := w.start(sctx, id, spec)
	cancel()
	w.mu.Lock()
	_, running := w.instances[id]
	switch {
	case err == nil && t.stopped:
		err = errStopped
	case err == nil && !running:
		err = fmt.Errorf("instance %s exited as it became ready", id)
	}
	if err == nil {
		inst.Worker, inst.State = w.opts.ID, workerapi.Ready
		t.inst = inst
		ready := inst
		w.events.Append(workerapi.Event{Kind: workerapi.InstanceReady, Instance: id, Function: spec.Function, Version: spec.Version, Ready: &ready})
		w.mu.Unlock()
		w.log.Debug("instance ready", "function", spec.Function, "version", spec.Version, "instance", id, "init", inst.InitDuration, "forked", inst.Forked)
		close(t.done)
		return
	}
	delete(w.live, id)
	in := w.instances[id]
	if in != nil {
		in.stopping = true // the start reports it: no exit event
	}
	w.mu.Unlock()
	if in != nil {
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
	w.mu.Lock()
	t.err = err
	w.ended.add(id, err)
	w.events.Append(ev)
	w.mu.Unlock()
	close(t.done)
}

// WaitInstance implements workerapi.Worker.
func (w *Worker) WaitInstance(ctx context.Context, id string) (workerapi.Instance, error) {
	if err := ctx.Err(); err != nil {
		return workerapi.Instance{}, fmt.Errorf("wait for instance %s: %w", id, err)
	}
	w.mu.Lock()
	t := w.live[id]
	if t == nil {
		err, ok := w.ended.errs[id]
		w.mu.Unlock()
		if ok {
			return workerapi.Instance{}, err
		}
		return workerapi.Instance{}, fmt.Errorf("instance %s: %w", id, workerapi.ErrUnknownInstance)
	}
	w.mu.Unlock()
	select {
	case <-t.done:
	case <-ctx.Done():
		return workerapi.Instance{}, fmt.Errorf("wait for instance %s: %w", id, ctx.Err())
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return t.inst, t.err
}

// Instances implements workerapi.Worker.
func (w *Worker) Instances(ctx context.Context) ([]workerapi.Instance, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]workerapi.Instance, 0, len(w.live))
	for _, t := range w.live {
		out = append(out, t.inst)
	}
	return out, nil
}

func newID(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// start creates instance id of spec and waits until its runtime asks for
// work. ctx ends when the start is cancelled or its deadline passes.
func (w *Worker) start(ctx context.Context, id string, spec workerapi.InstanceSpec) (workerapi.Instance, error) {
	began := time.Now()
	var interp string
	if !w.isolated() {
		// Without isolation the host's interpreter runs the function.
		var err error
		if interp, err = w.interpreter(spec.Spec.Runtime); err != nil {
			return workerapi.Instance{}, err
		}
	}
	w.holdCode(spec.CodeDigest)
	codeDir, err := w.codeDir(ctx, spec.CodeDigest)
	if err != nil {
		w.releaseCode(spec.CodeDigest)
		return workerapi.Instance{}, err
	}
	a, err := w.acquireApp(ctx, spec, codeDir)
	if err != nil {
		w.releaseCode(spec.CodeDigest)
		return workerapi.Instance{}, err
	}
	in := &instance{
		id: id, spec: spec, app: a.key, sandbox: a, capacity: spec.Spec.Concurrency,
		logs: newLogCapture(w.opts.LogLimit), done: make(chan struct{}), released: make(chan struct{}),
	}
	// TODO(driver): in.capacity = min(spec.Spec.Concurrency, drv.MaxConcurrency()).
	if spec.Spec.Runtime != function.RuntimeNode {
		in.capacity = 1
	}
	if w.isolated() {
		interp = a.image.Interpreters[spec.Spec.Runtime]
		// TODO(driver): drv.Interpreter() == "" replaces the provided check.
		if interp == "" && spec.Spec.Image == "" && spec.Spec.Runtime != function.RuntimeProvided {
			// The host runtimes' root lacks this runtime: its base image
			// could not be built when the sandbox was made.
			w.releaseApp(a.key, spec.Spec.MemoryMB)
			w.releaseCode(spec.CodeDigest)
			return workerapi.Instance{}, fmt.Errorf("runtime %s is not available in app %s's sandbox: its base image could not be built on this host (see the server log)", spec.Spec.Runtime, spec.App)
		}
		if interp == "" {
			// A custom image: the interpreter is looked up on its PATH.
			// TODO(driver): interp = drv.Interpreter().
			interp = map[string]string{function.RuntimePython: "python3", function.RuntimeNode: "node"}[spec.Spec.Runtime]
		}
	}
	// launch owns the app reference from here on, also on failure.
	inst, err := w.launch(ctx, a, in, interp, codeDir)
	if err != nil {
		return workerapi.Instance{}, err
	}
	inst.InitDuration = time.Since(began)
	return inst, nil
}

// TODO(driver): replaced by runtimes.Driver.HostInterpreter (cached per
// driver at New).
func (w *Worker) interpreter(runtime string) (string, error) {
	switch runtime {
	case function.RuntimePython:
		if w.python == "" {
			return "", errors.New("runtime python3 is not available on this worker: python3 not found in PATH")
		}
		return w.python, nil
	case function.RuntimeNode:
		if w.node == "" {
			return "", errors.New("runtime nodejs is not available on this worker: node not found in PATH")
		}
		return w.node, nil
	case function.RuntimeProvided:
		return "", nil
	}
	return "", fmt.Errorf("unknown runtime %q", runtime)
}

// Paths as processes inside a sandbox see them.
const (
	taskMount    = "/var/task"
	runtimeMount = "/opt/baton/runtime"
)

// instanceEnv is the Lambda environment of an instance.
func (w *Worker) instanceEnv(a *app, spec workerapi.InstanceSpec, taskRoot string) map[string]string {
	env := map[string]string{
		"PATH":                            os.Getenv("PATH"),
		"LANG":                            "C.UTF-8",
		"TZ":                              ":UTC",
		"HOME":                            os.TempDir(),
		"LAMBDA_TASK_ROOT":                taskRoot,
		"LAMBDA_RUNTIME_DIR":              a.sb.Path(runtimeMount),
		"_HANDLER":                        spec.Spec.Handler,
		"AWS_LAMBDA_FUNCTION_NAME":        spec.Function,
		"AWS_LAMBDA_FUNCTION_VERSION":     strconv.Itoa(spec.Version),
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": strconv.Itoa(spec.Spec.MemoryMB),
		"AWS_LAMBDA_LOG_GROUP_NAME":       "/baton/" + spec.Function,
		"AWS_LAMBDA_INITIALIZATION_TYPE":  "on-demand",
		"AWS_REGION":                      "local",
		"AWS_DEFAULT_REGION":              "local",
		"AWS_EXECUTION_ENV":               "Baton_" + spec.Spec.Runtime,
		"BATON_CONCURRENCY":               strconv.Itoa(spec.Spec.Concurrency),
	}
	if w.isolated() {
		// Inside the sandbox only the image's files exist.
		env["HOME"] = "/tmp"
		env["PATH"] = ""
		for _, kv := range a.image.Env {
			if p, ok := strings.CutPrefix(kv, "PATH="); ok {
				env["PATH"] = p
			}
		}
	}
	if env["PATH"] == "" {
		env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
	}
	for k, v := range spec.Spec.Env {
		env[k] = v
	}
	return env
}

func envList(env map[string]string) []string { return function.EnvList(env) }

// launch starts the instance's process and waits for its runtime to poll.
func (w *Worker) launch(ctx context.Context, a *app, in *instance, interp, codeDir string) (workerapi.Instance, error) {
	taskRoot, codeDir, err := w.taskRoot(ctx, a, in.spec.CodeDigest, codeDir)
	if err != nil {
		w.releaseApp(in.app, in.spec.Spec.MemoryMB)
		w.releaseCode(in.spec.CodeDigest)
		return workerapi.Instance{}, err
	}
	// The endpoint lives in the sandbox's network namespace, so that an
	// isolated instance reaches it at 127.0.0.1 and nothing else does.
	ln, err := a.sb.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		w.releaseApp(in.app, in.spec.Spec.MemoryMB)
		w.releaseCode(in.spec.CodeDigest)
		return workerapi.Instance{}, fmt.Errorf("runtime api listener: %w", err)
	}
	in.api = runtimeapi.New(runtimeapi.Options{Logger: w.log, MaxResponseBytes: w.opts.MaxResponseBytes})
	go func() {
		if err := in.api.Serve(ln); err != nil {
			w.log.Debug("runtime api stopped", "instance", in.id, "err", err)
		}
	}()
	fail := func(err error) (workerapi.Instance, error) {
		in.api.Close()
		w.releaseApp(in.app, in.spec.Spec.MemoryMB)
		w.releaseCode(in.spec.CodeDigest)
		return workerapi.Instance{}, err
	}
	env := w.instanceEnv(a, in.spec, taskRoot)
	env["AWS_LAMBDA_RUNTIME_API"] = ln.Addr().String()
	env["AWS_LAMBDA_LOG_STREAM_NAME"] = in.id

	outR, outW, err := os.Pipe()
	if err != nil {
		return fail(fmt.Errorf("stdout pipe: %w", err))
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return fail(fmt.Errorf("stderr pipe: %w", err))
	}
	in.logs.follow(outR)
	in.logs.follow(errR)

	forked := false
	// TODO(driver): if drv.Forks() { acquireGrain... } else { a.sb.Start with
	// Args: drv.Command(interp, clientPath(a, drv), env["LAMBDA_TASK_ROOT"]) }.
	switch in.spec.Spec.Runtime {
	case function.RuntimePython:
		g, gerr := w.acquireGrain(ctx, a, in.spec, interp, taskRoot)
		if gerr == nil {
			in.grain = g
			in.child, gerr = g.z.Spawn(ctx, env, outW, errW)
			if gerr == nil {
				gerr = w.confine(ctx, in)
			}
			if gerr != nil {
				w.releaseGrain(g)
			}
			forked = true
		}
		err = gerr
	case function.RuntimeNode:
		in.proc, err = a.sb.Start(ctx, sandbox.ProcessSpec{
			Args: []string{interp, filepath.Join(a.sb.Path(runtimeMount), filepath.Base(w.runtimes.Client(function.RuntimeNode)))},
			Env:  envList(env), Dir: env["LAMBDA_TASK_ROOT"], Stdout: outW, Stderr: errW,
			Limits: instanceLimits(in.spec),
		})
	case function.RuntimeProvided:
		in.proc, err = a.sb.Start(ctx, sandbox.ProcessSpec{
			Args: []string{filepath.Join(env["LAMBDA_TASK_ROOT"], "bootstrap")},
			Env:  envList(env), Dir: env["LAMBDA_TASK_ROOT"], Stdout: outW, Stderr: errW,
			Limits: instanceLimits(in.spec),
		})
	}
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.ENOEXEC) {
			// The function's own executable cannot run: that is the
			// function's init failure, told without host paths.
			return fail(&workerapi.InitError{Err: workerapi.FunctionError{
				Type: "Runtime.InvalidEntrypoint", Message: entrypointProblem(in.spec.Spec.Runtime, err),
			}})
		}
		return fail(fmt.Errorf("start instance of %s: %w", in.spec.Function, err))
	}
	// Registered before watch starts, so that watch always finds it and
	// releases the app reference exactly once.
	w.mu.Lock()
	w.instances[in.id] = in
	w.mu.Unlock()
	go w.watch(in)

	var initErr *workerapi.InitError
	var cancelled error
	select {
	case <-in.api.Ready():
		return workerapi.Instance{ID: in.id, Function: in.spec.Function, Version: in.spec.Version, Capacity: in.capacity, Forked: forked}, nil
	case fe := <-in.api.InitError():
		initErr = &workerapi.InitError{Err: *boundedError(fe)}
	case <-in.done:
		// A runtime that reported its init error and then exited: the
		// report is the better explanation than the exit.
		select {
		case fe := <-in.api.InitError():
			initErr = &workerapi.InitError{Err: *boundedError(fe)}
		default:
			initErr = &workerapi.InitError{Err: workerapi.FunctionError{
				Type: "Runtime.ExitError", Message: "instance exited before its runtime asked for work: " + in.exitDesc,
			}}
			// TODO(driver): drv.Executable() != "" names the missing file.
			if in.spec.Spec.Runtime == function.RuntimeProvided {
				if _, serr := os.Stat(filepath.Join(codeDir, "bootstrap")); serr != nil {
					initErr.Err.Message = "runtime provided needs an executable named bootstrap at the root of the code archive: " + in.exitDesc
				}
			}
		}
	case <-ctx.Done():
		if !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			// Stopped while starting: not the function's failure.
			cancelled = fmt.Errorf("start of instance %s cancelled: %w", in.id, context.Cause(ctx))
			break
		}
		initErr = &workerapi.InitError{Err: workerapi.FunctionError{
			Type: "Runtime.InitTimeout", Message: "runtime did not ask for work before the start deadline",
		}}
	}
	w.mu.Lock()
	in.stopping = true // an init failure is reported here, not as an event
	w.mu.Unlock()
	if w.killAndWait(in) {
		// As in StopInstance: the failure is reported once the instance
		// released its sandbox (the last one destroys it), so that no
		// teardown still runs when a shutdown follows.
		<-in.released
	}
	// Something the instance started may still hold its pipes; its output
	// is not worth waiting for.
	in.logs.waitOrClose(time.Second)
	if cancelled != nil {
		return workerapi.Instance{}, cancelled
	}
	initErr.Logs = in.logs.takeOrphan()
	return workerapi.Instance{}, initErr
}

// confine gives a forked instance limits of its own where the sandbox
// enforces them, then releases it: it runs none of the function's code
// before. An instance that cannot be confined is killed: it must not run
// unconfined.
func (w *Worker) confine(ctx context.Context, in *instance) error {
	c, ok := in.grain.proc.(sandbox.Confiner)
	if !ok {
		return w.release(in)
	}
	g, err := c.Confine(ctx, in.child.Pid(), instanceLimits(in.spec))
	if errors.Is(err, sandbox.ErrProcessGone) && w.exitedMeanwhile(in, "confined", err) {
		return nil
	}
	if err != nil {
		_ = in.child.Kill(syscall.SIGKILL)
		<-in.child.Done()
		return fmt.Errorf("confine instance: %w", err)
	}
	in.group = g
	return w.release(in)
}

// release lets a held fork run.
func (w *Worker) release(in *instance) error {
	err := in.child.Release()
	if err == nil || w.exitedMeanwhile(in, "released", err) {
		return nil
	}
	_ = in.child.Kill(syscall.SIGKILL)
	<-in.child.Done()
	return fmt.Errorf("release instance: %w", err)
}

// exitedMeanwhile tells whether a held fork that could not be confined or
// released is gone (killed: it runs nothing of its own while held), as
// the grain worker confirms; its exit is then reported as usual. A live
// instance must not run unconfined, so only the grain worker's word
// counts.
func (w *Worker) exitedMeanwhile(in *instance, what string, err error) bool {
	select {
	case <-in.child.Done():
		w.log.Debug("instance exited before it was "+what, "instance", in.id, "err", err)
		return true
	case <-time.After(time.Second):
		return false
	}
}

// TODO(driver): what := drv.Executable(), or the interpreter when "".
func entrypointProblem(runtime string, err error) string {
	what := "the runtime interpreter"
	if runtime == function.RuntimeProvided {
		what = "bootstrap"
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return what + " was not found"
	case errors.Is(err, fs.ErrPermission):
		return what + " is not executable (permission denied)"
	default:
		return what + " is not a valid executable for this host (exec format error)"
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

	w.mu.Lock()
	delete(w.instances, in.id)
	// Only a ready instance's end is news: a start that fails is
	// reported by its start (InstanceFailed).
	t := w.live[in.id]
	wasReady := t != nil && t.inst.State == workerapi.Ready
	if wasReady {
		delete(w.live, in.id)
	}
	w.releases++ // Close no longer sees the instance, but must wait for this
	stopping := in.stopping
	w.mu.Unlock()
	if in.grain != nil {
		w.releaseGrain(in.grain)
	}
	w.releaseApp(in.app, in.spec.Spec.MemoryMB)
	w.releaseCode(in.spec.CodeDigest)
	close(in.released)
	w.endRelease() // before the event, which may wait for a reader
	if wasReady && !stopping {
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

// Limits on what a function's error may carry: it is kept in records and
// memory, so a hostile function must not make it huge.
const (
	maxErrorMessage    = 4 << 10
	maxStackTraceBytes = 16 << 10
)

func boundedError(fe *runtimeapi.FunctionError) *workerapi.FunctionError {
	out := &workerapi.FunctionError{Message: truncate(fe.Message, maxErrorMessage), Type: truncate(fe.Type, 256)}
	budget := maxStackTraceBytes
	for _, line := range fe.StackTrace {
		if budget <= 0 {
			out.StackTrace = append(out.StackTrace, "… stack trace truncated")
			break
		}
		line = truncate(line, budget)
		budget -= len(line)
		out.StackTrace = append(out.StackTrace, line)
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "… (truncated)"
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

// StopInstance implements workerapi.Worker.
func (w *Worker) StopInstance(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("stop instance %s: %w", id, err)
	}
	w.mu.Lock()
	t := w.live[id]
	if t != nil {
		t.stopped = true
	}
	w.mu.Unlock()
	if t != nil {
		// A start under way is cancelled; it releases what it took
		// (and kills an instance that became ready meanwhile).
		t.cancel(errStopped)
		select {
		case <-t.done:
		case <-ctx.Done():
			return fmt.Errorf("stop instance %s: %w", id, ctx.Err())
		}
	}
	w.mu.Lock()
	in, ok := w.instances[id]
	if ok {
		in.stopping = true
	}
	w.mu.Unlock()
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

// Invoke implements workerapi.Worker.
func (w *Worker) Invoke(ctx context.Context, id string, inv workerapi.Invocation) (workerapi.Result, error) {
	if err := ctx.Err(); err != nil {
		return workerapi.Result{}, fmt.Errorf("invoke instance %s: %w", id, err)
	}
	w.mu.Lock()
	in, ok := w.instances[id]
	w.mu.Unlock()
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
	in.logs.begin(inv.ID)
	began := time.Now()
	res, err := in.api.Invoke(ictx, runtimeapi.Event{
		RequestID: inv.ID, Payload: inv.Payload, Deadline: inv.Deadline, TraceID: inv.TraceID,
		FunctionARN: function.ARN(in.spec.Function, in.spec.Version),
	})
	elapsed := time.Since(began)
	if err != nil {
		var f *workerapi.Failure
		select {
		case <-in.done:
			if errors.Is(err, runtimeapi.ErrNotDelivered) {
				f = &workerapi.Failure{Kind: workerapi.FailureNotDelivered, Message: "instance " + in.id + " died before it received the event: " + in.exitDesc}
				break
			}
			f = &workerapi.Failure{Kind: workerapi.FailureCrash, Message: "instance " + in.id + " died during the invocation: " + in.exitDesc}
			if in.oomKilled {
				f = &workerapi.Failure{Kind: workerapi.FailureOutOfMemory, Message: fmt.Sprintf(
					"instance %s ran out of memory (memoryMB %d) and was killed", in.id, in.spec.Spec.MemoryMB)}
			}
		default:
			switch {
			case errors.Is(err, runtimeapi.ErrResponseTooLarge):
				// Runtime clients treat the refused post as fatal (aws-lambda-go
				// exits), so the instance is replaced rather than trusted.
				w.killAndWait(in)
				f = &workerapi.Failure{Kind: workerapi.FailureTooLarge,
					Message: fmt.Sprintf("response is larger than the %d byte limit", w.opts.MaxResponseBytes)}
			case errors.Is(parent.Err(), context.DeadlineExceeded) ||
				(ctx.Err() != nil && !inv.Deadline.IsZero() && !time.Now().Before(inv.Deadline)):
				// Either this worker's deadline fired or the caller's own
				// timer did, at the same instant, a little earlier.
				// The runtime is still busy with the event and cannot be
				// interrupted: the instance has to go.
				w.killAndWait(in)
				f = &workerapi.Failure{Kind: workerapi.FailureTimeout,
					Message: fmt.Sprintf("function timed out after %s", in.spec.Spec.Timeout())}
			case ctx.Err() != nil:
				w.killAndWait(in)
				f = &workerapi.Failure{Kind: workerapi.FailureInstanceGone, Message: "invocation cancelled: " + ctx.Err().Error()}
			default:
				w.killAndWait(in)
				f = &workerapi.Failure{Kind: workerapi.FailureWorkerFailure, Message: err.Error()}
			}
		}
		if f.Kind == workerapi.FailureCrash || f.Kind == workerapi.FailureOutOfMemory {
			// What the instance printed as it died names no invocation
			// when several were in flight; each one it failed gets it.
			f.Logs, f.LogsTruncated = in.logs.endFailed(inv.ID)
		} else {
			f.Logs, f.LogsTruncated = in.logs.end(inv.ID)
		}
		return workerapi.Result{Duration: elapsed}, f
	}
	out := workerapi.Result{Payload: res.Payload, Duration: elapsed}
	if res.Error != nil {
		out.Error = boundedError(res.Error)
	}
	out.Logs, out.LogsTruncated = in.logs.end(inv.ID)
	return out, nil
}

// Close stops every instance, grain worker and sandbox.
func (w *Worker) Close(ctx context.Context) error {
	w.mu.Lock()
	if !w.closed {
		close(w.stop)
	}
	w.closed = true
	w.mu.Unlock()
	// Starts under way are cancelled first: each releases what it took.
	w.cancel()
	started := make(chan struct{})
	go func() { w.starts.Wait(); close(started) }()
	select {
	case <-started:
	case <-ctx.Done():
		return fmt.Errorf("instance starts still running at shutdown: %w", ctx.Err())
	}
	defer w.events.Close()
	w.mu.Lock()
	ins := make([]*instance, 0, len(w.instances))
	for _, in := range w.instances {
		in.stopping = true
		ins = append(ins, in)
	}
	w.mu.Unlock()
	for _, in := range ins {
		w.kill(in)
	}
	for _, in := range ins {
		// released, not done: the instance's last sandbox reference may
		// destroy the sandbox, which must finish before the process exits
		// (or its mounts and cgroups outlive it).
		select {
		case <-in.released:
		case <-ctx.Done():
			return fmt.Errorf("instances still running at shutdown: %w", ctx.Err())
		}
	}
	w.mu.Lock()
	grains := make([]*grainWorker, 0, len(w.grains))
	for _, g := range w.grains {
		grains = append(grains, g)
	}
	apps := make([]*app, 0, len(w.apps))
	for _, a := range w.apps {
		apps = append(apps, a)
	}
	w.mu.Unlock()
	for _, g := range grains {
		g.stop()
	}
	for _, a := range apps {
		<-a.ready
		if a.sb != nil {
			_ = a.sb.Destroy(ctx)
		}
		w.cleanupFiles(a)
	}
	reaped := make(chan struct{})
	go func() { w.grainProcs.Wait(); close(reaped) }()
	select {
	case <-reaped:
	case <-ctx.Done():
		return fmt.Errorf("grain workers still running at shutdown: %w", ctx.Err())
	}
	idle := make(chan struct{})
	w.mu.Lock()
	if w.releases == 0 {
		close(idle)
	} else {
		w.releasesIdle = idle
	}
	w.mu.Unlock()
	select {
	case <-idle:
	case <-ctx.Done():
		return fmt.Errorf("sandboxes still being released at shutdown: %w", ctx.Err())
	}
	return nil
}

// endRelease ends a release counted in w.releases (under mu).
func (w *Worker) endRelease() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.releases--
	if w.releases == 0 && w.releasesIdle != nil {
		close(w.releasesIdle)
		w.releasesIdle = nil
	}
}

var _ workerapi.Worker = (*Worker)(nil)
