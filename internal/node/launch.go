package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/baton-faas/baton/internal/datalayer"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/node/runtimeapi"
	"github.com/baton-faas/baton/internal/runtimes"
	"github.com/baton-faas/baton/internal/sandbox"
	"github.com/baton-faas/baton/internal/workerapi"
)

// An instance start, in steps: start takes the code and the app's
// sandbox; launch serves the instance's Runtime API (serveAPI), starts its
// process (spawn: forked from the grain worker, or a process of its own)
// and waits for its runtime to ask for work (awaitReady).

// start creates instance id of spec and waits until its runtime asks for
// work. ctx ends when the start is cancelled or its deadline passes.
func (w *Worker) start(ctx context.Context, id string, spec workerapi.InstanceSpec) (workerapi.Instance, error) {
	began := time.Now()
	drv, err := driver(spec.Spec.Runtime)
	if err != nil {
		return workerapi.Instance{}, err
	}
	// Background preparation (Prepare) waits while a start runs, except
	// for what the start needs itself: on a small host the start is what
	// it is meant to speed up.
	defer w.busy.enter()()
	if _, isolated := w.files.(imageFiles); isolated && w.opts.BaseImages != nil {
		defer w.opts.BaseImages.Hold()()
	}
	// The working set's prefetch runs while the code is fetched and the
	// sandbox made.
	ws := w.wsBegin(ctx, spec)
	started := false
	defer func() { w.wsFinish(ws, spec, started) }()
	// Kept zygotes give way to instances when the node's memory is short;
	// the version's own is taken back (it holds its sandbox until
	// acquireApp counts the start there).
	w.makeRoom(grainKey(spec))
	revived := w.keptFor(ctx, ws, grainKey(spec))
	w.holdCode(spec.CodeDigest)
	codeDir, err := w.codeDir(ctx, spec.CodeDigest)
	if err != nil {
		w.releaseCode(spec.CodeDigest)
		if revived != nil {
			// The keep ends with the start that took it back.
			w.releaseKeep(revived)
			w.releaseGrain(revived)
		}
		return workerapi.Instance{}, err
	}
	marks := startMarks{began: began}
	marks.mark("code")
	a, err := w.acquireApp(ctx, spec, codeDir, revived)
	if err != nil {
		w.releaseCode(spec.CodeDigest)
		return workerapi.Instance{}, err
	}
	interp, err := w.files.interpreter(a, spec, drv)
	if err != nil {
		w.releaseApp(a.key, spec.Spec.MemoryMB)
		w.releaseCode(spec.CodeDigest)
		return workerapi.Instance{}, err
	}
	marks.mark("sandbox")
	in := &instance{
		id: id, spec: spec, app: a.key, sandbox: a, capacity: capacity(drv, spec.Spec.Concurrency),
		logs: newLogCapture(w.opts.LogLimit), done: make(chan struct{}), released: make(chan struct{}),
		marks: &marks, claimed: revived,
	}
	// launch owns the app and code references from here on, also on
	// failure.
	inst, err := w.launch(ctx, drv, in, ws, interp, codeDir)
	if err != nil {
		return workerapi.Instance{}, err
	}
	inst.InitDuration = time.Since(began)
	started = true
	w.log.Debug("instance start", append([]any{"function", spec.Function, "instance", id, "zygote-kept", in.revived}, marks.attrs()...)...)
	return inst, nil
}

// startMarks time a start's steps, for the debug log (see start).
type startMarks struct {
	began time.Time
	last  time.Time
	steps []any // name, duration pairs
}

// mark ends step name.
func (m *startMarks) mark(name string) {
	if m == nil {
		return
	}
	now := time.Now()
	if m.last.IsZero() {
		m.last = m.began
	}
	m.steps = append(m.steps, name, now.Sub(m.last))
	m.last = now
}

func (m *startMarks) attrs() []any { return append(m.steps, "total", time.Since(m.began)) }

// launch starts the instance's process and waits for its runtime to poll.
func (w *Worker) launch(ctx context.Context, drv runtimes.Driver, in *instance, ws *wsStart, interp, codeDir string) (workerapi.Instance, error) {
	a := in.sandbox
	release := func() {
		w.releaseApp(in.app, in.spec.Spec.MemoryMB)
		w.releaseCode(in.spec.CodeDigest)
	}
	taskRoot, codeDir, err := w.files.taskRoot(ctx, a, in.spec.CodeDigest, codeDir)
	if err != nil {
		release()
		return workerapi.Instance{}, err
	}
	in.marks.mark("task-root")
	w.wsBeforeSpawn(ctx, ws, in)
	in.marks.mark("prefetch")
	addr, err := w.serveAPI(a, in)
	if err != nil {
		release()
		return workerapi.Instance{}, err
	}
	in.marks.mark("runtime-api")
	env := w.instanceEnv(a, in.spec, taskRoot)
	env["AWS_LAMBDA_RUNTIME_API"] = addr
	socketEnv(env, w.serveSocket(drv, a, in))
	env["AWS_LAMBDA_LOG_STREAM_NAME"] = in.id
	if err := w.spawn(ctx, drv, in, interp, env); err != nil {
		in.api.Close()
		release()
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.ENOEXEC) {
			// The function's own executable cannot run: that is the
			// function's init failure, told without host paths.
			return workerapi.Instance{}, &workerapi.InitError{Err: workerapi.FunctionError{
				Type: "Runtime.InvalidEntrypoint", Message: entrypointProblem(drv, err),
			}}
		}
		return workerapi.Instance{}, fmt.Errorf("start instance of %s: %w", in.spec.Function, err)
	}
	// Registered before watch starts, so that watch always finds it; from
	// here watch releases the references, exactly once.
	w.instances.register(in)
	go w.watch(in)
	inst, err := w.awaitReady(ctx, drv, in, codeDir)
	in.marks.mark("runtime-init")
	return inst, err
}

