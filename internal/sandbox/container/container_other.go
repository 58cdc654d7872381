//go:build !linux || !cgo

package container

import (
	"context"
	"fmt"
	"runtime"

	"github.com/baton-faas/baton/internal/sandbox"
)

// Runtime is unavailable in this build.
type Runtime struct{}

// New reports that this build has no container sandboxes: they need Linux
// and cgo (libcontainer's nsenter is C code).
func New(Options) (*Runtime, error) {
	return nil, fmt.Errorf("%w: this binary is built for %s without cgo or Linux support", ErrUnavailable, runtime.GOOS)
}

// Reexec does nothing in this build.
func Reexec() {}

// Isolation implements sandbox.Runtime.
func (*Runtime) Isolation() string { return "container (unavailable)" }

// Capabilities implements sandbox.Runtime.
func (*Runtime) Capabilities() sandbox.Capabilities { return sandbox.Capabilities{} }

// Create implements sandbox.Runtime.
func (*Runtime) Create(context.Context, sandbox.Spec) (sandbox.Sandbox, error) {
	return nil, ErrUnavailable
}
