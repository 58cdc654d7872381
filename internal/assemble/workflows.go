package assemble

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/cluster/membership"
	"github.com/baton-faas/baton/internal/controlplane/controller"
	"github.com/baton-faas/baton/internal/transfer"
	"github.com/baton-faas/baton/internal/workflow/engine"
	"github.com/baton-faas/baton/internal/workflow/journal"
	wfregistry "github.com/baton-faas/baton/internal/workflow/registry"
)

// WorkflowConfig tunes workflows in `baton server` and `baton controller`.
type WorkflowConfig struct {
	// Retention is how long executions and their histories are kept
	// (0: 7 days).
	Retention time.Duration
	// Bus "global" sends every step over the global bus (JetStream),
	// even when the local one could take it: to compare the two. ""
	// or "auto": the local bus where it can.
	Bus string
}

// openWorkflows opens the workflow registry, journal and history and
// starts the engine that runs this controller's executions. alive (nil:
// none but self) says whether another runner still holds its executions.
// signer (nil: direct transfers off) lets steps' large outputs stay on
// their workers.
func openWorkflows(ctx context.Context, nc *nats.Conn, ctrl *controller.Controller, self string, members *membership.Members,
	cfg WorkflowConfig, signer *transfer.Signer, log *slog.Logger) (*engine.Engine, func(), error) {
	retention := cfg.Retention
	if retention <= 0 {
		retention = 7 * 24 * time.Hour
	}
	wlog := log.With("component", "workflows")
	reg, err := wfregistry.Open(ctx, nc, wlog)
	if err != nil {
		return nil, nil, err
	}
	jnl, err := journal.Open(ctx, nc, retention, wlog)
	if err != nil {
		return nil, nil, err
	}
	hist, err := journal.OpenHistory(ctx, nc, retention, wlog)
	if err != nil {
		jnl.Close()
		return nil, nil, err
	}
	var alive func(string) bool
	if members != nil {
		alive = func(holder string) bool {
			if holder == self {
				return true
			}
			gctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := members.Get(gctx, holder)
			// Only a node the membership no longer has is gone; an
			// unanswered read proves nothing.
			return !errors.Is(err, jetstream.ErrKeyNotFound)
		}
	}
	opts := engine.Options{Self: self, Alive: alive, Logger: log}
	if signer != nil {
		opts.Transfers = controller.WorkflowTransfers{C: ctrl, Signer: signer}
	}
	eng := engine.New(reg, jnl, hist, controller.WorkflowSteps{C: ctrl, ForceGlobal: cfg.Bus == "global", Transfers: signer != nil}, opts)
	eng.Run()
	return eng, func() {
		eng.Close()
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		hist.Flush(fctx)
		cancel()
		jnl.Close()
	}, nil
}
