// Package container is the sandbox runtime that isolates each application
// in a Linux container, built with runc's libcontainer used as a library.
//
// One sandbox is one libcontainer container with its own mount, PID, IPC,
// UTS and (unless Spec.Network is "host") network namespace, and a cgroup
// namespace where the kernel has one. Its root is an overlay of
// Spec.RootLowerDirs with a private upper directory, mounted read-only for
// processes; /tmp is a size-limited tmpfs. Spec.Mounts are read-only binds
// at their targets, so Path(target) is the target itself.
//
// The container's PID 1 is a minimal reaper: the small static program
// baton-reaper (cmd/baton-reaper, found next to the running executable),
// exec'd from a sealed in-memory copy, or, without it, this very binary
// (bind-mounted read-only at /.baton/baton). Every process the worker
// starts runs in a cgroup of its own below the sandbox's, so that Kill
// reaches everything the process forked even when the children changed
// their process group or were re-parented. baton-reaper starts them
// itself (see spawner and package pid1); without it they are exec'd into
// the running container with libcontainer's Container.Run, which
// re-executes this program for each.
//
// Security: processes run as Options.UID/GID (1000:1000 by default) with
// no capabilities at all, no_new_privs, a seccomp filter (see
// deniedSyscalls), Docker's masked and read-only /proc and /sys paths and
// /dev with the default device set only. The reaper runs as uid 0 without
// capabilities, so no process of the sandbox can signal or inspect it.
//
// Programs using this package must call Reexec first thing in main (and in
// TestMain): libcontainer re-executes the binary to set up each container
// process, and without baton-reaper the sandbox's reaper is the same
// binary.
package container

import (
	"errors"
	"log/slog"
)

// ErrUnavailable is wrapped by New's error when this host or binary cannot
// run container sandboxes; callers fall back to process isolation.
var ErrUnavailable = errors.New("container sandboxes unavailable")

// Options configure the container runtime.
type Options struct {
	// StateDir holds libcontainer's state and each sandbox's overlay
	// upper, work and root directories. It must be on a filesystem that
	// can be an overlay upper layer (ext4, xfs, btrfs, tmpfs). Leftovers
	// of a previous run in it (processes, mounts, cgroups) are removed by
	// New. Required.
	StateDir string
	// CgroupParent is the cgroup, relative to the cgroup root, under which
	// each sandbox gets its own; default "/baton". New gives it the host's
	// default CPU weight, so that sandboxes' weights only count among
	// themselves (see package sandbox).
	CgroupParent string
	// UID and GID run the processes started in sandboxes; 0 means the
	// default, 1000. Root cannot be chosen: the sandbox's reaper runs as
	// uid 0 so that no process of the sandbox can signal or inspect it.
	UID, GID int
	// ReaperPath is the baton-reaper executable that runs as each
	// sandbox's PID 1. Empty means ReaperName next to this program's
	// executable if it is there, else this program itself (through
	// Reexec), which costs every sandbox a start of this program and its
	// mounts.
	ReaperPath string
	// LibcontainerExec starts every process through libcontainer (which
	// re-executes this program for each), as without baton-reaper, for
	// comparison. By default the sandbox's reaper starts them.
	LibcontainerExec bool
	// NoMemoryReclaim turns memory reclaim off (for comparison): a
	// shrinking sandbox's limit then only follows down to what is charged
	// to it, and the page cache its departed instances charged stays until
	// the host's memory pressure evicts it. By default a shrinking
	// sandbox's limit is brought to its new size in the background, the
	// kernel reclaiming what is above it, and each instance's group is
	// drained before it is removed.
	NoMemoryReclaim bool
	// Logger receives warnings; nil discards them.
	Logger *slog.Logger
}

const (
	defaultCgroupParent = "/baton"
	defaultUID          = 1000
)
