// Package sandbox is the boundary between the worker and whatever isolates
// function code: plain processes (package process), Linux containers
// (package container) and, later, microVMs. A sandbox belongs to one
// application on one host; every grain worker of the application's
// functions runs inside it.
//
// CPU. Runtimes that enforce limits (containers) put every sandbox below
// one parent group of Baton's, which has the host's default CPU weight:
// under contention Baton as a whole weighs as much as any other group or
// process of the host, and the sandboxes' weights (Resources.CPUShares,
// proportional to memory) only divide Baton's share among themselves, as
// an instance's weight (Limits.CPUShares) divides its sandbox's. Each
// instance's process group also has a CPU quota (Limits.CPUMillis, set by
// the host agent in proportion to memory with a floor of one CPU).
//
// Processes an instance leaves running between invocations: Baton does not
// freeze instances between invocations as Lambda does (thawing would sit
// on every warm invocation's path, and an instance with concurrency above
// one has no moment between invocations). They keep running inside the
// instance's group, bounded by its CPU quota, its memory and its PIDs
// limits, and die with the instance when it is stopped (idle, redeploy,
// shutdown). The process runtime enforces none of this.
package sandbox

import (
	"context"
	"errors"
	"net"
	"os"
)

// Runtime creates sandboxes.
type Runtime interface {
	// Isolation describes the isolation level for operators (shown at
	// start and in `baton get`).
	Isolation() string
	// Capabilities say what the runtime really does with what it is
	// asked (which programs run, which limits hold).
	Capabilities() Capabilities
	Create(ctx context.Context, spec Spec) (Sandbox, error)
}

// Capabilities describe a runtime's behaviour, so that callers and the
// driver conformance suite (package sandboxtest) need not guess it from
// the runtime's type.
type Capabilities struct {
	// Programs is set when Start executes the program named by Args. The
	// fake runtime runs Go code in its place.
	Programs bool
	// Limits is set when Resources and Limits are enforced (memory, PIDs,
	// CPU quota and weight) and OOM kills are reported; otherwise they are
	// at most recorded.
	Limits bool
	// Network is set when an isolated sandbox (NetworkIsolated) has a
	// network of its own, so that the host's listeners are unreachable
	// from it.
	Network bool
}

// Network modes of a sandbox (Spec.Network).
const (
	// NetworkIsolated gives the sandbox its own network namespace with
	// only a loopback interface (up). It is the default.
	NetworkIsolated = "isolated"
	// NetworkHost shares the host's network namespace.
	NetworkHost = "host"
)

// Defaults applied by runtimes that enforce limits.
const (
	DefaultTmpMB = 64
	DefaultPIDs  = 512
)

// Spec describes a sandbox to create.
type Spec struct {
	ID  string
	App string
	// RootLowerDirs are host paths of already-mounted, read-only image
	// layers, top-most first. Isolating runtimes assemble the sandbox's
	// root from them (an overlay with a private writable upper that
	// processes still see read-only); the process runtime ignores them.
	RootLowerDirs []string
	// Mounts makes host directories visible inside the sandbox, read-only.
	Mounts []Mount
	// Network is NetworkIsolated (also when empty) or NetworkHost.
	Network string
	// TmpMB sizes the writable tmpfs at /tmp; 0 means DefaultTmpMB.
	TmpMB int
	// MemoryMB, CPUMillis and PIDs are the sandbox's initial limits, with
	// the meaning of the Resources fields (see Sandbox.Resize).
	MemoryMB  int
	CPUMillis int
	PIDs      int
	CPUShares int
}

// Resources returns the spec's initial limits.
func (s Spec) Resources() Resources {
	return Resources{MemoryMB: s.MemoryMB, CPUMillis: s.CPUMillis, PIDs: s.PIDs, CPUShares: s.CPUShares}
}

// Resources are the limits of a whole sandbox. Runtimes without isolation
// ignore them.
type Resources struct {
	// MemoryMB caps the sandbox's memory (no swap); 0 means unlimited.
	MemoryMB int
	// CPUMillis caps CPU time in thousandths of a CPU (1500 = one and a
	// half CPUs); 0 means unlimited.
	CPUMillis int
	// PIDs caps the number of processes and threads; 0 means DefaultPIDs.
	PIDs int
	// CPUShares weighs the sandbox's claim to CPU against other
	// sandboxes' under contention (see Limits.CPUShares); 0 leaves the
	// kernel's default.
	CPUShares int
}

