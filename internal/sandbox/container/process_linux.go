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
	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/sandbox"
)

// Start implements sandbox.Sandbox: the process is exec'd into the running
// container (libcontainer's Container.Run) in a cgroup of its own below the
// sandbox's, which Kill and Wait use to reach everything it started.
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

	sub := "p" + strconv.FormatUint(s.seq.Add(1), 10)
	cg, err := manager.New(&cgroups.Cgroup{Path: path.Join(s.cgPath, sub), Resources: &cgroups.Resources{}})
	if err == nil {
		err = cg.Apply(-1)
	}
	if err != nil {
		return nil, fmt.Errorf("container sandbox %s: create the process's cgroup: %w", s.id, err)
	}
	dir := spec.Dir
	if dir == "" {
		dir = "/"
	}
	lp := &libcontainer.Process{
		Args:           spec.Args,
		Env:            spec.Env,
		Cwd:            dir,
		UID:            s.r.opts.UID,
		GID:            s.r.opts.GID,
		ExtraFiles:     spec.ExtraFiles,
		SubCgroupPaths: map[string]string{"": sub},
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
	return &process{lp: lp, cg: cg, pid: pid}, nil
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
	lp  *libcontainer.Process
	cg  cgroups.Manager
	pid int

	mu   sync.Mutex
	done bool // exited and its cgroup removed
}

// Pid is the process's id in the host's PID namespace.
func (p *process) Pid() int { return p.pid }

// Wait implements sandbox.Process. When the process has ended, whatever it
// left running is killed and its cgroup removed: nothing of an instance
// outlives it.
func (p *process) Wait() (sandbox.ExitStatus, error) {
	ps, err := p.lp.Wait()
	p.mu.Lock()
	_ = killCgroup(p.cg)
	// Should removal fail (a killed leftover not yet reaped), the
	// sandbox's Destroy removes the cgroup with the sandbox's.
	_ = p.cg.Destroy()
	p.done = true
	p.mu.Unlock()
	if ps == nil {
		return sandbox.ExitStatus{Code: -1}, fmt.Errorf("wait: %w", err)
	}
	st := sandbox.ExitStatus{Code: ps.ExitCode()}
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
	errSig := p.lp.Signal(unix.SIGKILL)
	if err := killCgroup(p.cg); err != nil {
		return fmt.Errorf("kill process %d and its descendants: %w", p.pid, err)
	}
	if errSig != nil && !errors.Is(errSig, os.ErrProcessDone) {
		return fmt.Errorf("kill process %d: %w", p.pid, errSig)
	}
	return nil
}
