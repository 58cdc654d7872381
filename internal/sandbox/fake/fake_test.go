package fake

import (
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/sandbox"
	"github.com/baton-faas/baton/internal/sandbox/sandboxtest"
)

func TestConformance(t *testing.T) {
	sandboxtest.Run(t, func(t *testing.T) sandbox.Runtime {
		r, err := New(Options{StartLatency: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return r
	})
}
