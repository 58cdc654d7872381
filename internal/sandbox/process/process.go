// Package process is the sandbox runtime without isolation: processes run
// as children of the worker in their own process group. It exists so that
// Baton works where containers cannot be created; it gives no protection
// between functions.
package process

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/baton-faas/baton/internal/sandbox"
)

// Runtime creates process sandboxes.
type Runtime struct{}

// New returns the process sandbox runtime.
func New() *Runtime { return &Runtime{} }

// Isolation implements sandbox.Runtime.
func (*Runtime) Isolation() string {
	return "process (no isolation: functions run as plain child processes of the worker)"
}

// Capabilities implements sandbox.Runtime: programs run, but limits are
// ignored and processes share the host's network.
func (*Runtime) Capabilities() sandbox.Capabilities { return sandbox.Capabilities{Programs: true} }

// Create implements sandbox.Runtime.
func (*Runtime) Create(_ context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	paths := make(map[string]string, len(spec.Mounts))
	for _, m := range spec.Mounts {
		paths[m.Target] = m.Source
	}
	return &Sandbox{id: spec.ID, paths: paths, procs: map[*proc]struct{}{}}, nil
}

// Sandbox is a set of process groups.
type Sandbox struct {
	id    string
	paths map[string]string

	mu     sync.Mutex
	procs  map[*proc]struct{}
	closed bool
}

// ID implements sandbox.Sandbox.
func (s *Sandbox) ID() string { return s.id }

// Path implements sandbox.Sandbox: without isolation the host path is used.
func (s *Sandbox) Path(target string) string {
	if p, ok := s.paths[target]; ok {
		return p
	}
	return target
}

// Start implements sandbox.Sandbox.
func (s *Sandbox) Start(_ context.Context, spec sandbox.ProcessSpec) (sandbox.Process, error) {
	if len(spec.Args) == 0 {
		return nil, errors.New("process sandbox: no command")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("process sandbox %s: destroyed", s.id)
	}
	var cmd *exec.Cmd
	for attempt := 0; ; attempt++ {
		cmd = exec.Command(spec.Args[0], spec.Args[1:]...)
		cmd.Env = spec.Env
		cmd.Dir = spec.Dir
		cmd.Stdout = spec.Stdout
		cmd.Stderr = spec.Stderr
		cmd.ExtraFiles = spec.ExtraFiles
		// A process group lets Kill reach everything the process forked,
		// and the parent-death signal stops orphans if the worker dies.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		err := cmd.Start()
		if err == nil {
			break
		}
		// An executable the worker has just written (a bootstrap from the
		// code cache) is "busy" while any process forked meanwhile still
		// holds the inherited write descriptor, until that child execs:
		// a moment, so try again briefly (as cmd/go does, Go issue 22315).
		if !errors.Is(err, syscall.ETXTBSY) || attempt >= textBusyRetries {
			return nil, fmt.Errorf("start %s: %w", spec.Args[0], err)
		}
		time.Sleep(time.Duration(attempt+1) * time.Millisecond)
	}
	p := &proc{cmd: cmd, sb: s}
	s.procs[p] = struct{}{}
	return p, nil
}

// textBusyRetries bounds the retries of a start that failed with ETXTBSY
// (about 0.2 s in all).
const textBusyRetries = 20

// Resize implements sandbox.Sandbox: without isolation there are no limits
// to change.
func (s *Sandbox) Resize(context.Context, sandbox.Resources) error { return nil }

// Listen implements sandbox.Sandbox: processes share the host's network,
// so a plain listener is reachable from them.
func (s *Sandbox) Listen(network, address string) (net.Listener, error) {
	return net.Listen(network, address)
}

// Destroy implements sandbox.Sandbox.
func (s *Sandbox) Destroy(context.Context) error {
	s.mu.Lock()
	s.closed = true
	procs := make([]*proc, 0, len(s.procs))
	for p := range s.procs {
		procs = append(procs, p)
	}
	s.mu.Unlock()
	for _, p := range procs {
		_ = p.Kill()
	}
	return nil
}

type proc struct {
	cmd *exec.Cmd
	sb  *Sandbox
}

func (p *proc) Pid() int { return p.cmd.Process.Pid }

func (p *proc) Wait() (sandbox.ExitStatus, error) {
	err := p.cmd.Wait()
	// Reap the rest of the group too: nothing of an instance may outlive it.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	p.sb.mu.Lock()
	delete(p.sb.procs, p)
	p.sb.mu.Unlock()
	st := sandbox.ExitStatus{Code: p.cmd.ProcessState.ExitCode()}
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		st.Code = -1
		st.Signal = int(ws.Signal())
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return st, fmt.Errorf("wait: %w", err)
	}
	return st, nil
}

func (p *proc) Kill() error {
	// The leader is signalled on its own too: it may have moved itself
	// out of its group.
	// os.Process knows when the leader was reaped, so this never hits a
	// reused pid.
	errGroup := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	errLeader := p.cmd.Process.Signal(syscall.SIGKILL)
	if errGroup != nil && !errors.Is(errGroup, syscall.ESRCH) {
		return fmt.Errorf("kill process group %d: %w", p.cmd.Process.Pid, errGroup)
	}
	if errLeader != nil && !errors.Is(errLeader, os.ErrProcessDone) {
		return fmt.Errorf("kill process %d: %w", p.cmd.Process.Pid, errLeader)
	}
	return nil
}

var (
	_ sandbox.Runtime = (*Runtime)(nil)
	_ sandbox.Sandbox = (*Sandbox)(nil)
)
