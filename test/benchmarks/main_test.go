package benchmarks

import (
	"os"
	"testing"

	"github.com/baton-faas/baton/internal/sandbox/container"
	"github.com/baton-faas/baton/test/harness"
)

func TestMain(m *testing.M) {
	// The container sandboxes of BenchmarkSandbox re-execute this test
	// binary (libcontainer's init, the sandbox's reaper): play that role
	// if this process is one of them.
	container.Reexec()
	code := m.Run()
	harness.RemoveBinary()
	os.Exit(code)
}