// serveAPI serves the instance's Runtime API and returns its address. The
// endpoint lives in the sandbox's network namespace, so that an isolated
// instance reaches it at 127.0.0.1 and nothing else does.
func (w *Worker) serveAPI(a *app, in *instance) (string, error) {
	ln, err := a.sb.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("runtime api listener: %w", err)
	}
	in.api = runtimeapi.New(runtimeapi.Options{Logger: w.log, MaxResponseBytes: w.opts.MaxResponseBytes, Data: w.dataFor(in.spec),
		Invoke: w.invokerFor(in.spec)})
	go func() {
		if err := in.api.Serve(ln); err != nil {
			w.log.Debug("runtime api stopped", "instance", in.id, "err", err)
		}
	}()
	return ln.Addr().String(), nil
}

// dataFor is the data layers as an instance of spec sees them: its
// application's alone.
func (w *Worker) dataFor(spec workerapi.InstanceSpec) *datalayer.AppData {
	if w.opts.Data == nil {
		return nil
	}
	app := spec.App
	if app == "" {
		app = function.AppOf(spec.Function, spec.Spec)
	}
	return w.opts.Data.App(app)
}

// spawn starts the instance's process with its output captured: forked
// from the version's grain worker when the runtime forks, otherwise a
// process of its own running the runtime's command.
func (w *Worker) spawn(ctx context.Context, drv runtimes.Driver, in *instance, interp string, env map[string]string) error {
	outR, outW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return fmt.Errorf("stderr pipe: %w", err)
	}
	in.logs.follow(outR)
	in.logs.follow(errR)
	taskRoot := env["LAMBDA_TASK_ROOT"]
	if drv.Forks() {
		err = w.fork(ctx, drv, in, interp, taskRoot, env, outW, errW)
	} else {
		in.proc, err = in.sandbox.sb.Start(ctx, sandbox.ProcessSpec{
			Args: drv.Command(interp, clientPath(in.sandbox, drv), taskRoot),
			Env:  envList(env), Dir: taskRoot, Stdout: outW, Stderr: errW,
			Limits: instanceLimits(in.spec),
		})
		in.marks.mark("process")
	}
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
	}
	return err
}

// fork forks the instance from the version's grain worker (starting it if
// needed) and confines it.
func (w *Worker) fork(ctx context.Context, drv runtimes.Driver, in *instance, interp, taskRoot string, env map[string]string, stdout, stderr *os.File) error {
	g, revived, err := in.claimed, true, error(nil)
	in.claimed = nil
	if g != nil {
		err = g.unpark()
		if err != nil {
			w.releaseGrain(g)
			err = fmt.Errorf("thaw the kept grain worker: %w", err)
		}
	} else {
		g, revived, err = w.acquireGrain(ctx, in.sandbox, in.spec, drv, interp, taskRoot)
	}
	if err != nil {
		return err
	}
	in.grain, in.revived = g, revived
	in.marks.mark("zygote")
	in.child, err = g.z.Spawn(ctx, env, stdout, stderr)
	in.marks.mark("fork")
	if err == nil {
		err = w.confine(ctx, in)
		in.marks.mark("confine")
	}
	if err != nil {
		in.grain, in.child = nil, nil
		w.releaseGrain(g)
	}
	return err
}

// awaitReady waits until the instance's runtime asks for work. An instance
// that fails its init is killed, and the failure reported once it
// released everything (the last instance of a sandbox destroys it), so
// that no teardown still runs when a shutdown follows.
func (w *Worker) awaitReady(ctx context.Context, drv runtimes.Driver, in *instance, codeDir string) (workerapi.Instance, error) {
	var initErr *workerapi.InitError
	var cancelled error
	select {
	case <-in.api.Ready():
		return workerapi.Instance{ID: in.id, Function: in.spec.Function, Version: in.spec.Version, Capacity: in.capacity, Forked: in.child != nil}, nil
	case fe := <-in.api.InitError():
		initErr = &workerapi.InitError{Err: *fe}
	case <-in.done:
		initErr = w.exitedDuringInit(drv, in, codeDir)
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
	w.instances.markStopping(in) // an init failure is reported here, not as an event
	if w.killAndWait(in) {
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

// exitedDuringInit explains an instance that exited before its runtime
// asked for work.
func (w *Worker) exitedDuringInit(drv runtimes.Driver, in *instance, codeDir string) *workerapi.InitError {
	// A runtime that reported its init error and then exited: the report
	// is the better explanation than the exit.
	select {
	case fe := <-in.api.InitError():
		return &workerapi.InitError{Err: *fe}
	default:
	}
	initErr := &workerapi.InitError{Err: workerapi.FunctionError{
		Type: "Runtime.ExitError", Message: "instance exited before its runtime asked for work: " + in.exitDesc,
	}}
	if exe := drv.Executable(); exe != "" {
		if _, err := os.Stat(filepath.Join(codeDir, exe)); err != nil {
			initErr.Err.Message = fmt.Sprintf("runtime %s needs an executable named %s at the root of the code archive: %s", drv.Name(), exe, in.exitDesc)
		}
	}
	return initErr
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
	w.files.env(a, env)
	if env["PATH"] == "" {
		env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
	}
	for k, v := range spec.Spec.Env {
		env[k] = v
	}
	return env
}

func envList(env map[string]string) []string { return function.EnvList(env) }
