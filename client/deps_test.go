package client_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestClientImportsOnlyTheWireTypes keeps the SDK free of the server's
// packages: a client must not pull in the control plane.
func TestClientImportsOnlyTheWireTypes(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Skipf("go list is not available here: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/baton-faas/baton/") &&
			pkg != "github.com/baton-faas/baton/client" && pkg != "github.com/baton-faas/baton/api/v1" {
			t.Errorf("client depends on %s; it may use only api/v1", pkg)
		}
	}
}
