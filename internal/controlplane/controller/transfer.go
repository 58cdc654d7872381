package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/transfer"
	"github.com/baton-faas/baton/internal/workflow/execution"
)

// FetchTransfer pulls the bytes a transfer reference names from the
// worker that keeps them, checked against the reference's size and
// digest: how the workflow engine resolves a reference whose data it must
// look at (a Choice, a path into it, the execution's output). The worker
// verifies the reference; a worker this controller does not know is a
// lost source.
func (c *Controller) FetchTransfer(ctx context.Context, r transfer.Ref) ([]byte, error) {
	c.wmu.Lock()
	l, ok := c.workers[r.Worker]
	c.wmu.Unlock()
	if !ok {
		return nil, fmt.Errorf("buffer %s: worker %s is not connected: %w", r.ID, r.Worker, transfer.ErrSourceLost)
	}
	src, ok := l.api.(transfer.Source)
	if !ok {
		return nil, fmt.Errorf("buffer %s: worker %s serves no pulls: %w", r.ID, r.Worker, transfer.ErrNoTransfers)
	}
	rc, err := src.Pull(ctx, r, r.App)
	if err != nil {
		return nil, fmt.Errorf("pull buffer %s from worker %s: %w", r.ID, r.Worker, err)
	}
	defer rc.Close()
	return transfer.ReadVerified(r, rc)
}

// WorkflowTransfers lets the workflow engine handle the references that
// steps' outputs become (execution.Transfers): it resolves them through
// FetchTransfer and lets more receivers pull them by signing them again
// with the cluster's key.
type WorkflowTransfers struct {
	C      *Controller
	Signer *transfer.Signer
}

var _ execution.Transfers = WorkflowTransfers{}

// IsRef implements execution.Transfers.
func (WorkflowTransfers) IsRef(v any) bool { _, ok := transfer.RefOf(v); return ok }

// Contains implements execution.Transfers.
func (WorkflowTransfers) Contains(v any) bool { return transfer.Contains(v) }

// Resolve implements execution.Transfers.
func (t WorkflowTransfers) Resolve(ctx context.Context, v any) (any, error) {
	return transfer.Replace(v, func(r transfer.Ref) (any, error) {
		if err := t.Signer.Verify(r, "", time.Now()); err != nil {
			_, code := errdefs.Classify(err)
			t.C.log.Warn("transfer reference refused", "code", code, "buffer", r.ID, "source", r.Worker, "app", r.App, "by", "workflow engine", "err", err)
			return nil, transferFailure(err)
		}
		b, err := t.C.FetchTransfer(ctx, r)
		if err != nil {
			return nil, transferFailure(err)
		}
		return transfer.Decode(b), nil
	})
}

// Share implements execution.Transfers.
func (t WorkflowTransfers) Share(vs []any, n int) []any {
	// Only references that verify are signed again: a forged one (from
	// an execution's input, say) stays as it is, for the worker to refuse.
	now := time.Now()
	count := map[string]int{}
	for _, v := range vs {
		transfer.Walk(v, func(r transfer.Ref) bool {
			if t.Signer.Verify(r, "", now) == nil {
				count[r.MAC]++
			}
			return true
		})
	}
	if len(count) == 0 {
		return vs
	}
	out := make([]any, len(vs))
	for i, v := range vs {
		nv, err := transfer.Replace(v, func(r transfer.Ref) (any, error) {
			// A verified MAC names its fields; an unverified one may be a
			// copy of a genuine MAC over altered fields, so each is checked.
			k := count[r.MAC]
			if k == 0 || t.Signer.Verify(r, "", now) != nil {
				return transfer.MarkerValue(r), nil
			}
			return transfer.MarkerValue(t.Signer.WithPulls(r, r.Pulls*k*n)), nil
		})
		if err != nil {
			nv = v
		}
		out[i] = nv
	}
	return out
}

// Error names a workflow sees for transfers that failed (Retry and Catch
// can name them; a Catch of Baton.TransferSourceLost can go back to the
// state that produced the data, to run it again).
const (
	ErrorTransferSourceLost = "Baton.TransferSourceLost"
	ErrorTransferRefused    = "Baton.TransferRefused"
	ErrorTransferCorrupt    = "Baton.TransferCorrupt"
)

// transferName is the workflow's name of a transfer error ("": not one).
func transferName(err error) string {
	switch {
	case errors.Is(err, transfer.ErrSourceLost):
		return ErrorTransferSourceLost
	case errors.Is(err, transfer.ErrCorrupt):
		return ErrorTransferCorrupt
	case errors.Is(err, transfer.ErrForged), errors.Is(err, transfer.ErrExpired), errors.Is(err, transfer.ErrReplayed),
		errors.Is(err, transfer.ErrWrongApp), errors.Is(err, transfer.ErrNoTransfers):
		return ErrorTransferRefused
	}
	return ""
}

// transferFailure is a transfer error as the workflow sees it.
func transferFailure(err error) error {
	name := transferName(err)
	if name == "" {
		// An unreachable worker is a lost source too.
		if errdefs.Is(err, errdefs.Unavailable) {
			name = ErrorTransferSourceLost
		} else {
			return err
		}
	}
	return &execution.Failure{Name: name, Cause: err.Error()}
}

// stepInput is a step's input as its function may receive it: references
// to data of another app than the function's are resolved here (the
// controller pulls the data and passes it inline), since a worker refuses
// a reference presented by another app. Data crosses apps only through
// the controller, as it would without direct transfers.
func (c *Controller) stepInput(ctx context.Context, name string, input []byte) ([]byte, error) {
	if !transfer.MayContain(input) {
		return input, nil
	}
	fn, ok := c.knownFunction(name)
	if !ok {
		return input, nil
	}
	app := function.AppOf(name, fn.Spec)
	if r, ok := transfer.ParseMarker(input); ok {
		if r.App == app {
			return input, nil
		}
		b, err := c.FetchTransfer(ctx, r)
		if err != nil {
			return nil, fmt.Errorf("pass data of app %s to %s (app %s): %w", r.App, name, app, err)
		}
		return b, nil
	}
	var v any
	if err := json.Unmarshal(input, &v); err != nil {
		return input, nil
	}
	other := false
	transfer.Walk(v, func(r transfer.Ref) bool { other = r.App != app; return !other })
	if !other {
		return input, nil
	}
	out, err := transfer.Replace(v, func(r transfer.Ref) (any, error) {
		if r.App == app {
			return transfer.MarkerValue(r), nil
		}
		b, err := c.FetchTransfer(ctx, r)
		if err != nil {
			return nil, fmt.Errorf("pass data of app %s to %s (app %s): %w", r.App, name, app, err)
		}
		if json.Valid(b) {
			return json.RawMessage(b), nil
		}
		return string(b), nil
	})
	if err != nil {
		return nil, err
	}
	return json.Marshal(out)
}
