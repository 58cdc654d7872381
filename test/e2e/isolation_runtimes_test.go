package e2e

import (
	"os/exec"
	"testing"

	"github.com/baton-faas/baton/internal/function"
)

// TestIsolationAppMixesRuntimes: functions of one app share its sandbox
// whatever their runtimes (Python, Node, provided): the sandbox's root
// holds every host runtime.
func TestIsolationAppMixesRuntimes(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node not installed; the Node side of the app cannot run")
	}
	srv := startContainerServer(t)
	py := pySpec("procs")
	py.App = "mixed"
	deploy(t, srv, "mixed-py", py, isoDir)
	deploy(t, srv, "mixed-node", function.Spec{Runtime: function.RuntimeNode, Handler: "ns.handler", App: "mixed"}, "testdata/isonode")
	other := function.Spec{Runtime: function.RuntimeNode, Handler: "ns.handler", App: "other"}
	deploy(t, srv, "other-node", other, "testdata/isonode")

	var p, n, o procsResult
	mustInvoke(t, srv, "mixed-py", nil, &p)
	mustInvoke(t, srv, "mixed-node", nil, &n)
	mustInvoke(t, srv, "other-node", nil, &o)
	if p.Pidns != n.Pidns || p.Mntns != n.Mntns || p.Netns != n.Netns || p.Ipcns != n.Ipcns || p.Utsns != n.Utsns {
		t.Errorf("the Python and Node functions of app mixed are in different sandboxes:\n%s\n%s", p, n)
	}
	if pn, ok := p.find(n.Pid); !ok || pn.Function != "mixed-node" {
		// The Python function's process list was taken before the Node
		// instance started; look again.
		var again procsResult
		mustInvoke(t, srv, "mixed-py", nil, &again)
		if pn, ok := again.find(n.Pid); !ok || pn.Function != "mixed-node" {
			t.Errorf("mixed-py does not see mixed-node's instance (pid %d):\n%s", n.Pid, again)
		}
	}
	if o.Pidns == n.Pidns || o.Mntns == n.Mntns {
		t.Errorf("a Node function of another app shares app mixed's sandbox: %s", o)
	}
}
