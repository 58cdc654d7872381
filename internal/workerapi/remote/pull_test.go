package remote_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/clusterpki"
	"github.com/baton-faas/baton/internal/transfer"
	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/fake"
	"github.com/baton-faas/baton/internal/workerapi/remote"
	"github.com/baton-faas/baton/internal/workerapi/remote/remotetest"
)

// keeper is a worker that keeps transfers, as the node does.
type keeper struct {
	*stub
	x *transfer.Exchange
}

func (k keeper) Pull(ctx context.Context, r transfer.Ref, app string) (io.ReadCloser, error) {
	p, err := k.x.Serve(r, app)
	if err != nil {
		return nil, err
	}
	rc, err := p.Open()
	if err != nil {
		p.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{rc, closerFunc(func() error { p.Close(); return rc.Close() })}, nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

func newKeeper(t *testing.T, id string) keeper {
	t.Helper()
	signer, err := transfer.NewSigner(bytes.Repeat([]byte{9}, transfer.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	store, err := transfer.NewStore(transfer.StoreConfig{MemoryBytes: 64 << 20, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	x, err := transfer.NewExchange(transfer.ExchangeConfig{Worker: id, Threshold: 1, Signer: signer, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	fw := fake.New(fake.Options{ID: id})
	t.Cleanup(fw.Close)
	return keeper{stub: &stub{Worker: fw}, x: x}
}

// Another worker pulls a buffer over the worker API with its own
// certificate (a worker may call Pull, and only Pull): the bytes arrive
// whole, in several chunks, and check out against the reference.
func TestPullBetweenWorkers(t *testing.T) {
	p := remotetest.NewPKI(t)
	k := newKeeper(t, "w1")
	served := remotetest.Serve(t, k, p, "127.0.0.1:0")
	data := bytes.Repeat([]byte("0123456789abcdef"), 3*remote.PullChunkBytes/16+5)
	r, ok := k.x.Keep("app", data)
	if !ok {
		t.Fatal("not kept")
	}
	r.Addr = served.Addr // as the worker's advertised address would be
	r = k.x.Signer().Sign(r)
	workerTLS, err := p.Identity(t, "w2", clusterpki.Worker).ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	peers := remote.NewPeers(workerTLS, remote.ClientOptions{})
	defer peers.Close()
	rc, err := peers.Pull(ctxFor(t), r, "app")
	if err != nil {
		t.Fatalf("a worker's pull: %v", err)
	}
	got, err := transfer.ReadVerified(r, rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("pulled %d bytes: %v", len(got), err)
	}
	// The refusals keep their identity across the wire.
	if _, err := peers.Pull(ctxFor(t), r, "app"); !errors.Is(err, transfer.ErrSourceLost) {
		t.Fatalf("a second pull of a 1-pull buffer: %v, want ErrSourceLost", err)
	}
	r2, _ := k.x.Keep("app", data)
	r2.Addr = served.Addr
	r2 = k.x.Signer().Sign(r2)
	forged := r2
	forged.Pulls = 9
	if _, err := peers.Pull(ctxFor(t), forged, "app"); !errors.Is(err, transfer.ErrForged) {
		t.Fatalf("a forged pull count: %v, want ErrForged", err)
	}
	if _, err := peers.Pull(ctxFor(t), r2, "intruder"); !errors.Is(err, transfer.ErrWrongApp) {
		t.Fatalf("another app: %v, want ErrWrongApp", err)
	}
	// A worker may still not run anything on another worker.
	c, err := remote.Dial(served.Addr, workerTLS, remote.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Invoke(ctxFor(t), "i", workerapi.Invocation{}); !errors.Is(err, remote.ErrPermissionDenied) {
		t.Fatalf("a worker's Invoke on another worker: %v, want ErrPermissionDenied", err)
	}
	// A keeper that died is a lost source.
	served.Kill()
	if _, err := peers.Pull(ctxFor(t), r2, "app"); !errors.Is(err, transfer.ErrSourceLost) {
		t.Fatalf("pull from a dead worker: %v, want ErrSourceLost", err)
	}
}

// A result's reference crosses Invoke intact (its MAC still verifies).
func TestInvokeCarriesRef(t *testing.T) {
	p := remotetest.NewPKI(t)
	k := newKeeper(t, "w1")
	r, _ := k.x.Keep("app", []byte("a result kept by the worker"))
	var sawByRef bool
	k.stub.invoke = func(ctx context.Context, id string, inv workerapi.Invocation) (workerapi.Result, error) {
		sawByRef = inv.ByRef
		return workerapi.Result{Ref: &r}, nil
	}
	served := remotetest.Serve(t, k, p, "127.0.0.1:0")
	res, err := remotetest.Dial(t, served.Addr, p).Invoke(ctxFor(t), "i", workerapi.Invocation{ID: "x", ByRef: true})
	if err != nil {
		t.Fatal(err)
	}
	if !sawByRef || res.Ref == nil || *res.Ref != r {
		t.Fatalf("by-ref seen %v, reference %+v, want %+v", sawByRef, res.Ref, r)
	}
	if err := k.x.Signer().Verify(*res.Ref, "app", time.Now()); err != nil {
		t.Fatalf("the reference after the wire: %v", err)
	}
}
