package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/baton-faas/baton/internal/node/grain"
	"github.com/baton-faas/baton/internal/runtimes"
	"github.com/baton-faas/baton/internal/sandbox"
	"github.com/baton-faas/baton/internal/workerapi"
)

// grainWorker is a zygote for one function version of a forking runtime
// (Python): it imported the handler once, and every further instance is
// a fork of it (SAND). It is started under the worker's lifetime, not
// under the start that first needed it: stopping that start must not
// take the grain worker from other starts waiting for it.
type grainWorker struct {
	key string
	// cancel ends the grain worker's start (its last waiter left, or the
	// worker closes).
	cancel context.CancelFunc

	// ready is closed once the start ended; proc and z (nil if the
	// process never started) and err are set before.
	ready chan struct{}
	proc  sandbox.Process
	z     *grain.Zygote
	err   error
	// exited is closed once the zygote process has been reaped.
	exited chan struct{}

	// spec and app are the version and the sandbox it was started for.
	spec workerapi.InstanceSpec
	app  *app

	children int // guarded by grainTable.mu
	// kept: the last child left and the grain worker is kept (see
	// keep.go) until keptUntil; guarded by grainTable.mu.
	kept      bool
	keptUntil time.Time
	// reclaimAt is when a kept grain worker's page cache is reclaimed
	// (zero: done or not due); guarded by grainTable.mu.
	reclaimAt time.Time

	// parkMu orders parking (freeze, reclaim) against unparking; parked
	// is guarded by it.
	parkMu sync.Mutex
	parked bool
}

// grainTable is the worker's grain workers by grainKey. Its lock is taken
// alone (see the package comment).
type grainTable struct {
	mu     sync.Mutex
	grains map[string]*grainWorker
}

func (t *grainTable) init() { t.grains = map[string]*grainWorker{} }

func (t *grainTable) all() []*grainWorker {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*grainWorker, 0, len(t.grains))
	for _, g := range t.grains {
		out = append(out, g)
	}
	return out
}

func (t *grainTable) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.grains)
}

// join counts one more child against key's grain worker. A failed or dead
// one is replaced, so that a transient import failure is retried; when
// there is none, newGrain makes one (created: the caller starts it). A
// kept one is taken back (revived: the caller unparks it and drops its
// keep); a kept one that died is returned as stale, for the caller to
// drop.
func (t *grainTable) join(key string, newGrain func() *grainWorker) (g *grainWorker, created, revived bool, stale *grainWorker) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if g, ok := t.grains[key]; ok {
		select {
		case <-g.ready:
			if g.err != nil || isDone(g.z) {
				delete(t.grains, key)
				ok = false
				if g.kept {
					g.kept = false
					stale = g
				}
			}
		default:
		}
		if ok {
			g.children++
			revived = g.kept
			g.kept = false
			return g, false, revived, nil
		}
	}
	g = newGrain()
	g.children = 1
	t.grains[key] = g
	return g, true, false, stale
}

// leave drops one child. When it was the last one, the grain worker is
// kept if keep allows (it stays in the table, kept until until), or else
// taken out of the table (last).
func (t *grainTable) leave(g *grainWorker, keep func(*grainWorker) bool, until time.Time) (last, kept bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	g.children--
	if g.children > 0 {
		return false, false
	}
	if t.grains[g.key] == g && keep(g) {
		g.kept, g.keptUntil = true, until
		g.reclaimAt = time.Now().Add(reclaimDelay(until.Sub(time.Now())))
		return false, true
	}
	if t.grains[g.key] == g {
		delete(t.grains, g.key)
	}
	return true, false
}

// grainKey identifies what a zygote has loaded. Versions restart at 1
// after a function is deleted, so the key also holds the code digest and a
// hash of the spec: a zygote must never serve code or settings it did not
// load.
func grainKey(spec workerapi.InstanceSpec) string {
	specJSON, _ := json.Marshal(spec.Spec)
	sum := sha256.Sum256(specJSON)
	return spec.Function + "/" + strconv.Itoa(spec.Version) + "/" + spec.CodeDigest + "/" + hex.EncodeToString(sum[:8])
}

// acquireGrain returns the running grain worker of the version, starting it
// if needed, and counts one more child against it; revived says it was
// kept (keep.go). The grain worker starts in a goroutine of the worker's;
// a caller whose ctx ends only stops waiting (and drops its count: the
// last one to leave stops it).
func (w *Worker) acquireGrain(ctx context.Context, a *app, spec workerapi.InstanceSpec, drv runtimes.Driver, interp, taskRoot string) (_ *grainWorker, revived bool, _ error) {
	key := grainKey(spec)
	var gctx context.Context
	g, created, revived, stale := w.grains.join(key, func() *grainWorker {
		g := &grainWorker{key: key, ready: make(chan struct{}), exited: make(chan struct{}), spec: spec, app: a}
		gctx, g.cancel = context.WithTimeout(w.ctx, w.opts.StartTimeout)
		return g
	})
	if stale != nil {
		w.dropKept("its zygote died", stale)
	}
	if revived {
		w.revived(g)
	}
	if created {
		w.background.Add(1)
		go func() {
			defer w.background.Done()
			defer g.cancel()
			g.err = w.startGrain(gctx, a, g, spec, drv, interp, taskRoot)
			close(g.ready)
		}()
	}
	select {
	case <-g.ready:
	case <-ctx.Done():
		w.releaseGrain(g)
		if errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			return nil, false, &workerapi.InitError{Err: workerapi.FunctionError{
				Type: "Runtime.InitTimeout", Message: "the handler module did not finish loading before the start deadline",
			}}
		}
		return nil, false, fmt.Errorf("grain worker start cancelled: %w", context.Cause(ctx))
	}
	if g.err != nil {
		w.releaseGrain(g)
		return nil, false, g.err
	}
	// Every start of a kept grain worker thaws it (once): one that joined
	// right after the start that took it back must not fork from it
	// frozen.
	if err := g.unpark(); err != nil {
		w.releaseGrain(g)
		return nil, false, fmt.Errorf("thaw the kept grain worker: %w", err)
	}
	return g, revived, nil
}

