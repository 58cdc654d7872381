//go:build linux && cgo

package container

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/cgroups"
	_ "github.com/opencontainers/cgroups/devices" // device rules for the cgroup managers
	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/sandbox"
	"github.com/baton-faas/baton/internal/sandbox/container/pid1"
)

// Runtime creates container sandboxes.
type Runtime struct {
	opts      Options
	log       *slog.Logger
	lcRoot    string // libcontainer's state root
	sbRoot    string // per-sandbox directories
	emptyFile string
	launcher  *launcher
	cgroupNS  bool
	v2        bool
	swap      bool     // the memory controller accounts swap (memsw / memory.swap.max)
	nofile    uint64   // RLIMIT_NOFILE of sandbox processes
	lock      *os.File // flock on the state directory, held for the process's life

	reclaim reclaimCounters // summed over every sandbox

	mu   sync.Mutex
	live map[string]*Sandbox
}

// ReclaimStats are what the runtime's sandboxes reclaimed so far (see
// memLimiter): for a node to report, and for comparisons with
// Options.NoMemoryReclaim.
func (r *Runtime) ReclaimStats() ReclaimStats { return r.reclaim.stats() }

// memFiles names the memory control files of this host's cgroups.
func (r *Runtime) memFiles() memFiles { return memFiles{v2: r.v2, swap: r.swap} }

// memoryDir is the directory of cg's memory controller.
func (r *Runtime) memoryDir(cg cgroups.Manager) string {
	if r.v2 {
		return cg.Path("")
	}
	return cg.Path("memory")
}

// newMemLimiter starts the memory limiter of sandbox id, whose cgroup cg
// was created with memoryMB (0: unlimited).
func (r *Runtime) newMemLimiter(cg cgroups.Manager, id string, memoryMB int) *memLimiter {
	limit := int64(unlimited)
	if memoryMB > 0 {
		limit = int64(memoryMB) << 20
	}
	return newMemLimiter(r.memoryDir(cg), r.memFiles(), limit, !r.opts.NoMemoryReclaim, r.log, id, &r.reclaim)
}

// drainGroup reclaims what an instance's killed group still holds before
// it is removed (unless reclaim is off), counting it for sb.
func (r *Runtime) drainGroup(sb *Sandbox, cg cgroups.Manager) {
	if r.opts.NoMemoryReclaim {
		return
	}
	sb.mu.Lock()
	closed := sb.closed // a sandbox being destroyed goes whole
	sb.mu.Unlock()
	if closed {
		return
	}
	start := time.Now()
	n, err := r.memFiles().drain(r.memoryDir(cg))
	if err != nil {
		r.log.Debug("memory reclaim: drain an instance's group", "sandbox", sb.id, "err", err)
		return
	}
	if n == 0 {
		return
	}
	counters := []*reclaimCounters{&r.reclaim}
	if sb.mem != nil {
		counters = append(counters, &sb.mem.own)
	}
	for _, c := range counters {
		c.drains.Add(1)
		c.drained.Add(n)
	}
	r.log.Info("memory reclaim: drained a departed instance's group", "sandbox", sb.id, "reclaimed-bytes", n, "took", time.Since(start))
}

