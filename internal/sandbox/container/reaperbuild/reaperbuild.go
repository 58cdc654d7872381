// Package reaperbuild builds cmd/baton-reaper for tests and benchmarks of
// the container runtime, whose test binaries have no baton-reaper next to
// them.
package reaperbuild

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// Build builds cmd/baton-reaper into dir and returns its path. It needs
// the go command (in PATH or in this toolchain's GOROOT) and the module's
// source, which tests have.
func Build(dir string) (string, error) {
	goTool := "go"
	if _, err := exec.LookPath(goTool); err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("build baton-reaper: cannot find the module's source")
	}
	out := filepath.Join(dir, "baton-reaper")
	cmd := exec.Command(goTool, "build", "-o", out, "./cmd/baton-reaper")
	cmd.Dir = filepath.Join(filepath.Dir(file), "..", "..", "..", "..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build baton-reaper: %w\n%s", err, b)
	}
	return out, nil
}
