// Package python is Baton's Python language driver: its Lambda Runtime API
// client (baton_runtime.py), which also serves as the app's zygote, and
// how instances of it start.
package python

import (
	"embed"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// Name is the runtime's name in function specs.
const Name = "python3"

// ClientFile is the installed name of the runtime client.
const ClientFile = "baton_runtime.py"

//go:embed baton_runtime.py
var client []byte

// library is the `baton` package functions import (`from baton import
// data`), installed under LibraryDir beside the client, which puts that
// directory at the end of sys.path.
//
//go:embed baton/*.py
var library embed.FS

// LibraryDir is where the client looks for Baton's modules, relative to
// its own directory (LIBRARY_DIR in baton_runtime.py).
const LibraryDir = "python"

// Driver implements runtimes.Driver.
type Driver struct{}

func (Driver) Name() string      { return Name }
func (Driver) Aliases() []string { return []string{"python"} }

// ValidateHandler wants MODULE.FUNCTION.
func (Driver) ValidateHandler(h string) error {
	if h == "" {
		return fmt.Errorf("handler is required for runtime %s (for example app.handler)", Name)
	}
	if !strings.Contains(h, ".") {
		return fmt.Errorf("handler %q must be FILE.FUNCTION (for example app.handler)", h)
	}
	return nil
}

// MaxConcurrency is 1: a Python instance serves one event at a time and
// Baton scales it by adding instances (cheap forks of the zygote).
func (Driver) MaxConcurrency() int { return 1 }

func (Driver) Interpreter() string { return "python3" }

// HostInterpreter returns the real python3 binary. PATH may hold a wrapper
// (pyenv's shims are shell scripts) that would add its own start-up time
// to every cold start, so the interpreter is asked for its own path.
func (Driver) HostInterpreter() (string, error) {
	p, err := exec.LookPath("python3")
	if err != nil {
		return "", errors.New("runtime python3 is not available on this worker: python3 not found in PATH")
	}
	out, err := exec.Command(p, "-c", "import sys; print(sys.executable)").Output()
	if err != nil {
		return p, nil
	}
	if real := strings.TrimSpace(string(out)); filepath.IsAbs(real) {
		return real, nil
	}
	return p, nil
}

func (Driver) ClientFile() (string, []byte) { return ClientFile, client }

// LibraryFiles returns the `baton` package's files by their path in the
// runtimes directory.
func (Driver) LibraryFiles() map[string][]byte {
	files := map[string][]byte{}
	entries, _ := library.ReadDir("baton") // embedded: cannot fail
	for _, e := range entries {
		b, _ := library.ReadFile("baton/" + e.Name())
		files[LibraryDir+"/baton/"+e.Name()] = b
	}
	return files
}

// RuntimeSocket: the client speaks the Runtime API's socket protocol.
func (Driver) RuntimeSocket() bool { return true }

// Forks: instances are forks of a zygote that imported the handler once.
func (Driver) Forks() bool { return true }

// Command starts the zygote; -u keeps output unbuffered so that it is
// attributed to the invocation that wrote it.
func (Driver) Command(interp, client, _ string) []string {
	return []string{interp, "-u", client, "zygote"}
}

func (Driver) Executable() string { return "" }
func (Driver) BaseImage() string  { return "python" }
