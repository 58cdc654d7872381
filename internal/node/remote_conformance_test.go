package node

import (
	"context"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/runtimes"
	"github.com/baton-faas/baton/internal/sandbox/process"
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
		code := workerapitest.NewPythonCode()
		w, err := New(Options{ID: "node-test", DataDir: t.TempDir(), Sandboxes: process.New(), Code: code,
			EventBuffer: workerapitest.EventBuffer})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := w.Close(ctx); err != nil {
				t.Errorf("close: %v", err)
			}
		})
		return remotetest.Loopback(t, w), code
	})
}
