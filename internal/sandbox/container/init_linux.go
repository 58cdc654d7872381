//go:build linux && cgo

package container

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"

	"github.com/opencontainers/runc/libcontainer"
	_ "github.com/opencontainers/runc/libcontainer/nsenter" // joins namespaces before the Go runtime starts
	"golang.org/x/sys/unix"
)

// Hidden first arguments of this binary's roles inside a sandbox.
const (
	reaperArg   = "__baton_sandbox_reaper"
	selfTestArg = "__baton_sandbox_selftest"
	selfTestOK  = "sandbox ok"
)

var reexecCalled atomic.Bool

// Reexec must be called first thing in main (and in TestMain) of every
// program that uses this package. When the process is one of the
// sandbox's helpers it plays that role and never returns:
//   - libcontainer's re-executed init ("init", recognised by libcontainer's
//     environment), which sets up a container process and execs it;
//   - the sandbox's PID 1, a reaper;
//   - New's test process.
//
// Otherwise it returns at once.
func Reexec() {
	reexecCalled.Store(true)
	if len(os.Args) < 2 {
		return
	}
	switch os.Args[1] {
	case "init":
		if os.Getenv("_LIBCONTAINER_INITPIPE") == "" {
			return
		}
		// A process joining a running sandbox gets its seccomp filter
		// here, before libcontainer's init has read anything from the
		// container: the filter survives the final execve. Only the
		// container's first process ("standard" init) must still mount
		// and pivot_root; the reaper it becomes installs the filter
		// itself.
		if os.Getenv("_LIBCONTAINER_INITTYPE") != "standard" {
			if err := installSeccomp(); err != nil {
				fmt.Fprintln(os.Stderr, "baton sandbox:", err)
				os.Exit(255)
			}
		}
		libcontainer.Init() // does not return
	case reaperArg:
		os.Exit(reaper())
	case selfTestArg:
		os.Exit(selfTest())
	}
}

// reaper is the sandbox's PID 1: it reaps the processes re-parented to it
// and exits on SIGTERM or SIGINT. Signals sent from inside the sandbox
// never reach it: it runs as uid 0 (without capabilities) and the
// sandbox's processes do not.
func reaper() int {
	if err := installSeccomp(); err != nil {
		fmt.Fprintln(os.Stderr, "baton sandbox reaper:", err)
		return 1
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT)
	for {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || pid <= 0 {
				break
			}
		}
		if sig := <-sigs; sig != unix.SIGCHLD {
			return 0
		}
	}
}

// selfTest runs inside New's test sandbox and reports what it sees.
func selfTest() int {
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
	fmt.Println(selfTestOK)
	return 0
}
