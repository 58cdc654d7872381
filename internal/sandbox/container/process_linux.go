//go:build linux && cgo

package container

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/sandbox"
)

// Start implements sandbox.Sandbox: the process runs in the container in a
// cgroup of its own below the sandbox's, which Kill and Wait use to reach
// everything it started. The sandbox's reaper starts it where the reaper
// is baton-reaper (see spawner); otherwise it is exec'd into the running
// container by libcontainer's Container.Run, which re-executes this
// program to set it up.
func (s *Sandbox) Start(ctx context.Context, spec sandbox.ProcessSpec) (sandbox.Process, error) {
	if len(spec.Args) == 0 {
		return nil, errors.New("container sandbox: no command")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("container sandbox %s: destroyed", s.id)
	}
	s.starting.Add(1)
	s.mu.Unlock()
	defer s.starting.Done()

	dir := spec.Dir
	if dir == "" {
		dir = "/"
	}
	if s.sp != nil {
		cg, err := s.groupFor(-1, spec.Limits)
		if err != nil {
			return nil, fmt.Errorf("container sandbox %s: %w", s.id, err)
		}
		sp, hostPid, err := s.sp.start(ctx, spec, dir, s.r.opts.UID, s.r.opts.GID, cg)
		if err != nil {
			_ = killCgroup(cg)
			_ = cg.Destroy()
			return nil, err
		}
		return s.track(&process{s: s, sp: sp, cg: cg, pid: hostPid}), nil
	}
	// libcontainer joins the process to its group by name.
	sub := s.nextGroupName()
	cg, err := s.newGroup(sub, -1, spec.Limits)
	if err != nil {
		return nil, fmt.Errorf("container sandbox %s: %w", s.id, err)
	}
	none := []string{}
	lp := &libcontainer.Process{
		Args:           spec.Args,
		Env:            spec.Env,
		Cwd:            dir,
		UID:            s.r.opts.UID,
		GID:            s.r.opts.GID,
		ExtraFiles:     spec.ExtraFiles,
		SubCgroupPaths: map[string]string{"": sub},
		// None, whatever the sandbox's init keeps (see pid1.Reaper).
		Capabilities: &configs.Capabilities{Bounding: none, Effective: none, Inheritable: none, Permitted: none, Ambient: none},
	}
	// Unset streams stay nil interfaces: libcontainer gives /dev/null.
	if spec.Stdout != nil {
		lp.Stdout = spec.Stdout
	}
	if spec.Stderr != nil {
		lp.Stderr = spec.Stderr
	}
	if err := s.c.Run(lp); err != nil {
		_ = killCgroup(cg)
		_ = cg.Destroy()
		return nil, startError(spec.Args[0], err)
	}
	pid, _ := lp.Pid()
	return s.track(&process{s: s, lp: lp, cg: cg, pid: pid}), nil
}

// track records a started process until it is waited for.
func (s *Sandbox) track(p *process) *process {
	s.mu.Lock()
	s.live[p] = struct{}{}
	s.mu.Unlock()
	return p
}

func (s *Sandbox) nextGroupName() string {
	return "p" + strconv.FormatUint(s.seq.Add(1), 10)
}

// newGroup creates the cgroup sub below the sandbox's with the limits l,
// holding pid (-1: none yet). Device rules are left alone: on cgroup v1 a
// new devices cgroup starts with a copy of its parent's, the sandbox's.
func (s *Sandbox) newGroup(sub string, pid int, l sandbox.Limits) (cgroups.Manager, error) {
	res := &cgroups.Resources{SkipDevices: true}
	if l.MemoryMB > 0 {
		res.Memory = int64(l.MemoryMB) << 20
		if s.r.swap {
			res.MemorySwap = res.Memory // no swap
		}
	}
	if l.PIDs > 0 {
		n := int64(l.PIDs)
		res.PidsLimit = &n
	}
	if l.CPUShares > 0 {
		res.CpuShares = cpuShares(l.CPUShares)
	}
	if l.CPUMillis > 0 {
		res.CpuPeriod = cpuPeriod
		res.CpuQuota = cpuQuota(l.CPUMillis)
	}
	// Created in every hierarchy (devices included, for the processes
	// libcontainer joins to it); only Set skips the device rules.
	cg, err := manager.New(&cgroups.Cgroup{Path: path.Join(s.cgPath, sub), Resources: &cgroups.Resources{}})
	if err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", sub, err)
	}
	if err := cg.Apply(pid); err != nil {
		_ = cg.Destroy()
		return nil, fmt.Errorf("create cgroup %s: %w", sub, err)
	}
	if err := cg.Set(res); err != nil {
		_ = killCgroup(cg)
		_ = cg.Destroy()
		return nil, fmt.Errorf("limit cgroup %s to %+v: %w", sub, l, err)
	}
	return cg, nil
}

