package benchmarks

import (
	"os"
	"testing"

	"github.com/baton-faas/baton/internal/testserver"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testserver.RemoveBinary()
	os.Exit(code)
}
