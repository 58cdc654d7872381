// Command baton is the Baton serverless platform: server and client in one
// binary.
package main

import (
	"os"
	"path/filepath"

	"github.com/baton-faas/baton/internal/bench/synthetic"
	"github.com/baton-faas/baton/internal/cli"
	"github.com/baton-faas/baton/internal/sandbox/container"
)

func main() {
	container.Reexec() // sandbox helper roles (libcontainer init, reaper) do not return
	// Deployed as a provided-runtime function, the binary is named bootstrap
	// and serves the Go synthetic function, so benchmarks need no Go
	// toolchain.
	if filepath.Base(os.Args[0]) == "bootstrap" {
		synthetic.RunGo()
		return
	}
	os.Exit(cli.Execute())
}
