// Command baton-reaper is the PID 1 of Baton's container sandboxes (and the
// container runtime's self-test). It is a separate, small, statically linked
// program so that starting a sandbox does not start the whole baton binary
// a second time, and so that it runs in any image without mounts: the
// runtime looks for it next to the baton executable and, without it, uses
// baton itself. It is not meant to be run by hand.
package main

import (
	"fmt"
	"os"

	"github.com/baton-faas/baton/internal/sandbox/container/pid1"
)

func main() {
	code, ok := pid1.Run(os.Args)
	if !ok {
		fmt.Fprintln(os.Stderr, "baton-reaper runs inside Baton's container sandboxes and is started by baton server")
		os.Exit(2)
	}
	os.Exit(code)
}
