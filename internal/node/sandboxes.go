package node

import (
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"

	"github.com/baton-faas/baton/internal/image"
	"github.com/baton-faas/baton/internal/sandbox"
	"github.com/baton-faas/baton/internal/workerapi"
)

// isolated reports whether sandboxes have their own root filesystem.
func (w *Worker) isolated() bool { return w.opts.RootFS != nil }

// appKey: one sandbox per application on this host. Functions of one app
// share it whatever their runtimes when they use the host's runtime images
// (no image named); functions that name different images, or want
// different networks, cannot share a root or a network namespace and get
// one sandbox each. Functions of different apps never share one.
func appKey(spec workerapi.InstanceSpec) string {
	return spec.App + "|" + spec.Spec.Image + "|" + spec.Spec.Network
}

// Limits. Each instance (and each grain worker) is confined to its
// function's memoryMB and instancePIDs processes and threads; the
// sandbox's own limits are the sum over what it may hold, plus room for
// its init, so they bound the app as a whole and never decide which
// instance dies.
const (
	sandboxBaseMB     = 64
	instancePIDs      = 256
	sandboxReservePID = 64
)

// instanceLimits confine one instance of spec, or its grain worker.
func instanceLimits(spec workerapi.InstanceSpec) sandbox.Limits {
	return sandbox.Limits{MemoryMB: spec.Spec.MemoryMB, PIDs: instancePIDs,
		CPUShares: cpuSharesFor(spec.Spec.MemoryMB), CPUMillis: cpuMillisFor(spec.Spec.MemoryMB)}
}

// cpuSharesFor weighs CPU in proportion to memory. The weight is relative
// among siblings only: sandboxes below the runtime's parent group (which
// has the host's default weight), an instance's group among its
// sandbox's. 128 MB is the kernel's default weight, which keeps the
// proportions after cgroup v2's coarser conversion to cpu.weight.
func cpuSharesFor(memoryMB int) int {
	return max(memoryMB*8, 2)
}

// Each instance's CPU is capped in proportion to its memory as Lambda does
// (one CPU at 1769 MB), but never below one CPU: runtimes are mostly
// single-threaded, so the floor leaves cold starts and ordinary
// invocations at full speed, while what an instance forks (background
// processes left between invocations, a fork bomb) burns one CPU at most.
const instanceMinCPUMillis = 1000

// cpuMillisFor is the CPU quota of one instance with memoryMB.
func cpuMillisFor(memoryMB int) int {
	return max(memoryMB*1000/1769, instanceMinCPUMillis)
}

// acquireApp returns the sandbox for spec's app, creating it if needed,
// and counts one more instance (with its memory) against it.
func (w *Worker) acquireApp(ctx context.Context, spec workerapi.InstanceSpec, codeDir string) (*app, error) {
	key := appKey(spec)
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil, errors.New("worker is shutting down")
	}
	a, ok := w.apps[key]
	if ok {
		a.instances++
		a.memoryMB += spec.Spec.MemoryMB
		w.mu.Unlock()
		select {
		case <-a.ready:
		case <-ctx.Done():
			w.releaseApp(key, spec.Spec.MemoryMB)
			return nil, ctx.Err()
		}
		if a.err != nil {
			w.releaseApp(key, spec.Spec.MemoryMB)
			return nil, a.err
		}
		w.resize(ctx, a)
		return a, nil
	}
	a = &app{key: key, instances: 1, memoryMB: spec.Spec.MemoryMB, ready: make(chan struct{}),
		codes: map[string]bool{}}
	w.apps[key] = a
	w.mu.Unlock()

	created, err := w.createSandbox(ctx, a, spec, codeDir)
	a.err = err
	close(a.ready)
	if a.err != nil {
		w.releaseApp(key, spec.Spec.MemoryMB)
		return nil, a.err
	}
	// Instances that joined or left while the sandbox was being created
	// did not resize it (see resize): catch up.
	w.mu.Lock()
	now := a.limits()
	w.mu.Unlock()
	if now != created {
		w.resize(ctx, a)
	}
	return a, nil
}

// createSandbox creates a's sandbox and returns the limits it was given.
func (w *Worker) createSandbox(ctx context.Context, a *app, spec workerapi.InstanceSpec, codeDir string) (sandbox.Resources, error) {
	w.mu.Lock()
	limits := a.limits()
	w.mu.Unlock()
	sbSpec := sandbox.Spec{
		ID: newID("sb-"), App: spec.App, Network: spec.Spec.Network,
		MemoryMB: limits.MemoryMB, PIDs: limits.PIDs, CPUShares: limits.CPUShares,
		Mounts: []sandbox.Mount{{Source: w.runtimes.Dir, Target: runtimeMount}},
	}
	if !w.isolated() {
		// Without isolation the code cache itself is the task root.
		sbSpec.Mounts = append(sbSpec.Mounts, sandbox.Mount{Source: filepath.Dir(codeDir), Target: taskMount})
	} else {
		img, err := w.opts.RootFS.RootFS(ctx, spec.Spec.Runtime, spec.Spec.Image)
		if err != nil {
			return limits, fmt.Errorf("root filesystem for app %s: %w", spec.App, err)
		}
		a.image = img
		// The versions' code layers are attached to the view while the
		// sandbox runs; its /var/task is a slave of the view, so they
		// appear there without files linked or copied (see taskRoot).
		if a.task, err = w.opts.Layers.NewView(sbSpec.ID); err != nil {
			img.Release()
			return limits, fmt.Errorf("sandbox task directory: %w", err)
		}
		sbSpec.RootLowerDirs = img.LowerDirs
		sbSpec.Mounts = append(sbSpec.Mounts, sandbox.Mount{Source: a.task.Path(), Target: taskMount, Propagate: true})
	}
	sb, err := w.opts.Sandboxes.Create(ctx, sbSpec)
	if err != nil {
		w.cleanupFiles(a)
		return limits, fmt.Errorf("create sandbox for app %s: %w", spec.App, err)
	}
	a.sb = sb
	return limits, nil
}

