//go:build linux && cgo

package container

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/sandbox"
	"github.com/baton-faas/baton/internal/sandbox/container/pid1"
)

// Sandbox is one application's container.
type Sandbox struct {
	r       *Runtime
	id      string
	dir     string // host directory with rootfs, upper, work
	rootfs  string
	cgPath  string
	network string
	c       *libcontainer.Container
	init    *libcontainer.Process
	netns   *os.File // the container's network namespace
	cg      cgroups.Manager
	sp      *spawner    // nil: processes start through libcontainer
	spare   *spares     // groups made ahead (see groupFor)
	mem     *memLimiter // set once the container runs
	seq     atomic.Uint64

	mu         sync.Mutex
	closed     bool
	destroyed  chan struct{} // closed when Destroy has finished
	destroyErr error
	starting   sync.WaitGroup
	live       map[*process]struct{} // started and not yet waited for
}

// validID accepts what libcontainer accepts as a container id, at most
// 128 characters, not starting with punctuation. (No regexp: package
// initialisation runs in every re-executed container init.)
func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i, c := range id {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && strings.ContainsRune("_.+-", c):
		default:
			return false
		}
	}
	return true
}

// Create implements sandbox.Runtime.
func (r *Runtime) Create(ctx context.Context, spec sandbox.Spec) (_ sandbox.Sandbox, retErr error) {
	if !validID(spec.ID) {
		return nil, fmt.Errorf("container sandbox: invalid id %q", spec.ID)
	}
	switch spec.Network {
	case "", sandbox.NetworkIsolated, sandbox.NetworkHost:
	default:
		return nil, fmt.Errorf("container sandbox: unknown network mode %q", spec.Network)
	}
	if len(spec.RootLowerDirs) == 0 {
		return nil, errors.New("container sandbox: no root filesystem layers (Spec.RootLowerDirs)")
	}
	for _, d := range spec.RootLowerDirs {
		if !filepath.IsAbs(d) || strings.ContainsAny(d, ",") {
			return nil, fmt.Errorf("container sandbox: bad layer path %q", d)
		}
	}
	for _, m := range spec.Mounts {
		if !filepath.IsAbs(m.Source) || !filepath.IsAbs(m.Target) || filepath.Clean(m.Target) == "/" {
			return nil, fmt.Errorf("container sandbox: bad mount %s -> %s", m.Source, m.Target)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := &Sandbox{
		r:         r,
		id:        spec.ID,
		dir:       filepath.Join(r.sbRoot, spec.ID),
		cgPath:    cgroupPath(r.opts.CgroupParent, spec.ID),
		network:   spec.Network,
		destroyed: make(chan struct{}),
		live:      map[*process]struct{}{},
		spare:     newSpares(),
	}
	if s.network == "" {
		s.network = sandbox.NetworkIsolated
	}
	s.rootfs = filepath.Join(s.dir, "rootfs")
	if err := r.register(s); err != nil {
		return nil, err
	}
	if err := os.Mkdir(s.dir, 0o700); err != nil {
		r.forget(s)
		return nil, fmt.Errorf("container sandbox: %w", err)
	}
	go s.fill() // stopped by teardown
	defer func() {
		if retErr != nil {
			s.teardown()
			r.forget(s)
		}
	}()
	if err := writeMeta(s.dir, s.cgPath); err != nil {
		return nil, err
	}
	if err := mountOverlay(s.dir, spec.RootLowerDirs); err != nil {
		return nil, err
	}
	c, err := libcontainer.Create(r.lcRoot, spec.ID, r.config(spec, s.rootfs))
	if err != nil {
		return nil, fmt.Errorf("create container: %w", err)
	}
	s.c = c
	logR, logW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	args, files := r.launcher.process(reaperArg)
	var ctl *os.File
	if r.spawns() {
		// baton-reaper starts the sandbox's processes (see spawner).
		if s.sp, ctl, err = newSpawnerPair(); err != nil {
			logR.Close()
			logW.Close()
			return nil, err
		}
		go s.sp.run()
		args = append(args, pid1.SpawnArg)
		files = append(files, ctl) // pid1.ControlFd
	}
	s.init = &libcontainer.Process{
		Args:       args,
		Env:        []string{"GOMAXPROCS=1", "GOGC=50"},
		Stdout:     logW,
		Stderr:     logW,
		ExtraFiles: files,
		Init:       true,
	}
	err = c.Run(s.init)
	logW.Close()
	if ctl != nil {
		ctl.Close()
	}
	if err != nil {
		logR.Close()
		return nil, fmt.Errorf("start container: %w", err)
	}
	go s.forwardReaperOutput(logR)
	pid, err := s.init.Pid()
	if err != nil {
		return nil, err
	}
	// Held open from now on: the namespace outlives any pid reuse.
	if s.netns, err = os.Open(fmt.Sprintf("/proc/%d/ns/net", pid)); err != nil {
		return nil, fmt.Errorf("open the container's network namespace: %w", err)
	}
	if s.cg, err = newCgroupManager(c); err != nil {
		return nil, err
	}
	s.mem = r.newMemLimiter(s.cg, spec.ID, spec.MemoryMB)
	if r.v2 {
		// cgroup v2 lets no process live in a cgroup whose children have
		// controllers: the reaper moves to a leaf of its own, so that
		// every process started later can have its own limited group.
		if err := moveToLeaf(s.cg.Path(""), "init", pid); err != nil {
			return nil, fmt.Errorf("move the sandbox's init to a leaf cgroup: %w", err)
		}
	}
	return s, nil
}

// forwardReaperOutput logs what the reaper says (only errors).
func (s *Sandbox) forwardReaperOutput(r *os.File) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		s.r.log.Warn("sandbox reaper", "sandbox", s.id, "output", sc.Text())
	}
}

