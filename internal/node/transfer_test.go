package node

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/sandbox/fake"
	"github.com/baton-faas/baton/internal/transfer"
	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/workerapitest"
)

// The invoke path of direct transfers on one node: a large result of an
// invocation that takes references is kept and answered with one; an
// invocation whose payload is a reference (alone or inside JSON) gets the
// bytes, handed over in memory; a reference of another app is refused
// before the function runs, and the instance stays usable.
func TestInvokeKeepsAndResolvesTransfers(t *testing.T) {
	fr, err := fake.New(fake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := transfer.NewSigner(bytes.Repeat([]byte{3}, transfer.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	store, err := transfer.NewStore(transfer.StoreConfig{MemoryBytes: 1 << 20, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	x, err := transfer.NewExchange(transfer.ExchangeConfig{Worker: "node-x", Threshold: 1024, Signer: signer, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	code := workerapitest.NewPythonCode()
	w, err := New(Options{ID: "node-x", DataDir: t.TempDir(), Sandboxes: fr, Code: code, Transfer: x})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := func(name, app string) string {
		t.Helper()
		spec := code.Deploy(t, name, workerapitest.Echo)
		spec.App = app
		in, err := w.StartInstance(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.WaitInstance(ctx, in.ID); err != nil {
			t.Fatal(err)
		}
		return in.ID
	}
	producer, consumer, stranger := start("producer", "shop"), start("consumer", "shop"), start("stranger", "other")
	invoke := func(id string, payload []byte, byRef bool) (workerapi.Result, error) {
		return w.Invoke(ctx, id, workerapi.Invocation{ID: "i-" + id, Payload: payload, Deadline: time.Now().Add(time.Minute), ByRef: byRef})
	}
	big := []byte(`{"data":"` + strings.Repeat("z", 4096) + `"}`)

	res, err := invoke(producer, big, false)
	if err != nil || res.Ref != nil || !bytes.Equal(res.Payload, big) {
		t.Fatalf("without ByRef: ref %v, %d bytes, %v; want the bytes inline", res.Ref, len(res.Payload), err)
	}
	res, err = invoke(producer, []byte(`{"small":1}`), true)
	if err != nil || res.Ref != nil {
		t.Fatalf("a small result with ByRef: ref %v, %v; want it inline", res.Ref, err)
	}
	res, err = invoke(producer, big, true)
	if err != nil || res.Ref == nil || len(res.Payload) != 0 {
		t.Fatalf("a large result with ByRef: ref %v, %d bytes, %v; want a reference", res.Ref, len(res.Payload), err)
	}
	ref := *res.Ref
	if ref.Worker != "node-x" || ref.App != "shop" || ref.Size != int64(len(big)) {
		t.Fatalf("reference %+v", ref)
	}

	// Another app's function never gets the data.
	if _, err := invoke(stranger, transfer.Marker(ref), false); !errors.Is(err, transfer.ErrWrongApp) {
		t.Fatalf("another app's reference: %v, want ErrWrongApp", err)
	}
	if res, err := invoke(stranger, []byte(`{"ok":1}`), false); err != nil || string(res.Payload) != `{"ok":1}` {
		t.Fatalf("the instance after the refusal: %s, %v", res.Payload, err)
	}

	// Nested in a JSON input, with a second pull allowed for the
	// Worker.Pull below.
	two := signer.WithPulls(ref, 2)
	res, err = invoke(consumer, []byte(`{"i":7,"blob":`+string(transfer.Marker(two))+`}`), false)
	if err != nil || string(res.Payload) != `{"blob":`+string(big)+`,"i":7}` {
		t.Fatalf("reference inside the input: %.120s, %v", res.Payload, err)
	}
	rc, err := w.Pull(ctx, two, "shop")
	if err != nil {
		t.Fatalf("the second pull, as another worker would: %v", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("pulled %d bytes: %v", len(got), err)
	}
	if n, mem, _ := store.Usage(); n != 0 || mem != 0 {
		t.Fatalf("after both pulls the store holds %d buffers, %d bytes", n, mem)
	}
	if _, err := invoke(consumer, transfer.Marker(two), false); !errors.Is(err, transfer.ErrSourceLost) {
		t.Fatalf("a third pull of a 2-pull reference: %v, want the buffer gone", err)
	}

	// The whole payload a reference: the function gets the bytes.
	res, _ = invoke(producer, big, true)
	res2, err := invoke(consumer, transfer.Marker(*res.Ref), false)
	if err != nil || !bytes.Equal(res2.Payload, big) {
		t.Fatalf("a reference as the payload: %d bytes, %v", len(res2.Payload), err)
	}
}