func isDone(z *grain.Zygote) bool {
	if z == nil {
		return true
	}
	select {
	case <-z.Done():
		return true
	default:
		return false
	}
}

// startGrain starts g's zygote and waits until it has imported the
// handler; ctx is the grain worker's own (see acquireGrain).
func (w *Worker) startGrain(ctx context.Context, a *app, g *grainWorker, spec workerapi.InstanceSpec, drv runtimes.Driver, interp, taskRoot string) error {
	if !drv.Forks() {
		return fmt.Errorf("grain worker: runtime %s does not fork instances from a zygote", drv.Name())
	}
	ours, theirs, err := grain.SocketPair()
	if err != nil {
		return fmt.Errorf("grain worker socket: %w", err)
	}
	env := w.instanceEnv(a, spec, taskRoot)
	// The zygote's own output (import-time prints) goes to the worker log;
	// each forked instance gets its own pipes.
	logR, logW, err := os.Pipe()
	if err != nil {
		ours.Close()
		theirs.Close()
		return fmt.Errorf("grain worker pipe: %w", err)
	}
	proc, err := a.sb.Start(ctx, sandbox.ProcessSpec{
		Args: drv.Command(interp, clientPath(a, drv), env["LAMBDA_TASK_ROOT"]),
		Env:  envList(env), Dir: env["LAMBDA_TASK_ROOT"], Stdout: logW, Stderr: logW,
		ExtraFiles: []*os.File{theirs},
		// The grain worker is the function's code too (its import).
		Limits: instanceLimits(spec),
	})
	theirs.Close()
	logW.Close()
	if err != nil {
		ours.Close()
		logR.Close()
		if ctx.Err() != nil && !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			return fmt.Errorf("grain worker start cancelled: %w", context.Cause(ctx))
		}
		return fmt.Errorf("start grain worker: %w", err)
	}
	g.proc = proc
	g.z = grain.New(ours, w.log.With("grain", g.key))
	w.background.Add(2)
	go func() {
		defer w.background.Done()
		w.forwardGrainOutput(g.key, logR)
	}()
	go func() {
		defer w.background.Done()
		st, err := proc.Wait()
		w.log.Debug("grain worker exited", "grain", g.key, "status", describeExit(st, err))
		g.z.Close()
		close(g.exited)
	}()

	if _, err := g.z.Ready(ctx); err != nil {
		g.kill()
		if ctx.Err() != nil && !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			// Every start that wanted it left, or the worker closes.
			return fmt.Errorf("grain worker start cancelled: %w", context.Cause(ctx))
		}
		if ctx.Err() != nil {
			// The handler's module did not finish importing in time.
			return &workerapi.InitError{Err: workerapi.FunctionError{
				Type: "Runtime.InitTimeout", Message: "the handler module did not finish loading before the start deadline",
			}}
		}
		return fmt.Errorf("grain worker did not become ready: %w", err)
	}
	// An import error is not a grain failure: children report it through
	// /init/error, so it reaches the caller as an ordinary init error.
	return nil
}

func (w *Worker) forwardGrainOutput(key string, r *os.File) {
	defer r.Close()
	buf := make([]byte, 8<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			w.log.Info("grain worker output", "grain", key, "output", string(buf[:n]))
		}
		if err != nil {
			return
		}
	}
}

// releaseGrain drops one child reference; the last one stops the grain
// worker, so a function scaled to zero holds nothing (but see
// releaseGrainKeeping).
func (w *Worker) releaseGrain(g *grainWorker) {
	if last, _ := w.grains.leave(g, func(*grainWorker) bool { return false }, time.Time{}); last {
		g.stop()
	}
}

// stop ends the grain worker, also one still starting, and waits until
// its zygote has been reaped, so nothing outlives the worker.
func (g *grainWorker) stop() {
	g.cancel()
	<-g.ready
	g.kill()
}

// kill ends the zygote (closing its socket makes it kill its children and
// exit) and waits until it has been reaped. Only the grain worker's start
// and stop call it, and stop only after the start ended.
func (g *grainWorker) kill() {
	if g.z != nil {
		g.z.Close()
	}
	if g.proc == nil {
		return
	}
	select {
	case <-g.exited:
		return
	case <-time.After(2 * time.Second):
	}
	_ = g.proc.Kill()
	<-g.exited
}

// clientPath is where a runtime's client is inside the app's sandbox, ""
// for a runtime without one.
func clientPath(a *app, drv runtimes.Driver) string {
	file, _ := drv.ClientFile()
	if file == "" {
		return ""
	}
	return filepath.Join(a.sb.Path(runtimeMount), file)
}