// ID implements sandbox.Sandbox.
func (s *Sandbox) ID() string { return s.id }

// Path implements sandbox.Sandbox: mounts appear at their targets.
func (s *Sandbox) Path(target string) string { return target }

// Resize implements sandbox.Sandbox. Every limit but memory is written
// at once; memory too when it grows, while a lower memory limit is reached
// in the background by the sandbox's reclaimer (see memLimiter), so that
// instances leaving never wait for the kernel's reclaim.
func (s *Sandbox) Resize(ctx context.Context, l sandbox.Resources) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.setLimits(l); err != nil {
		return err
	}
	target := int64(unlimited)
	if l.MemoryMB > 0 {
		target = int64(l.MemoryMB) << 20
	}
	if err := s.mem.resize(ctx, target); err != nil {
		return fmt.Errorf("resize sandbox %s: memory: %w", s.id, err)
	}
	return nil
}

// setLimits writes every limit but memory (left to memLimiter).
func (s *Sandbox) setLimits(l sandbox.Resources) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("container sandbox %s: destroyed", s.id)
	}
	// Written through the sandbox's own manager, not libcontainer's
	// Container.Set, which also rewrites the device rules and saves its
	// state file on every call, on the path of every instance start.
	// Device rules never change after Create.
	res := cgroups.Resources{SkipDevices: true}
	s.r.setLimits(&res, l)
	res.Memory, res.MemorySwap = 0, 0 // 0: the library leaves them alone
	if err := s.cg.Set(&res); err != nil {
		return fmt.Errorf("resize sandbox %s: %w", s.id, err)
	}
	return nil
}

// ReclaimStats are what this sandbox's memory shrinks and instance drains
// reclaimed so far.
func (s *Sandbox) ReclaimStats() ReclaimStats { return s.mem.stats() }

// MemoryLimit returns the sandbox's memory limit as last written and the
// target it is being brought to, in bytes (-1: unlimited).
func (s *Sandbox) MemoryLimit() (limit, target int64) { return s.mem.current() }

