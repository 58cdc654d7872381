package node

import (
	"testing"

	"github.com/baton-faas/baton/internal/runtimes"
	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/remote/remotetest"
	"github.com/baton-faas/baton/internal/workerapi/workerapitest"
)

// The node with process sandboxes, driven through the network transport
// (gRPC with mutual TLS over loopback TCP), passes the worker API's
// conformance suite as it does in process.
func TestConformanceRemoteProcess(t *testing.T) {
	if runtimes.Python() == "" {
		t.Skip("python3 is not installed: the node runs the suite's functions in Python")
	}
	workerapitest.Run(t, func(t *testing.T) (workerapi.Worker, workerapitest.Deployer) {
		w, code := newConformanceNode(t, false)
		return remotetest.Loopback(t, w), code
	})
}