// New checks that this host and binary can run container sandboxes,
// removes what a previous run left in opts.StateDir and proves the whole
// chain with a throw-away sandbox. Its error wraps ErrUnavailable when
// containers cannot work here, with every reason found.
func New(opts Options) (*Runtime, error) {
	if opts.StateDir == "" {
		return nil, errors.New("container runtime: StateDir is required")
	}
	if opts.CgroupParent == "" {
		opts.CgroupParent = defaultCgroupParent
	}
	if !path.IsAbs(opts.CgroupParent) {
		opts.CgroupParent = "/" + opts.CgroupParent
	}
	if opts.UID == 0 {
		opts.UID = defaultUID
	}
	if opts.GID == 0 {
		opts.GID = defaultUID
	}
	if opts.UID < 0 || opts.GID < 0 {
		return nil, errors.New("container runtime: UID and GID must not be negative")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	stateDir, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, err
	}
	opts.StateDir = stateDir
	r := &Runtime{
		opts:   opts,
		log:    log,
		lcRoot: filepath.Join(stateDir, "libcontainer"),
		sbRoot: filepath.Join(stateDir, "sandboxes"),
		live:   map[string]*Sandbox{},
	}
	if err := r.check(); err != nil {
		return nil, err
	}
	for _, dir := range []string{r.lcRoot, r.sbRoot} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("%w: state directory: %v", ErrUnavailable, err)
		}
	}
	// One runtime per state directory: New removes every sandbox it finds
	// there, which must never be another live server's.
	if r.lock, err = os.OpenFile(filepath.Join(stateDir, "lock"), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return nil, fmt.Errorf("container runtime: %w", err)
	}
	if err := unix.Flock(int(r.lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		r.lock.Close()
		return nil, fmt.Errorf("container runtime: state directory %s is in use by another process: %w", stateDir, err)
	}
	r.emptyFile = filepath.Join(stateDir, "empty")
	if err := os.WriteFile(r.emptyFile, nil, 0o444); err != nil {
		r.lock.Close()
		return nil, fmt.Errorf("%w: state directory: %v", ErrUnavailable, err)
	}
	r.cleanLeftovers()
	if err := r.setupParent(); err != nil {
		r.lock.Close()
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if err := r.findReaper(); err != nil {
		r.lock.Close()
		return nil, fmt.Errorf("container runtime: %w", err)
	}
	err = r.selfTest()
	if err != nil && r.launcher.helper != nil {
		// The sandbox's own programs can still come from this binary.
		log.Warn("container runtime: a test sandbox failed with baton-reaper; sandboxes use this program as their reaper",
			"reaper", r.launcher.helperPath, "err", err)
		r.launcher.dropHelper()
		err = r.selfTest()
	}
	if err != nil {
		r.lock.Close()
		return nil, fmt.Errorf("%w: a test sandbox failed: %v", ErrUnavailable, err)
	}
	r.warnSlowExec()
	return r, nil
}

// findReaper loads baton-reaper from Options.ReaperPath, or from next to
// this program's executable where it is optional.
func (r *Runtime) findReaper() error {
	path, explicit := r.opts.ReaperPath, r.opts.ReaperPath != ""
	if !explicit {
		path = filepath.Join(filepath.Dir(r.launcher.exe), ReaperName)
		if _, err := os.Stat(path); err != nil {
			r.log.Info("container runtime: no baton-reaper next to this program; sandboxes use this program as their reaper, "+
				"which makes each sandbox start slower (build it with go build ./cmd/baton-reaper)", "looked-for", path)
			return nil
		}
	}
	if err := r.launcher.useHelper(path); err != nil {
		if explicit {
			return fmt.Errorf("reaper %s: %w", path, err)
		}
		r.log.Warn("container runtime: baton-reaper is unusable; sandboxes use this program as their reaper", "reaper", path, "err", err)
	}
	return nil
}

// warnSlowExec warns where libcontainer cannot give its re-executed init a
// zero-copy sealed view of this program (an overlay whose lower layers are
// this program's directory and the container's state directory, which
// must not contain one another): it then copies the whole executable into
// memory for every process started in a sandbox.
func (r *Runtime) warnSlowExec() {
	exeDir := filepath.Dir(r.launcher.exe)
	if within(r.lcRoot, exeDir) || within(exeDir, r.lcRoot) {
		r.log.Warn("container runtime: the state directory and this program's directory contain one another; "+
			"every process started in a sandbox copies the whole executable first (move one of them)",
			"state", r.lcRoot, "executable", r.launcher.exe)
	}
}

// within tells whether path is dir or below it.
func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// check lists every reason this host or binary cannot run containers.
func (r *Runtime) check() error {
	var reasons []string
	add := func(format string, args ...any) { reasons = append(reasons, fmt.Sprintf(format, args...)) }

	if !reexecCalled.Load() {
		add("the program does not call container.Reexec at the start of main, which libcontainer's re-executed init needs")
	}
	if os.Geteuid() != 0 {
		add("not running as root (euid %d)", os.Geteuid())
	}
	for _, ns := range []string{"mnt", "pid", "ipc", "uts", "net"} {
		if _, err := os.Stat("/proc/self/ns/" + ns); err != nil {
			add("no %s namespaces: %v", ns, err)
		}
	}
	if _, err := os.Stat("/proc/self/ns/cgroup"); err == nil {
		r.cgroupNS = true
	}
	r.v2 = cgroups.IsCgroup2UnifiedMode()
	if r.v2 {
		ctrls, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
		if err != nil {
			add("cgroup v2: %v", err)
		}
		have := strings.Fields(string(ctrls))
		for _, c := range []string{"memory", "pids", "cpu"} {
			if !contains(have, c) {
				add("cgroup v2: the %s controller is not available", c)
			}
		}
		// The library ignores memory.swap.max where swap accounting is off.
		r.swap = true
	} else {
		for _, c := range []string{"memory", "pids", "cpu", "devices", "freezer", "cpuset"} {
			if _, err := cgroups.FindCgroupMountpoint("", c); err != nil {
				add("cgroup v1: the %s hierarchy is not mounted", c)
			}
		}
		if mnt, err := cgroups.FindCgroupMountpoint("", "memory"); err == nil {
			_, err := os.Stat(filepath.Join(mnt, "memory.memsw.limit_in_bytes"))
			r.swap = err == nil
		}
	}
	// Processes may open up to 65536 files, or as many as this process's
	// hard limit if that is lower (raising it needs CAP_SYS_RESOURCE).
	r.nofile = 65536
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil && lim.Max < r.nofile {
		r.nofile = lim.Max
	}
	if fss, err := os.ReadFile("/proc/filesystems"); err != nil || !bytes.Contains(fss, []byte("\toverlay\n")) {
		add("the kernel has no overlay filesystem")
	}
	if err := pid1.SeccompAvailable(); err != nil {
		add("%v", err)
	}
	l, err := newLauncher()
	if err != nil {
		add("%v", err)
	}
	r.launcher = l
	if len(reasons) > 0 {
		return fmt.Errorf("%w: %s", ErrUnavailable, strings.Join(reasons, "; "))
	}
	return nil
}

// Isolation implements sandbox.Runtime.
func (r *Runtime) Isolation() string {
	cg := "cgroup v1"
	if r.v2 {
		cg = "cgroup v2"
	}
	return fmt.Sprintf("container (libcontainer: mount/PID/IPC/UTS/network namespaces, %s limits, "+
		"seccomp, no capabilities, read-only root, uid %d)", cg, r.opts.UID)
}

// Capabilities implements sandbox.Runtime: programs run, every limit is
// enforced by cgroups, and isolated sandboxes have a network namespace.
func (*Runtime) Capabilities() sandbox.Capabilities {
	return sandbox.Capabilities{Programs: true, Limits: true, Network: true}
}

// selfTest creates a sandbox with an empty root and runs the sandbox's own
// program (baton-reaper or this binary) in it to check what it sees: namespaces, cgroups, the overlay, the reaper and
// the seccomp filter all work, or containers are not usable here.
func (r *Runtime) selfTest() error {
	lower := filepath.Join(r.opts.StateDir, "selftest-root")
	if err := os.MkdirAll(lower, 0o755); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sb, err := r.Create(ctx, sandbox.Spec{ID: "selftest-" + randomID(), RootLowerDirs: []string{lower}, MemoryMB: 256})
	if err != nil {
		return err
	}
	defer sb.Destroy(context.Background())
	out, err := os.CreateTemp(r.opts.StateDir, "selftest-out-")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	args, files := r.launcher.process(selfTestArg)
	p, err := sb.Start(ctx, sandbox.ProcessSpec{Args: args, ExtraFiles: files, Stdout: out, Stderr: out})
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	st, err := p.Wait()
	if err != nil {
		return err
	}
	msg, _ := os.ReadFile(out.Name())
	if st.Code != 0 || !bytes.Equal(bytes.TrimSpace(msg), []byte(selfTestOK)) {
		return fmt.Errorf("the test process found: %s (exit status %d, signal %d)",
			strings.TrimSpace(string(msg)), st.Code, st.Signal)
	}
	return sb.Destroy(context.Background())
}

// cleanLeftovers removes the sandboxes a previous run of the server left
// behind (it crashed or was killed): their processes, cgroups, mounts and
// directories.
func (r *Runtime) cleanLeftovers() {
	ids := map[string]bool{}
	for _, root := range []string{r.sbRoot, r.lcRoot} {
		entries, _ := os.ReadDir(root)
		for _, e := range entries {
			ids[e.Name()] = true
		}
	}
	for id := range ids {
		if err := r.removeSandboxState(id); err != nil {
			r.log.Warn("container runtime: leftover sandbox not fully removed", "id", id, "err", err)
		} else {
			r.log.Info("container runtime: removed a sandbox left by a previous run", "id", id)
		}
	}
}

// removeSandboxState kills and removes everything recorded for sandbox id.
func (r *Runtime) removeSandboxState(id string) error {
	var errs []error
	if c, err := libcontainer.Load(r.lcRoot, id); err == nil {
		_ = c.Signal(unix.SIGKILL)
		deadline := time.Now().Add(10 * time.Second)
		for {
			st, err := c.Status()
			if err != nil || st == libcontainer.Stopped || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err := c.Destroy(); err != nil {
			errs = append(errs, err)
		}
	}
	dir := filepath.Join(r.sbRoot, id)
	// The cgroup may exist without libcontainer's state (a crash while
	// creating); it is named after the sandbox.
	if cg, err := readMeta(dir); err == nil && cg != "" {
		if err := destroyCgroup(cg); err != nil {
			errs = append(errs, err)
		}
	}
	if err := unmountAll(filepath.Join(dir, "rootfs")); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(filepath.Join(r.lcRoot, id)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (r *Runtime) register(s *Sandbox) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.live[s.id]; ok {
		return fmt.Errorf("sandbox %s already exists", s.id)
	}
	r.live[s.id] = s
	return nil
}

func (r *Runtime) forget(s *Sandbox) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.live[s.id] == s {
		delete(r.live, s.id)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

var _ sandbox.Runtime = (*Runtime)(nil)