// Listen implements sandbox.Sandbox. For an isolated sandbox the socket is
// created inside the sandbox's network namespace: a fresh goroutine locks
// its OS thread, switches that thread into the namespace (setns), creates
// the listener, switches back and unlocks. A socket keeps the namespace it
// was created in, so the worker can accept and serve on any thread. Should
// switching back fail, the thread is left locked and dies with the
// goroutine instead of running other goroutines in the wrong namespace.
func (s *Sandbox) Listen(network, address string) (net.Listener, error) {
	if s.network == sandbox.NetworkHost {
		return net.Listen(network, address)
	}
	// Held throughout: Destroy cannot close the namespace meanwhile.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("container sandbox %s: destroyed", s.id)
	}
	nsfd := int(s.netns.Fd())
	type result struct {
		ln  net.Listener
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: err}
			return
		}
		defer orig.Close()
		if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("enter the sandbox's network namespace: %w", err)}
			return
		}
		ln, lerr := net.Listen(network, address)
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Keep the thread locked: it exits with this goroutine.
			if ln != nil {
				ln.Close()
			}
			done <- result{err: fmt.Errorf("leave the sandbox's network namespace: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		done <- result{ln: ln, err: lerr}
	}()
	res := <-done
	runtime.KeepAlive(s.netns)
	return res.ln, res.err
}

