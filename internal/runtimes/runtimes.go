// Package runtimes carries Baton's own Lambda Runtime API clients (Python
// and Node) inside the binary and installs them where instances can run
// them.
package runtimes

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// File names of the installed scripts.
const (
	PythonFile = "baton_runtime.py"
	NodeFile   = "baton_runtime.js"
)

//go:embed python/baton_runtime.py
var pythonSource []byte

//go:embed node/baton_runtime.js
var nodeSource []byte

// Paths are the installed runtime scripts.
type Paths struct {
	Python string // run as: python3 -u <Python> [zygote]
	Node   string // run as: node <Node>
}

// Install writes the runtime scripts into dir, creating it if needed.
// Unchanged files are left alone and changed ones are replaced atomically,
// so it is safe to call while instances are starting from dir.
func Install(dir string) (Paths, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Paths{}, fmt.Errorf("runtimes: create %s: %w", dir, err)
	}
	p := Paths{
		Python: filepath.Join(dir, PythonFile),
		Node:   filepath.Join(dir, NodeFile),
	}
	if err := writeAtomic(p.Python, pythonSource); err != nil {
		return Paths{}, err
	}
	if err := writeAtomic(p.Node, nodeSource); err != nil {
		return Paths{}, err
	}
	return p, nil
}

func writeAtomic(path string, content []byte) error {
	if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, content) {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() == 0o644 {
			return nil
		}
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("runtimes: read %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("runtimes: install %s: %w", path, err)
	}
	// Removing is a no-op after a successful rename.
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		return fmt.Errorf("runtimes: write %s: %w", tmp.Name(), err)
	}
	// CreateTemp makes 0600 files; instances may run as another user.
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("runtimes: chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("runtimes: close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("runtimes: install %s: %w", path, err)
	}
	return nil
}

// Python returns the real python3 binary, or "" when there is none. PATH
// may hold a wrapper (pyenv's shims are shell scripts) that would add its
// own start-up time to every cold start, so the interpreter is asked for
// its own path.
func Python() string {
	p, err := exec.LookPath("python3")
	if err != nil {
		return ""
	}
	out, err := exec.Command(p, "-c", "import sys; print(sys.executable)").Output()
	if err != nil {
		return p
	}
	if real := strings.TrimSpace(string(out)); filepath.IsAbs(real) {
		return real
	}
	return p
}
