package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/baton-faas/baton/internal/image"
	"github.com/baton-faas/baton/internal/keyedlock"
	"github.com/baton-faas/baton/internal/sandbox"
	"github.com/baton-faas/baton/internal/workerapi"
)

// app is the sandbox of one application (see appKey) on this host.
type app struct {
	key string
	// ready is closed once the sandbox is created (sb set) or failed
	// (err set); until then its creator owns sb.
	ready chan struct{}
	sb    sandbox.Sandbox
	err   error
	// instances and memoryMB count the app's live instances and their
	// memory (guarded by appTable.mu); the sandbox's limits follow them.
	instances int
	memoryMB  int
	// kept and keptMB count the grain workers kept in the sandbox after
	// their last instance left (keep.go) and the memory they may use
	// (guarded by appTable.mu); they keep the sandbox too.
	kept   int
	keptMB int
	// resizeMu makes each resize read the limits and apply them as one
	// step, so that of concurrent joins and leaves the latest limits are
	// the ones left in force (a stale, larger or smaller, resize landing
	// last would leave a grown sandbox too small or a shrunk one unshrunk).
	// Taken before appTable.mu.
	resizeMu sync.Mutex
	// imageFiles only: the image, and the view (bound at /var/task) to
	// which each version's code layer is attached.
	image     RootImage
	task      *image.View
	codeMu    sync.Mutex
	codes     map[string]bool // digests attached to task (guarded by codeMu)
	attaching keyedlock.Locks // one attach per digest at a time
	// sockDir holds the Runtime API sockets of the sandbox's instances
	// ("": none; runtimesocket.go).
	sockDir string
}

// appTable is the worker's sandboxes, one per app key. Its lock is taken
// alone, or before releaseCount's (see the package comment).
type appTable struct {
	mu     sync.Mutex
	closed bool
	apps   map[string]*app
}

func (t *appTable) init() { t.apps = map[string]*app{} }

func (t *appTable) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
}

func (t *appTable) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.apps)
}

func (t *appTable) all() []*app {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*app, 0, len(t.apps))
	for _, a := range t.apps {
		out = append(out, a)
	}
	return out
}

// join counts one more instance of memoryMB against key's app, creating
// the entry if there is none (created: the caller makes its sandbox).
func (t *appTable) join(key string, memoryMB int) (a *app, created bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, false, errors.New("worker is shutting down")
	}
	if a, ok := t.apps[key]; ok {
		a.instances++
		a.memoryMB += memoryMB
		return a, false, nil
	}
	a = &app{key: key, instances: 1, memoryMB: memoryMB, ready: make(chan struct{}), codes: map[string]bool{}}
	t.apps[key] = a
	return a, true, nil
}

// leave drops one instance of memoryMB from key's app; last reports that
// it was the app's last (the app is then out of the table, and its
// release is counted in releases for the caller to end).
func (t *appTable) leave(key string, memoryMB int, releases *releaseCount) (a *app, last bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a, ok := t.apps[key]
	if !ok {
		return nil, false
	}
	a.instances--
	a.memoryMB -= memoryMB
	return a, t.removeIfUnusedLocked(a, releases)
}

// revive turns a kept grain worker's count in a into an instance's (the
// start that took the grain worker back): the limits do not change.
func (t *appTable) revive(a *app, memoryMB int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a.kept--
	a.keptMB -= memoryMB
	a.instances++
	a.memoryMB += memoryMB
}

// hold counts a grain worker kept in a (with the memory it may use).
func (t *appTable) hold(a *app, memoryMB int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a.kept++
	a.keptMB += memoryMB
}

// unhold drops a kept grain worker's count; last reports that nothing
// else used a (it is then out of the table, its release counted in
// releases for the caller to end).
func (t *appTable) unhold(a *app, memoryMB int, releases *releaseCount) (last bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a.kept--
	a.keptMB -= memoryMB
	return t.removeIfUnusedLocked(a, releases)
}

// removeIfUnusedLocked takes a out of the table once no instance and no
// kept grain worker uses it. The caller holds t.mu.
func (t *appTable) removeIfUnusedLocked(a *app, releases *releaseCount) bool {
	if a.instances > 0 || a.kept > 0 || t.apps[a.key] != a {
		return false
	}
	delete(t.apps, a.key)
	releases.add() // Close no longer sees the app, but must wait for this
	return true
}

// limits are a's sandbox's current limits.
func (t *appTable) limits(a *app) sandbox.Resources {
	t.mu.Lock()
	defer t.mu.Unlock()
	return a.limits()
}

// appKey: one sandbox per application on this host. Functions of an app
// named with --app share it whatever their runtimes when they use the
// host's runtime images (no image named); functions that name different
// images, or want different networks, cannot share a root or a network
// namespace and get one sandbox each. Functions of different apps never
// share one. A function without --app is an app of its own, whose root
// holds its runtime only (see mixedRuntimes): a redeploy to another
// runtime gets a sandbox of its own while the old version's instances
// finish in theirs.
func appKey(spec workerapi.InstanceSpec) string {
	key := spec.App + "|" + spec.Spec.Image + "|" + spec.Spec.Network
	if spec.Spec.Image == "" && !mixedRuntimes(spec) {
		key += "|" + spec.Spec.Runtime
	}
	return key
}