// Mount maps a host directory to a path inside the sandbox.
type Mount struct {
	Source string
	Target string
	// Propagate makes mounts made later below Source (on the host) appear
	// below Target in the running sandbox, as a slave: nothing the
	// sandbox does propagates back. Source must then be a shared mount
	// point (see image.View).
	Propagate bool
}

// Sandbox is an isolated environment that runs processes.
type Sandbox interface {
	ID() string
	// Path maps a mount target to the path processes inside the sandbox
	// use to reach it.
	Path(target string) string
	// Start runs a process inside the sandbox.
	Start(ctx context.Context, spec ProcessSpec) (Process, error)
	// Resize replaces the sandbox's limits, for example as instances come
	// and go. A higher memory limit holds when Resize returns; a lower one
	// may be reached later (runtimes that reclaim bring it down in the
	// background as far as the memory in use allows, never killing for
	// it), so that a shrink does not wait for the kernel's reclaim.
	Resize(ctx context.Context, r Resources) error
	// Listen creates a listener that processes inside the sandbox can
	// reach at the address it is bound to (for example each instance's
	// Runtime API endpoint at 127.0.0.1:port in an isolated sandbox). The
	// worker serves it from outside.
	Listen(network, address string) (net.Listener, error)
	// Destroy kills every process of the sandbox and releases it.
	Destroy(ctx context.Context) error
}

// Limits confine one process of a sandbox together with everything it
// starts, inside the sandbox's own limits: one instance that runs out of
// memory or forks without end cannot take the sandbox's other processes
// (other functions of the app, the sandbox's init) with it. Zero fields
// leave only the sandbox's limit in force. Runtimes without isolation
// ignore them.
type Limits struct {
	MemoryMB int
	PIDs     int
	// CPUShares weighs the process's claim to CPU against its siblings'
	// (the sandbox's other processes) when the CPU is contended; it never
	// throttles an otherwise idle CPU.
	CPUShares int
	// CPUMillis caps the CPU time of the process and everything it
	// starts, in thousandths of a CPU (a quota per scheduling period): it
	// bounds what background processes an instance leaves running between
	// invocations can burn. 0 leaves only the sandbox's cap.
	CPUMillis int
}

// ErrProcessGone is returned (wrapped) by Confine when the process exited
// before it could be confined.
var ErrProcessGone = errors.New("the process is gone")

// Confiner is implemented by the processes of runtimes that enforce
// Limits. A grain worker forks its instances itself; Confine moves such a
// fork, with everything it starts from then on, into a group of its own.
type Confiner interface {
	// Confine takes the pid of a child of this process as the sandbox sees
	// it (the grain worker's report). The child must be held until Confine
	// returns: running none of its own code, it neither forks nor exits
	// (grain.Child.Release lets it go).
	Confine(ctx context.Context, pid int, l Limits) (Group, error)
}

// Group is a confined process and everything it started.
type Group interface {
	// Kill sends SIGKILL to every process of the group.
	Kill() error
	// Close kills what is left of the group, removes it and reports
	// whether the kernel's OOM killer killed any of its processes.
	Close() (oomKilled bool)
}

// ProcessSpec describes a process to start in a sandbox. Paths are as the
// sandbox sees them (see Sandbox.Path).
type ProcessSpec struct {
	Args   []string
	Env    []string
	Dir    string
	Stdout *os.File
	Stderr *os.File
	// ExtraFiles become fds 3, 4, ... in the process.
	ExtraFiles []*os.File
	// Limits confine the process and everything it starts.
	Limits Limits
}

// ExitStatus says how a process ended.
type ExitStatus struct {
	Code   int // -1 when killed by a signal
	Signal int
	// OOMKilled is set when the kernel's OOM killer killed the process or
	// one it started, by runtimes that enforce memory limits.
	OOMKilled bool
}

// Process is a running process in a sandbox.
type Process interface {
	Pid() int
	// Wait blocks until the process ends; it may be called once.
	Wait() (ExitStatus, error)
	// Kill sends SIGKILL to the process and everything it started.
	Kill() error
}
