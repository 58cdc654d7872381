//go:build linux && cgo

package container

import (
	"fmt"
	"os"
	"sync/atomic"

	"github.com/opencontainers/runc/libcontainer"
	_ "github.com/opencontainers/runc/libcontainer/nsenter" // joins namespaces before the Go runtime starts

	"github.com/baton-faas/baton/internal/sandbox/container/pid1"
)

// Hidden first arguments of the roles inside a sandbox (see package pid1).
const (
	reaperArg   = pid1.ReaperArg
	selfTestArg = pid1.SelfTestArg
	selfTestOK  = pid1.SelfTestOK
)

var reexecCalled atomic.Bool

// Reexec must be called first thing in main (and in TestMain) of every
// program that uses this package. When the process is one of the
// sandbox's helpers it plays that role and never returns:
//   - libcontainer's re-executed init ("init", recognised by libcontainer's
//     environment), which sets up a container process and execs it;
//   - the sandbox's PID 1, a reaper, and New's test process, where the
//     runtime found no baton-reaper executable (see package pid1).
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
			if err := pid1.InstallSeccomp(); err != nil {
				fmt.Fprintln(os.Stderr, "baton sandbox:", err)
				os.Exit(255)
			}
		}
		libcontainer.Init() // does not return
	case reaperArg, selfTestArg:
		code, _ := pid1.Run(os.Args)
		os.Exit(code)
	}
}