// startError keeps the cause of a failed start recognisable
// (errors.Is(err, fs.ErrNotExist) and the like): libcontainer reports
// failures of its init inside the container as text only.
func startError(name string, err error) error {
	msg := err.Error()
	var kind error
	switch {
	case strings.Contains(msg, "no such file or directory"), strings.Contains(msg, "executable file not found"):
		kind = fs.ErrNotExist
	case strings.Contains(msg, "permission denied"):
		kind = fs.ErrPermission
	case strings.Contains(msg, "exec format error"):
		kind = syscall.ENOEXEC
	}
	if kind == nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	return &wrapped{err: fmt.Errorf("start %s: %w", name, err), kind: kind}
}

type wrapped struct {
	err, kind error
}

func (w *wrapped) Error() string   { return w.err.Error() }
func (w *wrapped) Unwrap() []error { return []error{w.err, w.kind} }

// process is a process started in a sandbox.
type process struct {
	s   *Sandbox
	lp  *libcontainer.Process // started by libcontainer, or
	sp  *spawned              // by the sandbox's reaper
	cg  cgroups.Manager
	pid int

	mu   sync.Mutex
	done bool // exited and its cgroup removed

	waitOnce sync.Once
	status   sandbox.ExitStatus
	waitErr  error
}

// Pid is the process's id in the host's PID namespace.
func (p *process) Pid() int { return p.pid }

// Wait implements sandbox.Process. When the process has ended, whatever it
// left running is killed and its cgroup removed: nothing of an instance
// outlives it. It may be called more than once (the sandbox's Destroy
// reaps what its owner has not yet waited for); every call reports the
// same.
func (p *process) Wait() (sandbox.ExitStatus, error) {
	p.waitOnce.Do(func() {
		p.status, p.waitErr = p.reap()
		p.s.mu.Lock()
		delete(p.s.live, p)
		p.s.mu.Unlock()
	})
	return p.status, p.waitErr
}

func (p *process) reap() (sandbox.ExitStatus, error) {
	if p.sp != nil {
		ws := p.sp.wait()
		p.mu.Lock()
		oom := closeGroup(p.s, p.cg)
		p.done = true
		p.sp.pidfd.Close()
		p.mu.Unlock()
		code, sig := exitStatus(syscall.WaitStatus(ws))
		return sandbox.ExitStatus{Code: code, Signal: sig, OOMKilled: oom}, nil
	}
	ps, err := p.lp.Wait()
	p.mu.Lock()
	oom := closeGroup(p.s, p.cg)
	p.done = true
	p.mu.Unlock()
	if ps == nil {
		return sandbox.ExitStatus{Code: -1, OOMKilled: oom}, fmt.Errorf("wait: %w", err)
	}
	st := sandbox.ExitStatus{Code: ps.ExitCode(), OOMKilled: oom}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		st.Code = -1
		st.Signal = int(ws.Signal())
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return st, fmt.Errorf("wait: %w", err)
	}
	return st, nil
}

// Kill implements sandbox.Process: SIGKILL to every process in the
// process's cgroup, which holds everything it started whatever their
// process group or parent.
func (p *process) Kill() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return nil
	}
	// The process itself is also signalled through its pidfd, which is
	// safe against pid reuse.
	var errSig error
	if p.sp != nil {
		errSig = p.sp.signal(unix.SIGKILL)
	} else {
		errSig = p.lp.Signal(unix.SIGKILL)
	}
	if err := killCgroup(p.cg); err != nil {
		return fmt.Errorf("kill process %d and its descendants: %w", p.pid, err)
	}
	if errSig != nil && !errors.Is(errSig, os.ErrProcessDone) {
		return fmt.Errorf("kill process %d: %w", p.pid, errSig)
	}
	return nil
}

// closeGroup kills what is left in a process's cgroup, removes it and
// reports whether the OOM killer killed any of its processes. The kill
// count is kept per cgroup of the victim, whichever limit (the group's or
// the sandbox's) was reached.
func closeGroup(s *Sandbox, cg cgroups.Manager) (oomKilled bool) {
	n, err := cg.OOMKillCount()
	_ = killCgroup(cg)
	s.r.drainGroup(s, cg)
	// Should removal fail (a killed leftover not yet reaped), the
	// sandbox's Destroy removes the cgroup with the sandbox's.
	_ = cg.Destroy()
	return err == nil && n > 0
}

