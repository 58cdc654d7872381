// Package node is Baton's host agent: it creates sandboxes, grain workers
// and function instances, gives every instance its own AWS Lambda Runtime
// API endpoint, and runs invocations on them.
//
// The Worker is assembled from small parts, each with its own lock:
//
//   - instanceTable (instances.go): the instances from StartInstance until
//     they are gone, and how failed starts ended;
//   - appTable (sandboxes.go): one sandbox per application, counted by the
//     instances that use it;
//   - grainTable (grains.go): the grain workers (zygotes) instances fork
//     from, counted by their children;
//   - codeRefs (code.go): who uses which code, and which code is being
//     built; builds of one digest are shared (singleflight);
//   - sandboxFiles (files.go): how this host's sandboxes see files (the
//     host's own, or images and code layers);
//   - interpreters (drivers.go): each runtime's interpreter on this host,
//     looked up at its first start;
//   - workingset.Store (workingset.go): the cold-start working sets
//     recorded on this host, prefetched by later cold starts.
//
// Lock order. instanceTable.mu, appTable.mu, grainTable.mu and codeRefs.mu
// are never held together: each guards its own table and is released
// before anything else is locked. Leaves, which may be taken while one of
// them is held and lock nothing themselves: the event log's lock (taken
// under instanceTable.mu, so that an instance's state and its event change
// together), releaseCount.mu (taken under instanceTable.mu and appTable.mu,
// so that Close never misses a release that is no longer in a table),
// codeBudget.mu, app.codeMu and the working-set store's lock. The
// per-digest locks (Worker.codeLocks, app.attaching) come before
// codeRefs.mu and app.codeMu; app.attaching comes before
// Worker.codeLocks. app.resizeMu (one resize of a sandbox at a time, so
// the latest limits are the ones left) comes before appTable.mu and is held
// across the sandbox's Resize, which never waits for the kernel's reclaim.
// No other mutex is held across sandbox creation, a process
// start, a wait for a process, or network I/O; app.attaching (a keyed lock
// that lets one attach per digest run at a time) is held while that
// digest's code is fetched and built, on purpose. Working sets take no
// lock of these: a start's prefetch and recording touch only the store.
package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/datalayer"
	"github.com/baton-faas/baton/internal/image"
	"github.com/baton-faas/baton/internal/image/baseimage"
	"github.com/baton-faas/baton/internal/keyedlock"
	"github.com/baton-faas/baton/internal/runtimes"
	"github.com/baton-faas/baton/internal/sandbox"
	"github.com/baton-faas/baton/internal/transfer"
	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/eventlog"
	"github.com/baton-faas/baton/internal/workingset"
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
	// Data is the host's data layers, which instances reach through
	// their Runtime API endpoint, each bound to its application; nil
	// leaves them out (those routes answer 501).
	Data *datalayer.Layer
	// Transfer keeps large results for direct transfers and resolves the
	// references invocations carry (transfer.go); nil disables them.
	Transfer *transfer.Exchange
	// Invoker runs the invocations functions ask for through Baton
	// (invoke.go); nil answers that route with 501.
	Invoker Invoker
	// Prefetch records each function version's cold-start working set
	// on its first cold start here and prefetches it on later ones
	// (functions can opt out with their spec's prefetch: false).
	Prefetch bool
	// ZygoteKeep is how long a version's grain worker (zygote) and its
	// sandbox are kept, parked, after its last instance was stopped, so
	// that its next cold start forks instead of importing again (see
	// keep.go); 0 keeps nothing.
	ZygoteKeep time.Duration
	// NoRuntimeSocket gives instances the Runtime API over HTTP only;
	// by default Baton's own runtime clients run the invocation loop
	// over a unix socket (runtimesocket.go).
	NoRuntimeSocket bool
}

