package assemble

import (
	"context"
	"sync/atomic"

	"github.com/baton-faas/baton/internal/controlplane/controller"
	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/node"
	"github.com/baton-faas/baton/internal/workerapi"
)

// serverInvoker is the node's Invoker in `baton server`: the controller
// in the same process. The node is made before the controller (which
// holds it as its worker), so the controller is set once it has started;
// a function cannot run before then.
type serverInvoker struct {
	c atomic.Pointer[controller.Controller]
}

var _ node.Invoker = (*serverInvoker)(nil)

// Invoke implements node.Invoker.
func (s *serverInvoker) Invoke(ctx context.Context, callerApp, function string, payload []byte, byRef bool) (workerapi.Result, error) {
	c := s.c.Load()
	if c == nil {
		return workerapi.Result{}, errdefs.New(errdefs.Unavailable, "starting", "the controller is still starting")
	}
	return c.InvokeFor(ctx, callerApp, function, payload, byRef)
}
