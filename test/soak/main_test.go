package soak

import (
	"os"
	"testing"

	"github.com/baton-faas/baton/test/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.RemoveBinary()
	os.Exit(code)
}
