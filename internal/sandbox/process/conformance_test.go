//go:build linux

package process

import (
	"testing"

	"github.com/baton-faas/baton/internal/sandbox"
	"github.com/baton-faas/baton/internal/sandbox/sandboxtest"
)

func TestConformance(t *testing.T) {
	sandboxtest.Run(t, func(*testing.T) sandbox.Runtime { return New() })
}
