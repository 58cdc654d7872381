// Package runtimes is the registry of the languages Baton runs. Each
// language is a Driver in its own package (python, node, provided) that
// carries its Lambda Runtime API client inside the binary; Install puts
// the clients where instances can run them.
package runtimes

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/baton-faas/baton/internal/runtimes/node"
	"github.com/baton-faas/baton/internal/runtimes/provided"
	"github.com/baton-faas/baton/internal/runtimes/python"
)

// drivers is the registry: every language Baton runs.
var drivers = []Driver{python.Driver{}, node.Driver{}, provided.Driver{}}

// File names of the installed clients, for tests and benchmarks that run
// them directly.
const (
	PythonFile = python.ClientFile
	NodeFile   = node.ClientFile
)

// Paths are the installed runtime clients.
type Paths struct {
	Dir     string
	clients map[string]string // runtime name -> installed client
}

// Client returns the installed client of a runtime, "" if it has none.
func (p Paths) Client(runtime string) string { return p.clients[runtime] }

// Install writes every runtime's client into dir, creating it if needed.
// Unchanged files are left alone and changed ones are replaced atomically,
// so it is safe to call while instances are starting from dir.
func Install(dir string) (Paths, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Paths{}, fmt.Errorf("runtimes: create %s: %w", dir, err)
	}
	p := Paths{Dir: dir, clients: map[string]string{}}
	for _, d := range drivers {
		name, content := d.ClientFile()
		if name == "" {
			continue
		}
		path := filepath.Join(dir, name)
		if err := writeAtomic(path, content); err != nil {
			return Paths{}, err
		}
		p.clients[d.Name()] = path
		if lib, ok := d.(libraryDriver); ok {
			for rel, content := range lib.LibraryFiles() {
				path := filepath.Join(dir, filepath.FromSlash(rel))
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					return Paths{}, fmt.Errorf("runtimes: create %s: %w", filepath.Dir(path), err)
				}
				if err := writeAtomic(path, content); err != nil {
					return Paths{}, err
				}
			}
		}
	}
	return p, nil
}

// libraryDriver is a Driver whose client comes with modules for functions
// (Baton's `baton` module: the data layers), installed beside the client
// by their slash-separated paths relative to the runtimes directory.
type libraryDriver interface {
	LibraryFiles() map[string][]byte
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

// Python returns the real python3 binary, or "" when there is none.
func Python() string {
	p, _ := python.Driver{}.HostInterpreter()
	return p
}
