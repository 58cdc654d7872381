package node

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/sandbox/fake"
	"github.com/baton-faas/baton/internal/transfer"
	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/workerapitest"
)

// loopInvoker plays the control plane and the callee's worker: it
// resolves the payload as the callee's worker would, records what
// crossed it, and answers the resolved payload reversed, kept as a
// reference when the caller takes one.
type loopInvoker struct {
	x    *transfer.Exchange
	sent [][]byte
	app  string
}

func (l *loopInvoker) Invoke(ctx context.Context, callerApp, fn string, payload []byte, byRef bool) (workerapi.Result, error) {
	l.sent = append(l.sent, payload)
	l.app = callerApp
	if fn == "missing" {
		return workerapi.Result{}, errdefs.New(errdefs.NotFound, "function_not_found", "function not found")
	}
	p, err := l.x.Resolve(ctx, payload, callerApp)
	if err != nil {
		return workerapi.Result{}, err
	}
	out := bytes.Clone(p)
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	if byRef {
		if r, ok := l.x.Keep(callerApp, out); ok {
			return workerapi.Result{Ref: &r}, nil
		}
	}
	return workerapi.Result{Payload: out}, nil
}

// A function's invoke sends a payload above the transfer threshold as a
// reference and gets a large result back resolved; a small one goes
// inline; platform errors pass through classified.
func TestAppInvokerTransfers(t *testing.T) {
	fr, err := fake.New(fake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := transfer.NewSigner(bytes.Repeat([]byte{5}, transfer.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	store, err := transfer.NewStore(transfer.StoreConfig{MemoryBytes: 1 << 20, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	x, err := transfer.NewExchange(transfer.ExchangeConfig{Worker: "node-i", Threshold: 1024, Signer: signer, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	loop := &loopInvoker{x: x}
	w, err := New(Options{ID: "node-i", DataDir: t.TempDir(), Sandboxes: fr, Code: workerapitest.NewPythonCode(), Transfer: x, Invoker: loop})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inv := w.invokerFor(workerapi.InstanceSpec{Function: "caller", App: "shop"})

	small := []byte(`"abc"`)
	res, err := inv.Invoke(ctx, "callee", small)
	if err != nil || string(res.Payload) != `"cba"` {
		t.Fatalf("small payload: %q, %v", res.Payload, err)
	}
	if !bytes.Equal(loop.sent[0], small) || loop.app != "shop" {
		t.Fatalf("small payload crossed as %q for app %q, want it inline for shop", loop.sent[0], loop.app)
	}

	big := bytes.Repeat([]byte("0123456789"), 1000)
	res, err = inv.Invoke(ctx, "callee", big)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := transfer.ParseMarker(loop.sent[1])
	if !ok || r.Size != int64(len(big)) || r.App != "shop" || len(loop.sent[1]) > 1024 {
		t.Fatalf("large payload crossed as %d bytes (%q), want a reference to %d bytes", len(loop.sent[1]), loop.sent[1][:min(len(loop.sent[1]), 80)], len(big))
	}
	if len(res.Payload) != len(big) || res.Payload[0] != '9' || res.Payload[len(big)-1] != '0' {
		t.Fatalf("large result: %d bytes, want the %d reversed", len(res.Payload), len(big))
	}
	// Both buffers were pulled once and are gone.
	if n, _, _ := store.Usage(); n != 0 {
		t.Errorf("%d buffers still kept after their pulls", n)
	}

	_, err = inv.Invoke(ctx, "missing", small)
	if !errdefs.Is(err, errdefs.NotFound) {
		t.Fatalf("unknown function: %v, want a NotFound error", err)
	}

	// Without an Invoker, instances get none (the route answers 501).
	w2, err := New(Options{ID: "node-j", DataDir: t.TempDir(), Sandboxes: fr, Code: workerapitest.NewPythonCode()})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close(context.Background())
	if got := w2.invokerFor(workerapi.InstanceSpec{Function: "caller"}); got != nil {
		t.Fatalf("invoker without Options.Invoker: %v", got)
	}
}
