package node

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/baton-faas/baton/internal/transfer"
	"github.com/baton-faas/baton/internal/workerapi"
)

// Direct transfers (XDT, package transfer) on the invoke path: a payload
// that is a reference is resolved before the function sees it (a memory
// hand-off when this worker keeps the bytes, else a pull from the worker
// that does), and a large result of an invocation whose caller takes a
// reference is kept here and answered with one. Functions never see a
// reference.

// resolvePayload returns the payload the function must see.
func (w *Worker) resolvePayload(ctx context.Context, in *instance, inv workerapi.Invocation) ([]byte, error) {
	if !transfer.MayContain(inv.Payload) {
		return inv.Payload, nil
	}
	x := w.opts.Transfer
	if x == nil {
		if _, ok := transfer.ParseMarker(inv.Payload); ok {
			return nil, fmt.Errorf("invocation %s carries a transfer reference: %w", inv.ID, transfer.ErrNoTransfers)
		}
		return inv.Payload, nil
	}
	began := time.Now()
	p, err := x.Resolve(ctx, inv.Payload, in.spec.App)
	if err != nil {
		return nil, fmt.Errorf("invocation %s of %s: resolve its transferred input: %w", inv.ID, in.spec.Function, err)
	}
	w.log.Debug("transferred input resolved", "invocation", inv.ID, "function", in.spec.Function, "bytes", len(p), "took", time.Since(began))
	return p, nil
}

// keepResult keeps a large result of an invocation that takes references.
func (w *Worker) keepResult(in *instance, inv workerapi.Invocation, res *workerapi.Result) {
	x := w.opts.Transfer
	if x == nil || !inv.ByRef || res.Error != nil {
		return
	}
	if r, ok := x.Keep(in.spec.App, res.Payload); ok {
		res.Ref, res.Payload = &r, nil
	}
}

// Pull serves one pull of a buffer this worker keeps (transfer.Source):
// the worker API's Pull, called by the receiving worker or a controller.
func (w *Worker) Pull(ctx context.Context, r transfer.Ref, app string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pull %s: %w", r.ID, err)
	}
	x := w.opts.Transfer
	if x == nil {
		return nil, fmt.Errorf("pull %s: %w", r.ID, transfer.ErrNoTransfers)
	}
	p, err := x.Serve(r, app)
	if err != nil {
		return nil, err
	}
	rc, err := p.Open()
	if err != nil {
		p.Close()
		return nil, err
	}
	return pullReader{rc, p}, nil
}

// pullReader ends the pull when its reader is closed.
type pullReader struct {
	io.ReadCloser
	p *transfer.Pull
}

func (r pullReader) Close() error {
	err := r.ReadCloser.Close()
	r.p.Close()
	return err
}

// sweepTransfers frees expired buffers until the worker closes (a pull
// also sweeps, but a buffer nobody pulls must not wait for one).
func (w *Worker) sweepTransfers() {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-w.ctx.Done():
			w.opts.Transfer.Store().Free()
			return
		case <-t.C:
			w.opts.Transfer.Store().Sweep()
		}
	}
}

var _ transfer.Source = (*Worker)(nil)