// Destroy implements sandbox.Sandbox: it kills the container's PID 1, and
// with it every process in the sandbox's PID namespace, then removes the
// container, its cgroups, its mounts and its directory.
func (s *Sandbox) Destroy(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		select {
		case <-s.destroyed:
			return s.destroyErr
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.closed = true
	s.mu.Unlock()
	s.starting.Wait()
	err := s.teardown()
	s.r.forget(s)
	s.destroyErr = err
	close(s.destroyed)
	return err
}

// initExitTimeout bounds the wait for a killed sandbox's init to exit.
const initExitTimeout = time.Minute

// teardown releases whatever of the sandbox exists.
func (s *Sandbox) teardown() error {
	if s.mem != nil {
		s.mem.close()
	}
	var errs []error
	if err := s.closeSpares(); err != nil {
		errs = append(errs, err)
	}
	if s.c != nil {
		if s.init != nil {
			if err := s.c.Signal(unix.SIGKILL); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
				errs = append(errs, fmt.Errorf("kill sandbox: %w", err))
			}
			// The kernel kills everything in the sandbox's PID namespace
			// with its PID 1, but PID 1 only finishes dying once they are
			// all reaped, and the processes started in the sandbox are
			// this process's children: reap those nobody waited for yet.
			s.mu.Lock()
			var unreaped sync.WaitGroup
			for p := range s.live {
				unreaped.Go(func() { _, _ = p.Wait() })
			}
			s.mu.Unlock()
			unreaped.Wait()
			if _, err := s.init.Pid(); err == nil {
				// Bounded: an init that does not die of SIGKILL (seen once
				// in CI, during a failed start) must not hang the caller
				// for ever; the waiter is left behind, and the error says so.
				waited := make(chan struct{})
				go func() {
					defer close(waited)
					_, _ = s.init.Wait()
				}()
				select {
				case <-waited:
				case <-time.After(initExitTimeout):
					errs = append(errs, fmt.Errorf("the sandbox's init did not exit within %s of SIGKILL", initExitTimeout))
				}
			}
		}
		if err := s.c.Destroy(); err != nil {
			errs = append(errs, fmt.Errorf("remove container: %w", err))
		}
	} else if err := destroyCgroup(s.cgPath); err != nil {
		errs = append(errs, err)
	}
	if s.sp != nil {
		s.sp.close()
	}
	if s.netns != nil {
		s.netns.Close()
	}
	if err := unmountAll(s.rootfs); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(s.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// cgroupManager is a manager of the sandbox's own cgroup, made once the
// container runs.
func (s *Sandbox) cgroupManager() (cgroups.Manager, error) {
	if s.cg == nil {
		return nil, errors.New("the sandbox's cgroup is not set up")
	}
	return s.cg, nil
}

// newCgroupManager makes a manager of the container's cgroup that shares
// nothing with libcontainer's own (whose config and path map libcontainer
// reads and writes under its own lock).
func newCgroupManager(c *libcontainer.Container) (cgroups.Manager, error) {
	st, err := c.State()
	if err != nil {
		return nil, err
	}
	cfg := c.Config()
	cg := *cfg.Cgroups
	res := *cg.Resources
	cg.Resources = &res
	return manager.NewWithPaths(&cg, maps.Clone(st.CgroupPaths))
}

// moveToLeaf moves pid into a new child cgroup name of dir (created
// without controllers, which is allowed while dir still holds pid).
func moveToLeaf(dir, name string, pid int) error {
	leaf := filepath.Join(dir, name)
	if err := os.Mkdir(leaf, 0o755); err != nil {
		return err
	}
	return cgroups.WriteCgroupProc(leaf, pid)
}

// mountOverlay mounts dir/rootfs: the layers under a private upper.
func mountOverlay(dir string, lowers []string) error {
	upper, work, rootfs := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "rootfs")
	for _, d := range []string{upper, work, rootfs} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	escaped := make([]string, len(lowers))
	for i, l := range lowers {
		escaped[i] = strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace(l)
	}
	data := "lowerdir=" + strings.Join(escaped, ":") + ",upperdir=" + upper + ",workdir=" + work + ",index=off"
	if len(data) >= os.Getpagesize() {
		return fmt.Errorf("mount the sandbox root: %d layers make the overlay options too long", len(lowers))
	}
	if err := unix.Mount("overlay", rootfs, "overlay", unix.MS_NODEV|unix.MS_NOSUID, data); err != nil {
		return fmt.Errorf("mount the sandbox root (overlay of %d layers): %w", len(lowers), err)
	}
	return nil
}

// unmountAll removes every mount stacked on dir.
func unmountAll(dir string) error {
	for range 16 {
		err := unix.Unmount(dir, unix.MNT_DETACH)
		switch {
		case err == nil:
			continue
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil
		default:
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted", dir)
}

// destroyCgroup kills whatever runs in the cgroup at path and removes it
// (in every hierarchy on cgroup v1).
func destroyCgroup(path string) error {
	m, err := manager.New(&cgroups.Cgroup{Path: path, Resources: &cgroups.Resources{}})
	if err != nil {
		return err
	}
	if m.Exists() {
		_ = killCgroup(m)
	}
	return m.Destroy()
}

// killCgroup sends SIGKILL to every process in the cgroup: atomically with
// cgroup.kill where the unified hierarchy has it (cgroup v2, or the
// cgroup2 mount of a hybrid host), else by freezing the cgroup, killing
// each process and thawing it.
func killCgroup(m cgroups.Manager) error {
	if !m.Exists() {
		return nil
	}
	if p := m.Path(""); p != "" {
		err := cgroups.WriteFile(p, "cgroup.kill", "1")
		if err == nil || errors.Is(err, os.ErrNotExist) && !cgroups.PathExists(p) {
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := m.Freeze(cgroups.Frozen); err != nil {
		return err
	}
	pids, err := m.GetAllPids()
	for _, pid := range pids {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	if terr := m.Freeze(cgroups.Thawed); err == nil {
		err = terr
	}
	return err
}

type meta struct {
	Cgroup string `json:"cgroup"`
}

func writeMeta(dir, cgroup string) error {
	b, _ := json.Marshal(meta{Cgroup: cgroup})
	return os.WriteFile(filepath.Join(dir, "meta.json"), b, 0o600)
}

func readMeta(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		return "", err
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		return "", err
	}
	return m.Cgroup, nil
}

func randomID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

var _ sandbox.Sandbox = (*Sandbox)(nil)
