package assemble

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/baton-faas/baton/internal/node"
	"github.com/baton-faas/baton/internal/store"
	"github.com/baton-faas/baton/internal/store/jsstore"
)

// followFunctionVersions tells the node every function's current version
// as the store changes (0 once deleted), so that it drops the zygotes it
// kept for versions that can no longer run (node.Worker.FunctionChanged).
// It returns the function that stops it and waits; with keeping off there
// is nothing to follow.
func followFunctionVersions(ctx context.Context, st *jsstore.Store, wk *node.Worker, keep time.Duration, log *slog.Logger) (stop func()) {
	if keep <= 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			names, err := st.WatchFunctions(ctx)
			if err != nil {
				log.Warn("watch functions for kept zygotes", "err", err)
			}
			for name := range names {
				fn, _, err := st.GetFunction(ctx, name)
				switch {
				case errors.Is(err, store.ErrNotFound):
					wk.FunctionChanged(name, 0)
				case err == nil:
					wk.FunctionChanged(name, fn.Version)
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