// RootFSProvider mounts the image a sandbox's root is made of.
type RootFSProvider interface {
	// RootFS mounts the named image or, when image is empty, a root of
	// the host's runtime base images: runtime's own (first and required)
	// and what every root offers besides (a shell); with mixed, every
	// runtime's base image that this host can build, so that the
	// functions of an app share one sandbox whatever their runtimes.
	// Only the images a root holds are built for it. Release unmounts it
	// when the sandbox is gone.
	RootFS(ctx context.Context, runtime, image string, mixed bool) (RootImage, error)
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

// Worker implements workerapi.Worker on the local host. See the package
// comment for its parts and their lock order.
type Worker struct {
	opts     Options
	log      *slog.Logger
	runtimes runtimes.Paths
	caps     sandbox.Capabilities
	files    sandboxFiles
	interps  *interpreters
	budget   *codeBudget // see codebudget.go
	events   *eventlog.Log
	capacity workerapi.Resources
	// workingSets are the recorded cold-start working sets (nil: off;
	// see workingset.go).
	workingSets *workingset.Store
	// sockRoot holds the sandboxes' Runtime API socket directories ("":
	// instances get HTTP only); sockSeq names the directories and sockets
	// in it (runtimesocket.go).
	sockRoot string
	sockSeq  atomic.Uint64

	// ctx is the worker's lifetime: the parent of every start, of the
	// grain workers' starts and of code builds; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	// starts counts the start goroutines; Close waits for them.
	starts sync.WaitGroup
	// background counts the other goroutines the worker owns: grain
	// worker starts and reapers (a zygote being stopped in the
	// background included), code builds, the janitor. Close waits for
	// them.
	background sync.WaitGroup

	instances instanceTable
	apps      appTable
	busy      busy // starts under way, for background preparation (prepare.go)
	grains    grainTable
	// zygotes count kept grain workers; fnVersions is what
	// FunctionChanged told (keep.go).
	zygotes    zygoteCounters
	fnVersions versions
	code       codeRefs
	releases   releaseCount
	// codeLocks orders checking for a digest's code against removing it.
	codeLocks keyedlock.Locks
	// builds shares one fetch and build of a digest's code among
	// concurrent starts.
	builds singleflight.Group
}

// New creates a worker; it installs Baton's runtime clients under DataDir.
// Runtimes' interpreters are looked up at the first start of each runtime,
// so a host that lacks one still runs the others.
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
	if opts.Sandboxes == nil {
		return nil, errors.New("worker: no sandbox runtime (Options.Sandboxes)")
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
		caps:     opts.Sandboxes.Capabilities(),
		interps:  newInterpreters(),
		events:   eventlog.New(opts.ID, opts.EventBuffer),
		capacity: hostCapacity(opts.Capacity),
	}
	if w.workingSets, err = openWorkingSets(opts); err != nil {
		return nil, err
	}
	w.instances.init()
	w.apps.init()
	w.grains.init()
	w.code.init()
	if opts.RootFS != nil {
		w.files = imageFiles{w}
	} else {
		w.files = hostFiles{w}
	}
	// Unpacked code is a cache: nothing of a previous run is in use.
	if err := os.RemoveAll(filepath.Join(opts.DataDir, "code")); err != nil {
		return nil, fmt.Errorf("clear code cache: %w", err)
	}
	if err := w.files.adopt(); err != nil {
		return nil, err
	}
	if err := w.initSockets(); err != nil {
		return nil, err
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.background.Add(1)
	go func() {
		defer w.background.Done()
		w.janitor()
	}()
	if opts.ZygoteKeep > 0 {
		w.background.Add(1)
		go func() {
			defer w.background.Done()
			w.keeper()
		}()
	}
	if opts.Transfer != nil {
		w.background.Add(1)
		go func() {
			defer w.background.Done()
			w.sweepTransfers()
		}()
	}
	return w, nil
}

// Info implements workerapi.Worker.
func (w *Worker) Info(ctx context.Context) (workerapi.Info, error) {
	if err := ctx.Err(); err != nil {
		return workerapi.Info{}, fmt.Errorf("worker info: %w", err)
	}
	info := workerapi.Info{ID: w.opts.ID, Isolation: w.opts.Sandboxes.Isolation(), Capacity: w.capacity}
	info.Reserved, info.Instances = w.instances.reserved()
	info.Sandboxes = w.apps.count()
	info.WorkingSets = w.workingSetInfo()
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

func newID(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// Close stops every instance, grain worker and sandbox.
func (w *Worker) Close(ctx context.Context) error {
	w.instances.close()
	w.apps.close()
	// Starts under way are cancelled first: each releases what it took.
	// So are grain worker starts and code builds.
	w.cancel()
	if err := waitGroup(ctx, &w.starts); err != nil {
		return fmt.Errorf("instance starts still running at shutdown: %w", err)
	}
	defer w.events.Close()
	ins := w.instances.stopAll()
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
	for _, g := range w.grains.all() {
		// A parked (kept) one is thawed first: a frozen task would not
		// die.
		if err := g.unpark(); err != nil {
			w.log.Warn("unpark a kept zygote to stop it", "grain", g.key, "err", err)
		}
		g.stop()
	}
	for _, a := range w.apps.all() {
		<-a.ready
		if a.sb != nil {
			_ = a.sb.Destroy(ctx)
		}
		w.files.cleanup(a)
		w.removeSocketDir(a)
	}
	if err := waitGroup(ctx, &w.background); err != nil {
		return fmt.Errorf("grain workers still running at shutdown: %w", err)
	}
	if err := w.releases.wait(ctx); err != nil {
		return fmt.Errorf("sandboxes still being released at shutdown: %w", err)
	}
	return nil
}

// waitGroup waits for wg, or until ctx ends.
func waitGroup(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

var _ workerapi.Worker = (*Worker)(nil)