// mixedRuntimes says whether spec's sandbox may hold functions of other
// runtimes: only an app named explicitly groups several functions. Such a
// root holds every host runtime (so it waits for all their base images
// on a fresh host); any other holds its own, so that the first start of
// a Python function does not build Node's image.
func mixedRuntimes(spec workerapi.InstanceSpec) bool {
	return spec.Spec.App != ""
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
// and counts one more instance (with its memory) against it. A start that
// took back a kept grain worker (revived) turns the keep's count into its
// own, without a resize.
func (w *Worker) acquireApp(ctx context.Context, spec workerapi.InstanceSpec, codeDir string, revived *grainWorker) (*app, error) {
	if revived != nil {
		w.apps.revive(revived.app, spec.Spec.MemoryMB)
		w.releaseCode(spec.CodeDigest) // the keep's; the start holds its own
		w.zygotes.revived.Add(1)
		return revived.app, nil
	}
	key := appKey(spec)
	a, created, err := w.apps.join(key, spec.Spec.MemoryMB)
	if err != nil {
		return nil, err
	}
	if !created {
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
	madeWith, err := w.createSandbox(ctx, a, spec, codeDir)
	a.err = err
	close(a.ready)
	if err != nil {
		w.releaseApp(key, spec.Spec.MemoryMB)
		return nil, err
	}
	// Instances that joined or left while the sandbox was being created
	// did not resize it (see resize): catch up.
	if w.apps.limits(a) != madeWith {
		w.resize(ctx, a)
	}
	return a, nil
}

// createSandbox creates a's sandbox and returns the limits it was given.
func (w *Worker) createSandbox(ctx context.Context, a *app, spec workerapi.InstanceSpec, codeDir string) (sandbox.Resources, error) {
	limits := w.apps.limits(a)
	sbSpec := sandbox.Spec{
		ID: newID("sb-"), App: spec.App, Network: spec.Spec.Network,
		MemoryMB: limits.MemoryMB, PIDs: limits.PIDs, CPUShares: limits.CPUShares,
		Mounts: []sandbox.Mount{{Source: w.runtimes.Dir, Target: runtimeMount}},
	}
	if err := w.files.root(ctx, a, spec, codeDir, &sbSpec); err != nil {
		return limits, err
	}
	a.sockDir = w.socketDir(&sbSpec)
	sb, err := w.opts.Sandboxes.Create(ctx, sbSpec)
	if err != nil {
		w.files.cleanup(a)
		w.removeSocketDir(a)
		return limits, fmt.Errorf("create sandbox for app %s: %w", spec.App, err)
	}
	a.sb = sb
	return limits, nil
}

// limits are the sandbox's: every instance's memory, as much again for
// the grain workers they may have been forked from (an upper bound: one
// grain worker serves all instances of a version), and their processes. A
// kept grain worker counts as the one instance its version's return
// makes of it, so that the return leaves the limits as they are. The
// caller holds appTable.mu.
func (a *app) limits() sandbox.Resources {
	memoryMB, instances := a.memoryMB+a.keptMB, a.instances+a.kept
	return sandbox.Resources{
		MemoryMB:  sandboxBaseMB + 2*memoryMB,
		PIDs:      sandboxReservePID + 2*instances*instancePIDs,
		CPUShares: cpuSharesFor(memoryMB),
	}
}

// resizeTimeout bounds one resize: a grow may wait for the write of a
// shrink in progress (one reclaim step), a shrink returns at once.
const resizeTimeout = 30 * time.Second

// resize sets the sandbox's limits to what its instances need. Until the
// sandbox is ready its creator owns a.sb (and catches up on the limits
// once it is created), so a waiter that gives up earlier must not read it.
// A shrink leaves the memory the departed instances charged to the
// sandbox's runtime, which reclaims it off this path (container: see
// memLimiter), so leaving never waits for the kernel's reclaim.
func (w *Worker) resize(ctx context.Context, a *app) {
	select {
	case <-a.ready:
	default:
		return
	}
	if a.sb == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, resizeTimeout)
	defer cancel()
	a.resizeMu.Lock()
	defer a.resizeMu.Unlock()
	limits := w.apps.limits(a)
	if err := a.sb.Resize(ctx, limits); err != nil {
		w.log.Warn("resize sandbox", "app", a.key, "limits", limits, "err", err)
	}
}

// releaseApp drops one instance; the last user (of instances and kept
// grain workers) destroys the sandbox.
func (w *Worker) releaseApp(key string, memoryMB int) {
	a, last := w.apps.leave(key, memoryMB, &w.releases)
	w.afterAppRelease(a, last)
}

// afterAppRelease resizes a sandbox that lost a user, or destroys it
// when that was its last.
func (w *Worker) afterAppRelease(a *app, last bool) {
	switch {
	case a == nil:
	case !last:
		w.resize(context.Background(), a)
	default:
		w.destroyApp(a)
		w.releases.done()
	}
}

func (w *Worker) destroyApp(a *app) {
	if a.sb != nil {
		if err := a.sb.Destroy(context.Background()); err != nil {
			w.log.Warn("destroy sandbox", "app", a.key, "err", err)
		}
	}
	w.files.cleanup(a)
	w.removeSocketDir(a)
}
