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
	"time"

	"github.com/baton-faas/baton/internal/node/grain"
	"github.com/baton-faas/baton/internal/runtimes"
	"github.com/baton-faas/baton/internal/sandbox"
	"github.com/baton-faas/baton/internal/workerapi"
)

// grainWorker is a Python zygote for one function version: it imported the
// handler once, and every further instance is a fork of it (SAND).
type grainWorker struct {
	key  string
	proc sandbox.Process
	z    *grain.Zygote

	ready chan struct{}
	err   error
	// exited is closed once the zygote process has been reaped.
	exited chan struct{}

	children int // guarded by Worker.mu
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
// if needed, and counts one more child against it.
func (w *Worker) acquireGrain(ctx context.Context, a *app, spec workerapi.InstanceSpec, interp, taskRoot string) (*grainWorker, error) {
	key := grainKey(spec)
	w.mu.Lock()
	g, ok := w.grains[key]
	if ok {
		select {
		case <-g.ready:
			if g.err != nil || isDone(g.z) {
				// A failed or dead grain worker is replaced, so that a
				// transient import failure is retried.
				delete(w.grains, key)
				ok = false
			}
		default:
		}
	}
	if ok {
		g.children++
		w.mu.Unlock()
		select {
		case <-g.ready:
		case <-ctx.Done():
			w.releaseGrain(g)
			return nil, ctx.Err()
		}
		if g.err != nil {
			w.releaseGrain(g)
			return nil, g.err
		}
		return g, nil
	}
	g = &grainWorker{key: key, ready: make(chan struct{}), exited: make(chan struct{}), children: 1}
	w.grains[key] = g
	w.mu.Unlock()

	g.err = w.startGrain(ctx, a, g, spec, interp, taskRoot)
	close(g.ready)
	if g.err != nil {
		w.releaseGrain(g)
		return nil, g.err
	}
	return g, nil
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

func (w *Worker) startGrain(ctx context.Context, a *app, g *grainWorker, spec workerapi.InstanceSpec, interp, taskRoot string) error {
	drv, err := runtimes.Get(spec.Spec.Runtime)
	if err != nil {
		return fmt.Errorf("grain worker: %w", err)
	}
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
		return fmt.Errorf("start grain worker: %w", err)
	}
	g.proc = proc
	w.grainProcs.Add(1)
	g.z = grain.New(ours, w.log.With("grain", g.key))
	go w.forwardGrainOutput(g.key, logR)
	go func() {
		st, err := proc.Wait()
		w.log.Debug("grain worker exited", "grain", g.key, "status", describeExit(st, err))
		g.z.Close()
		close(g.exited)
		w.grainProcs.Done()
	}()

	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	info, err := g.z.Ready(rctx)
	if err != nil {
		g.stop()
		if ctx.Err() != nil && !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			// The start was cancelled (its instance stopped), not slow.
			return fmt.Errorf("grain worker start cancelled: %w", context.Cause(ctx))
		}
		if rctx.Err() != nil {
			// The handler's module did not finish importing in time.
			return &workerapi.InitError{Err: workerapi.FunctionError{
				Type: "Runtime.InitTimeout", Message: "the handler module did not finish loading before the start deadline",
			}}
		}
		return fmt.Errorf("grain worker did not become ready: %w", err)
	}
	// An import error is not a grain failure: children report it through
	// /init/error, so it reaches the caller as an ordinary init error.
	_ = info
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
// worker, so a function scaled to zero holds nothing.
func (w *Worker) releaseGrain(g *grainWorker) {
	w.mu.Lock()
	g.children--
	last := g.children <= 0
	if last && w.grains[g.key] == g {
		delete(w.grains, g.key)
	}
	w.mu.Unlock()
	if last {
		g.stop()
	}
}

// stop ends the zygote (closing its socket makes it kill its children and
// exit) and waits until it has been reaped, so nothing outlives the worker.
func (g *grainWorker) stop() {
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
