// Package fake is a sandbox runtime without processes, for measuring and
// testing everything above the sandbox (the host agent, the router, the
// control plane) at a scale and speed real sandboxes do not allow.
//
// A "process" started in a fake sandbox is a goroutine. What it does is
// chosen from its spec, the way a real program's behaviour follows from
// what it is given:
//
//   - a spec whose environment names AWS_LAMBDA_RUNTIME_API is a runtime
//     client: after Options.StartLatency it polls the endpoint's
//     /2018-06-01/runtime/invocation/next and posts every event back as
//     its response (an echo function), until it is killed or the endpoint
//     goes away;
//   - a spec whose last argument is "zygote" with a control socket as its
//     first extra file (fd 3) is a grain worker: it answers the host
//     agent's zygote protocol (package node/grain) at once, and every
//     instance it is asked to fork is a runtime client as above, held
//     until released as a real fork is;
//   - anything else idles until it is killed.
//
// Python instances are thus "forked" from a Go zygote through the host
// agent's unchanged code path, rather than the host agent treating the
// fake like the runtimes it starts as plain processes: the fake exercises
// the same calls (spawn, release, kill, exit reports) as real sandboxes,
// and the host agent needs no case of its own for it. The function's code
// is never read: every function echoes its event.
//
// Limits and resources are recorded, not enforced; Listen gives host
// listeners (the fake shares the host's network like the process runtime);
// killing a process ends its goroutine and everything it "forked".
package fake

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/baton-faas/baton/internal/sandbox"
)

// Options configure the fake runtime.
type Options struct {
	// StartLatency delays every runtime client (started or forked)
	// before its first poll, standing in for a runtime's start and its
	// handler's import. Zero starts them at once.
	StartLatency time.Duration
}

// Runtime creates fake sandboxes.
type Runtime struct {
	opts    Options
	nextPid atomic.Int64
}

// New returns a fake runtime.
func New(opts Options) (*Runtime, error) {
	if opts.StartLatency < 0 {
		return nil, fmt.Errorf("fake sandboxes: start latency %s is negative", opts.StartLatency)
	}
	return &Runtime{opts: opts}, nil
}

// Isolation implements sandbox.Runtime.
func (r *Runtime) Isolation() string {
	return fmt.Sprintf("fake (no processes: instances are goroutines that echo their events; start latency %s)", r.opts.StartLatency)
}

// Capabilities implements sandbox.Runtime: nothing is executed and
// nothing is enforced.
func (*Runtime) Capabilities() sandbox.Capabilities { return sandbox.Capabilities{} }

// Create implements sandbox.Runtime.
func (r *Runtime) Create(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("create fake sandbox %s: %w", spec.ID, err)
	}
	if spec.Network != "" && spec.Network != sandbox.NetworkIsolated && spec.Network != sandbox.NetworkHost {
		return nil, fmt.Errorf("create fake sandbox %s: unknown network mode %q", spec.ID, spec.Network)
	}
	paths := make(map[string]string, len(spec.Mounts))
	for _, m := range spec.Mounts {
		paths[m.Target] = m.Source
	}
	return &Sandbox{r: r, spec: spec, paths: paths, res: spec.Resources(), procs: map[*Process]struct{}{}}, nil
}

// Sandbox is a fake sandbox: a set of goroutines.
type Sandbox struct {
	r     *Runtime
	spec  sandbox.Spec
	paths map[string]string

	mu     sync.Mutex
	res    sandbox.Resources
	procs  map[*Process]struct{}
	closed bool
}

// ID implements sandbox.Sandbox.
func (s *Sandbox) ID() string { return s.spec.ID }

// Path implements sandbox.Sandbox: as with the process runtime, the host
// path is used.
func (s *Sandbox) Path(target string) string {
	if p, ok := s.paths[target]; ok {
		return p
	}
	return target
}

// Resources returns the limits last set (Create or Resize).
func (s *Sandbox) Resources() sandbox.Resources {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.res
}

// Resize implements sandbox.Sandbox: the limits are recorded.
func (s *Sandbox) Resize(_ context.Context, r sandbox.Resources) error {
	if r.MemoryMB < 0 || r.CPUMillis < 0 || r.PIDs < 0 || r.CPUShares < 0 {
		return fmt.Errorf("resize fake sandbox %s: negative limit in %+v", s.spec.ID, r)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("resize fake sandbox %s: destroyed", s.spec.ID)
	}
	s.res = r
	return nil
}

// Listen implements sandbox.Sandbox.
func (s *Sandbox) Listen(network, address string) (net.Listener, error) {
	return net.Listen(network, address)
}

