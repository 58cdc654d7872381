package assemble

import (
	"os"
	"testing"

	"github.com/baton-faas/baton/internal/sandbox/container"
)

func TestMain(m *testing.M) {
	// Container sandboxes re-execute this test binary (libcontainer's
	// init, the sandbox's reaper): play that role if this process is one.
	container.Reexec()
	os.Exit(m.Run())
}
