// Package node is Baton's Node.js language driver: its Lambda Runtime API
// client (baton_runtime.js), which can serve several events at once, and
// how instances of it start.
package node

import (
	_ "embed"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// Name is the runtime's name in function specs.
const Name = "nodejs"

// ClientFile is the installed name of the runtime client.
const ClientFile = "baton_runtime.js"

// maxConcurrency matches the spec's upper bound on concurrency.
const maxConcurrency = 1000

//go:embed baton_runtime.js
var client []byte

// library is the `baton` module functions require (`require('baton').data`),
// installed beside the client in node_modules, which the client adds to
// the module search path after the function's own.
//
//go:embed baton_data.js
var library []byte

// LibraryDir is where the client looks for Baton's modules, relative to
// its own directory (LIBRARY_DIR in baton_runtime.js).
const LibraryDir = "node_modules"

// Driver implements runtimes.Driver.
type Driver struct{}

func (Driver) Name() string      { return Name }
func (Driver) Aliases() []string { return []string{"node"} }

// ValidateHandler wants FILE.EXPORT (nested exports as FILE.a.b).
func (Driver) ValidateHandler(h string) error {
	if h == "" {
		return fmt.Errorf("handler is required for runtime %s (for example index.handler)", Name)
	}
	if !strings.Contains(h, ".") {
		return fmt.Errorf("handler %q must be FILE.FUNCTION (for example index.handler)", h)
	}
	return nil
}

// MaxConcurrency: one Node process serves many events on its event loop.
func (Driver) MaxConcurrency() int { return maxConcurrency }

func (Driver) Interpreter() string { return "node" }

func (Driver) HostInterpreter() (string, error) {
	p, err := exec.LookPath("node")
	if err != nil {
		return "", errors.New("runtime nodejs is not available on this worker: node not found in PATH")
	}
	return p, nil
}

func (Driver) ClientFile() (string, []byte) { return ClientFile, client }

// LibraryFiles returns the `baton` module by its path in the runtimes
// directory.
func (Driver) LibraryFiles() map[string][]byte {
	return map[string][]byte{LibraryDir + "/baton/index.js": library}
}

// RuntimeSocket: the client speaks the Runtime API's socket protocol.
func (Driver) RuntimeSocket() bool { return true }

// Forks is false: Node's threads make fork unsafe, each instance is a
// process.
func (Driver) Forks() bool { return false }

func (Driver) Command(interp, client, _ string) []string { return []string{interp, client} }

func (Driver) Executable() string { return "" }
func (Driver) BaseImage() string  { return "node" }