// Start implements sandbox.Sandbox.
func (s *Sandbox) Start(ctx context.Context, spec sandbox.ProcessSpec) (sandbox.Process, error) {
	if len(spec.Args) == 0 {
		return nil, errors.New("fake sandbox: no command")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Args[0], err)
	}
	// The process keeps its own copies of its files, as a real one's
	// descriptors outlive the caller's: a reader of its output sees EOF
	// only once it is gone.
	files, err := dupFiles(spec.Stdout, spec.Stderr)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Args[0], err)
	}
	var ctrl *os.File
	if isZygote(spec) {
		if ctrl, err = dupFile(spec.ExtraFiles[0]); err != nil {
			closeAll(files)
			return nil, fmt.Errorf("start %s: control socket: %w", spec.Args[0], err)
		}
		files = append(files, ctrl)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		closeAll(files)
		return nil, fmt.Errorf("fake sandbox %s: destroyed", s.spec.ID)
	}
	pctx, kill := context.WithCancel(context.Background())
	p := &Process{pid: int(s.r.nextPid.Add(1)), spec: spec, sb: s, kill: kill, done: make(chan struct{})}
	s.procs[p] = struct{}{}
	s.mu.Unlock()

	go func() {
		defer close(p.done)
		defer closeAll(files)
		switch {
		case ctrl != nil:
			p.status = serveZygote(pctx, ctrl, s.r)
		case envValue(spec.Env, runtimeAPIEnv) != "":
			p.status = runClient(pctx, envValue(spec.Env, runtimeAPIEnv), s.r.opts.StartLatency)
		default:
			<-pctx.Done()
			p.status = killed
		}
		s.mu.Lock()
		delete(s.procs, p)
		s.mu.Unlock()
	}()
	return p, nil
}

// Destroy implements sandbox.Sandbox: it kills every process and waits
// until their goroutines have ended.
func (s *Sandbox) Destroy(context.Context) error {
	s.mu.Lock()
	s.closed = true
	procs := make([]*Process, 0, len(s.procs))
	for p := range s.procs {
		procs = append(procs, p)
	}
	s.mu.Unlock()
	for _, p := range procs {
		p.kill()
		<-p.done
	}
	return nil
}

// Process is a fake process: one goroutine.
type Process struct {
	pid  int
	spec sandbox.ProcessSpec
	sb   *Sandbox
	kill context.CancelFunc

	done   chan struct{}
	status sandbox.ExitStatus // set before done is closed
}

// killed is how a killed fake process ends, as a SIGKILLed one would.
var killed = sandbox.ExitStatus{Code: -1, Signal: int(syscall.SIGKILL)}

// Pid implements sandbox.Process; pids are unique per runtime.
func (p *Process) Pid() int { return p.pid }

// Limits returns the limits the process was started with (recorded, not
// enforced).
func (p *Process) Limits() sandbox.Limits { return p.spec.Limits }

// Wait implements sandbox.Process.
func (p *Process) Wait() (sandbox.ExitStatus, error) {
	<-p.done
	return p.status, nil
}

// Kill implements sandbox.Process: the goroutine and whatever it forked
// end soon after.
func (p *Process) Kill() error {
	p.kill()
	return nil
}

// runtimeAPIEnv names the Runtime API endpoint in a process's environment.
const runtimeAPIEnv = "AWS_LAMBDA_RUNTIME_API"

// isZygote tells a grain worker by how the host agent starts one: its
// last argument and its control socket at fd 3.
func isZygote(spec sandbox.ProcessSpec) bool {
	return spec.Args[len(spec.Args)-1] == "zygote" && len(spec.ExtraFiles) > 0 && spec.ExtraFiles[0] != nil
}

func envValue(env []string, key string) string {
	for _, kv := range slices.Backward(env) {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}

// dupFile duplicates f's descriptor without changing its mode (Fd would
// make it blocking for the caller too).
func dupFile(f *os.File) (*os.File, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd int
	var dupErr error
	if err := raw.Control(func(d uintptr) {
		fd, dupErr = syscall.Dup(int(d))
	}); err != nil {
		return nil, err
	}
	if dupErr != nil {
		return nil, fmt.Errorf("dup %s: %w", f.Name(), dupErr)
	}
	syscall.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), f.Name()), nil
}

func dupFiles(fs ...*os.File) ([]*os.File, error) {
	var out []*os.File
	for _, f := range fs {
		if f == nil {
			continue
		}
		d, err := dupFile(f)
		if err != nil {
			closeAll(out)
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

var (
	_ sandbox.Runtime = (*Runtime)(nil)
	_ sandbox.Sandbox = (*Sandbox)(nil)
	_ sandbox.Process = (*Process)(nil)
)