// limits are the sandbox's: every instance's memory, as much again for
// the grain workers they may have been forked from (an upper bound: one
// grain worker serves all instances of a version), and their processes.
func (a *app) limits() sandbox.Resources {
	return sandbox.Resources{
		MemoryMB:  sandboxBaseMB + 2*a.memoryMB,
		PIDs:      sandboxReservePID + 2*a.instances*instancePIDs,
		CPUShares: cpuSharesFor(a.memoryMB),
	}
}

// cleanupFiles releases what an isolated sandbox's root and /var/task were
// made of; the sandbox is gone.
func (w *Worker) cleanupFiles(a *app) {
	if a.task != nil {
		if err := a.task.Close(); err != nil {
			w.log.Error("remove sandbox task directory", "app", a.key, "err", err)
		}
		a.codeMu.Lock()
		codes := a.codes
		a.codes = nil // an attach finishing now releases its own hold
		a.codeMu.Unlock()
		for digest := range codes {
			w.releaseCode(digest)
		}
	}
	if a.image.Release != nil {
		a.image.Release()
	}
}

// resize sets the sandbox's limits to what its instances need. Until the
// sandbox is ready its creator owns a.sb (and catches up on the limits
// once it is created), so a waiter that gives up earlier must not read it.
func (w *Worker) resize(ctx context.Context, a *app) {
	select {
	case <-a.ready:
	default:
		return
	}
	w.mu.Lock()
	limits := a.limits()
	w.mu.Unlock()
	if a.sb == nil {
		return
	}
	if err := a.sb.Resize(ctx, limits); err != nil {
		w.log.Debug("resize sandbox", "app", a.key, "limits", limits, "err", err)
	}
}

// releaseApp drops one instance; the last one destroys the sandbox.
func (w *Worker) releaseApp(key string, memoryMB int) {
	w.mu.Lock()
	a, ok := w.apps[key]
	if !ok {
		w.mu.Unlock()
		return
	}
	a.instances--
	a.memoryMB -= memoryMB
	if a.instances > 0 {
		w.mu.Unlock()
		w.resize(context.Background(), a)
		return
	}
	delete(w.apps, key)
	w.releases++ // Close no longer sees the app, but must wait for this
	w.mu.Unlock()
	w.destroyApp(a)
	w.endRelease()
}

func (w *Worker) destroyApp(a *app) {
	if a.sb != nil {
		if err := a.sb.Destroy(context.Background()); err != nil {
			w.log.Warn("destroy sandbox", "app", a.key, "err", err)
		}
	}
	w.cleanupFiles(a)
}

// taskRoot makes the version's code visible in the sandbox and returns its
// path there and a host path of the same files. An isolated sandbox sees
// only the code of its own app: the version's code layer, mounted once per
// host, is attached to the sandbox's task view and so appears read-only at
// /var/task/<hex> in the running sandbox. The sandbox holds the code until
// it is destroyed.
func (w *Worker) taskRoot(ctx context.Context, a *app, digest, codeDir string) (inSandbox, onHost string, err error) {
	hexDigest, err := codeHex(digest)
	if err != nil {
		return "", "", err
	}
	if !w.isolated() {
		return filepath.Join(a.sb.Path(taskMount), hexDigest), codeDir, nil
	}
	// Per digest: attaching may fetch and build the layer, which other
	// versions of the app need not wait for.
	unlock := a.attaching.Lock(digest)
	defer unlock()
	a.codeMu.Lock()
	attached := a.codes[digest]
	a.codeMu.Unlock()
	if !attached {
		if err := w.attachCode(ctx, a, digest, hexDigest); err != nil {
			return "", "", fmt.Errorf("place code in sandbox: %w", err)
		}
		w.holdCode(digest)
		a.codeMu.Lock()
		closed := a.codes == nil
		if !closed {
			a.codes[digest] = true
		}
		a.codeMu.Unlock()
		if closed {
			w.releaseCode(digest)
			return "", "", errors.New("place code in sandbox: the sandbox is gone")
		}
	}
	return path.Join(taskMount, hexDigest), filepath.Join(a.task.Path(), hexDigest), nil
}

// attachCode attaches the code layer to the app's view. A layer file that
// fails its digest check is never mounted: it is deleted and built again
// from the code archive, which is the source of truth.
func (w *Worker) attachCode(ctx context.Context, a *app, digest, hexDigest string) error {
	for attempt := 0; ; attempt++ {
		diffID, err := w.codeLayer(ctx, digest)
		if err != nil {
			return err
		}
		_, err = a.task.Attach(ctx, hexDigest, diffID)
		if err == nil || !errors.Is(err, image.ErrCorrupt) || attempt > 0 {
			return err
		}
		w.log.Warn("code layer failed its digest check; building it again", "digest", digest, "err", err)
		unlock := w.codeLocks.Lock(digest)
		err = w.opts.Layers.DeleteRef(ctx, codeRefPrefix+hexDigest)
		unlock()
		if err != nil {
			return err
		}
	}
}
