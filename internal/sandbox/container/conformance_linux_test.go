//go:build linux && cgo

package container

import (
	"testing"

	"github.com/baton-faas/baton/internal/sandbox"
	"github.com/baton-faas/baton/internal/sandbox/sandboxtest"
)

// TestConformance skips (with the reason) where containers cannot run:
// they need root and the kernel's namespaces and cgroups.
func TestConformance(t *testing.T) {
	requireContainers(t)
	sandboxtest.Run(t, func(t *testing.T) sandbox.Runtime { return newRuntime(t) },
		sandboxtest.WithSpec(func(t *testing.T, spec *sandbox.Spec) {
			// The host's /usr (shell, python3) on a skeleton root.
			spec.RootLowerDirs = []string{baseLayer(t)}
			spec.Mounts = append(spec.Mounts, sandbox.Mount{Source: "/usr", Target: "/usr"})
		}))
}
