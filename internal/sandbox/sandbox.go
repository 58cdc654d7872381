// Package sandbox is the boundary between the worker and whatever isolates
// function code: plain processes today, containers and microVMs later. A
// sandbox belongs to one application on one host; every grain worker of
// the application's functions runs inside it.
package sandbox

import (
	"context"
	"os"
)

// Runtime creates sandboxes.
type Runtime interface {
	// Isolation describes the isolation level for operators (shown at
	// start and in `baton get`).
	Isolation() string
	Create(ctx context.Context, spec Spec) (Sandbox, error)
}

// Spec describes a sandbox to create.
type Spec struct {
	ID  string
	App string
	// Mounts makes host directories visible inside the sandbox, read-only.
	Mounts []Mount
	// MemoryMB caps the sandbox's memory; 0 means unlimited.
	MemoryMB int
}

// Mount maps a host directory to a path inside the sandbox.
type Mount struct {
	Source string
	Target string
}

// Sandbox is an isolated environment that runs processes.
type Sandbox interface {
	ID() string
	// Path maps a mount target to the path processes inside the sandbox
	// use to reach it.
	Path(target string) string
	// Start runs a process inside the sandbox.
	Start(ctx context.Context, spec ProcessSpec) (Process, error)
	// Destroy kills every process of the sandbox and releases it.
	Destroy(ctx context.Context) error
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
}

// ExitStatus says how a process ended.
type ExitStatus struct {
	Code   int // -1 when killed by a signal
	Signal int
}

// Process is a running process in a sandbox.
type Process interface {
	Pid() int
	// Wait blocks until the process ends; it may be called once.
	Wait() (ExitStatus, error)
	// Kill sends SIGKILL to the process and everything it started.
	Kill() error
}