// Confine implements sandbox.Confiner: the child pid (as the sandbox sees
// it) of this process, still in this process's cgroup, moves to a cgroup
// of its own.
//
// Baton writes host pids into cgroups as root, so a pid must never name
// another process by the time it is written. The child is held by its
// parent (sandbox.Confiner), so it neither forks nor exits of its own
// accord; should it be killed meanwhile, a pidfd opened on the process
// found by its parent and the innermost entry of its NSpid, and checked
// again after the move, tells, and nothing outside the sandbox is touched.
// The parent's cgroup is not frozen: freezing waits for every task of it
// to reach a freezable state, which a loaded host can delay for seconds.
func (p *process) Confine(ctx context.Context, pid int, l sandbox.Limits) (sandbox.Group, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := p.s
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("container sandbox %s: destroyed", s.id)
	}
	s.starting.Add(1)
	s.mu.Unlock()
	defer s.starting.Done()

	hostPid, err := childIn(p.cg, p.pid, pid)
	if err != nil {
		return nil, fmt.Errorf("confine process %d: %w", pid, err)
	}
	pidfd, err := unix.PidfdOpen(hostPid, 0)
	if err != nil {
		return nil, fmt.Errorf("confine process %d: %w: %w", pid, sandbox.ErrProcessGone, err)
	}
	defer unix.Close(pidfd)
	// The pidfd names the process that has hostPid now; it must still be
	// the child (the pid could have been reused before the pidfd).
	if again, err := childIn(p.cg, p.pid, pid); err != nil || again != hostPid {
		return nil, fmt.Errorf("confine process %d: %w", pid, sandbox.ErrProcessGone)
	}
	cg, err := s.groupFor(hostPid, l)
	if isGone(err) {
		err = fmt.Errorf("%w: %w", sandbox.ErrProcessGone, err)
	}
	if err != nil {
		return nil, fmt.Errorf("confine process %d: %w", pid, err)
	}
	g := &group{s: s, cg: cg}
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
		// Gone before the move: what was moved may not be the child.
		// Kill nothing that is not of the sandbox.
		if foreign := s.foreignPids(cg); len(foreign) > 0 {
			s.r.log.Error("confining an instance moved processes outside the sandbox; leaving them and their cgroup alone",
				"sandbox", s.id, "pids", foreign)
			return nil, fmt.Errorf("confine process %d: %w", pid, sandbox.ErrProcessGone)
		}
		g.Close()
		return nil, fmt.Errorf("confine process %d: %w", pid, sandbox.ErrProcessGone)
	}
	return g, nil
}

// childIn returns the host pid of the process of cg that is a child of
// parent (a host pid) and has the pid nsPid in its own PID namespace.
func childIn(cg cgroups.Manager, parent, nsPid int) (int, error) {
	pids, err := cg.GetPids()
	if err != nil {
		return 0, err
	}
	want := strconv.Itoa(nsPid)
	for _, hp := range pids {
		st, ok := readStatus(hp)
		if ok && !st.zombie && st.ppid == parent && st.nsPid == want {
			return hp, nil
		}
	}
	// A child stays in its parent's group until moved: not found, it has
	// exited.
	return 0, fmt.Errorf("no child %d in the group: %w", nsPid, sandbox.ErrProcessGone)
}

type procStatus struct {
	ppid   int
	nsPid  string // innermost entry of NSpid
	zombie bool
}

func readStatus(pid int) (procStatus, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return procStatus{}, false
	}
	var st procStatus
	for line := range strings.Lines(string(b)) {
		key, val, _ := strings.Cut(line, ":")
		f := strings.Fields(val)
		if len(f) == 0 {
			continue
		}
		switch key {
		case "State":
			st.zombie = f[0] == "Z" || f[0] == "X"
		case "PPid":
			st.ppid, _ = strconv.Atoi(f[0])
		case "NSpid":
			st.nsPid = f[len(f)-1]
		}
	}
	return st, true
}

// foreignPids lists the processes of cg that are not in the sandbox's PID
// namespace.
func (s *Sandbox) foreignPids(cg cgroups.Manager) []int {
	initPid, err := s.init.Pid()
	if err != nil {
		return nil
	}
	ns, err := os.Readlink("/proc/" + strconv.Itoa(initPid) + "/ns/pid")
	if err != nil {
		return nil
	}
	pids, _ := cg.GetPids()
	var out []int
	for _, hp := range pids {
		if other, err := os.Readlink("/proc/" + strconv.Itoa(hp) + "/ns/pid"); err == nil && other != ns {
			out = append(out, hp)
		}
	}
	return out
}

// group is a confined fork and what it started.
type group struct {
	s      *Sandbox
	mu     sync.Mutex
	cg     cgroups.Manager
	closed bool
}

func (g *group) Kill() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	return killCgroup(g.cg)
}

func (g *group) Close() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.closed = true
	return closeGroup(g.s, g.cg)
}

var (
	_ sandbox.Confiner = (*process)(nil)
	_ sandbox.Group    = (*group)(nil)
)
