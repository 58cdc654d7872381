//go:build linux

// Package pid1 is the code that runs inside a container sandbox as its PID 1
// (a reaper) and as the runtime's self-test, plus the sandbox's seccomp
// filter.
//
// It is pure Go and imports nothing that needs cgo, so that the small
// command cmd/baton-reaper, built from it, is a static executable: the
// container runtime can exec it from a file descriptor in any image (with
// or without a C library) and needs no mounts for it. A binary that is
// not statically linked cannot be run that way; the runtime then falls
// back to bind-mounting its own executable, which plays the same roles
// through container.Reexec.
package pid1

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"

	"golang.org/x/sys/unix"
)

// Hidden first arguments that select a role.
const (
	ReaperArg   = "__baton_sandbox_reaper"
	SelfTestArg = "__baton_sandbox_selftest"
	// SelfTestOK is what a successful self-test prints.
	SelfTestOK = "sandbox ok"
)

// ExecFd is the descriptor from which the container runtime execs
// baton-reaper (the first of a process's extra files), and ExecPath its
// path in the process.
const (
	ExecFd   = 3
	ExecPath = "/proc/self/fd/3"
)

// Run plays the role that args[1] names and returns the exit code; ok is
// false when args name no role.
func Run(args []string) (code int, ok bool) {
	if len(args) < 2 {
		return 0, false
	}
	switch args[1] {
	case ReaperArg:
		return Reaper(len(args) > 2 && args[2] == SpawnArg), true
	case ExecArg:
		if len(args) < 3 {
			return 126, true
		}
		return Exec(args[2:]), true
	case SelfTestArg:
		return SelfTest(), true
	}
	return 0, false
}

// Reaper is the sandbox's PID 1: it reaps the processes re-parented to it
// and exits on SIGTERM or SIGINT. Signals sent from inside the sandbox
// never reach it: it runs as uid 0 and the sandbox's processes do not.
// With spawn it also starts processes for the runtime (see ExecArg) over
// the control socket at ControlFd; the runtime then lets it keep
// CAP_SETUID, CAP_SETGID and CAP_SETPCAP (and no other capability) to
// give them their user and an empty bounding set.
func Reaper(spawn bool) int {
	if err := InstallSeccomp(); err != nil {
		fmt.Fprintln(os.Stderr, "baton sandbox reaper:", err)
		return 1
	}
	// A reaper exec'd from a descriptor still holds it; it needs it no
	// more. (Only that one: descriptors the Go runtime or package
	// initialisation opened are not ours to close.)
	if os.Args[0] == ExecPath {
		_ = unix.Close(ExecFd)
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT)
	s := &spawner{fd: ControlFd}
	if spawn {
		if err := s.listen(); err != nil {
			fmt.Fprintln(os.Stderr, "baton sandbox reaper: control socket:", err)
			return 1
		}
		s.children = map[int]uint64{}
		go s.serve()
	}
	for {
		s.reap()
		if sig := <-sigs; sig != unix.SIGCHLD {
			return 0
		}
	}
}

// SelfTest runs inside the runtime's test sandbox and reports what it
// sees: SelfTestOK, or the problems found.
func SelfTest() int {
	var problems []string
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		problems = append(problems, fmt.Sprintf("no /proc: %v", err))
	}
	for _, want := range []string{"Seccomp:\t2", "NoNewPrivs:\t1", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000"} {
		if !strings.Contains(string(status), want+"\n") {
			problems = append(problems, fmt.Sprintf("status lacks %q", want))
		}
	}
	if err := unix.Unshare(unix.CLONE_NEWUSER); !errors.Is(err, unix.EPERM) {
		problems = append(problems, fmt.Sprintf("unshare(CLONE_NEWUSER) returned %v, want EPERM", err))
	}
	if os.Getpid() == 1 {
		problems = append(problems, "the test process is PID 1")
	}
	if len(problems) > 0 {
		fmt.Println(strings.Join(problems, "; "))
		return 1
	}
	fmt.Println(SelfTestOK)
	return 0
}
