package datalayer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/cluster/clustertest"
)

// openGlobal opens the global layer on a fresh embedded JetStream server.
func openGlobal(t testing.TB) (*Global, jetstream.JetStream) {
	t.Helper()
	s := clustertest.Server(t)
	nc, js := clustertest.Connect(t, s)
	g, err := OpenGlobal(clustertest.Context(t), nc, GlobalConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return g, js
}

// objectNames lists the object store's live objects.
func objectNames(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	ctx := clustertest.Context(t)
	obj, err := js.ObjectStore(ctx, ObjectsBucket)
	if err != nil {
		t.Fatal(err)
	}
	infos, err := obj.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range infos {
		names = append(names, i.Name)
	}
	return names
}

func globalGet(t *testing.T, g *Global, app, key string) (Value, error) {
	t.Helper()
	return g.Get(clustertest.Context(t), app, key)
}

func mustGlobal(t *testing.T, g *Global, app, key string, want Value) {
	t.Helper()
	got, err := globalGet(t, g, app, key)
	if err != nil {
		t.Fatalf("get %s/%s: %v", app, key, err)
	}
	if got.ContentType != want.ContentType || !bytes.Equal(got.Data, want.Data) {
		t.Fatalf("get %s/%s: %q (%d bytes), want %q (%d bytes)", app, key, got.ContentType, len(got.Data), want.ContentType, len(want.Data))
	}
}

func TestGlobalPutGetDelete(t *testing.T) {
	g, js := openGlobal(t)
	ctx := clustertest.Context(t)
	small := Value{ContentType: "application/json", Data: []byte(`{"n":1}`)}
	big := val(ObjectThreshold+1, 'b') // one byte over: the object store
	big.ContentType = "image/png"

	if _, err := globalGet(t, g, "app", "missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get of a missing key: %v, want ErrNotFound", err)
	}
	if err := g.Put(ctx, "app", "runs/1.small", small); err != nil {
		t.Fatal(err)
	}
	mustGlobal(t, g, "app", "runs/1.small", small)
	if names := objectNames(t, js); len(names) != 0 {
		t.Fatalf("a small value made objects %v", names)
	}

	if err := g.Put(ctx, "app", "runs/1.big", big); err != nil {
		t.Fatal(err)
	}
	mustGlobal(t, g, "app", "runs/1.big", big)
	names := objectNames(t, js)
	if len(names) != 1 {
		t.Fatalf("objects after a big put: %v, want one", names)
	}

	// Overwriting a big value with another replaces its object; with a
	// small one drops it.
	big2 := val(2<<20, 'c')
	big2.ContentType = "application/octet-stream"
	if err := g.Put(ctx, "app", "runs/1.big", big2); err != nil {
		t.Fatal(err)
	}
	mustGlobal(t, g, "app", "runs/1.big", big2)
	if now := objectNames(t, js); len(now) != 1 || now[0] == names[0] {
		t.Fatalf("objects after overwriting the big value: %v (before %v), want one new one", now, names)
	}
	if err := g.Put(ctx, "app", "runs/1.big", small); err != nil {
		t.Fatal(err)
	}
	mustGlobal(t, g, "app", "runs/1.big", small)
	if now := objectNames(t, js); len(now) != 0 {
		t.Fatalf("objects after overwriting with a small value: %v, want none", now)
	}

	// Delete removes the entry and its object; deleting again is fine.
	if err := g.Put(ctx, "app", "runs/1.big", big); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := g.Delete(ctx, "app", "runs/1.big"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := globalGet(t, g, "app", "runs/1.big"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: %v, want ErrNotFound", err)
	}
	if now := objectNames(t, js); len(now) != 0 {
		t.Fatalf("objects after delete: %v, want none", now)
	}
	mustGlobal(t, g, "app", "runs/1.small", small)
	// A deleted key can be written again.
	if err := g.Put(ctx, "app", "runs/1.big", small); err != nil {
		t.Fatal(err)
	}
	mustGlobal(t, g, "app", "runs/1.big", small)

	if err := g.Put(ctx, "app", "huge", val(DefaultMaxValue+1, 0)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("put over the value limit: %v, want ErrTooLarge", err)
	}
}

func TestGlobalIsolatesAppsAndEscapesKeys(t *testing.T) {
	g, _ := openGlobal(t)
	ctx := clustertest.Context(t)
	a := Value{ContentType: "text/plain", Data: []byte("a")}
	// "x.y" and "x=2Ey" could only collide if the escape were ambiguous;
	// '=' is not a key character, so the second is refused.
	if err := g.Put(ctx, "alpha", "x.y", a); err != nil {
		t.Fatal(err)
	}
	if err := g.Put(ctx, "alpha", "x=2Ey", a); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("put of a key with '=': %v, want ErrInvalidKey", err)
	}
	mustGlobal(t, g, "alpha", "x.y", a)
	if _, err := globalGet(t, g, "beta", "x.y"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another app read alpha's key: %v, want ErrNotFound", err)
	}
	// An app whose name is another's prefix sees nothing of it either.
	if err := g.Put(ctx, "alpha-2", "y", a); err != nil {
		t.Fatal(err)
	}
	if _, err := globalGet(t, g, "alpha", "y"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("alpha read alpha-2's key: %v", err)
	}
	if err := g.Delete(ctx, "beta", "x.y"); err != nil {
		t.Fatal(err)
	}
	mustGlobal(t, g, "alpha", "x.y", a)
}

// Racing writers of one key leave one of their values and no stray
// objects.
func TestGlobalConcurrentPuts(t *testing.T) {
	g, js := openGlobal(t)
	ctx := clustertest.Context(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			v := val(ObjectThreshold+1+i, byte('a'+i))
			if i%2 == 0 {
				v = val(10, byte('a'+i))
			}
			errs <- g.Put(ctx, "app", "contended", v)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	v, err := globalGet(t, g, "app", "contended")
	if err != nil {
		t.Fatal(err)
	}
	names := objectNames(t, js)
	if len(v.Data) > ObjectThreshold && len(names) != 1 || len(v.Data) <= ObjectThreshold && len(names) != 0 {
		t.Fatalf("value of %d bytes left objects %v", len(v.Data), names)
	}
}

func TestLayerWritesThroughAndFallsBack(t *testing.T) {
	s := clustertest.Server(t)
	nc, _ := clustertest.Connect(t, s)
	ctx := clustertest.Context(t)
	open := func() *Layer {
		l, err := Open(ctx, nc, Config{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	// Two hosts sharing the global layer.
	h1, h2 := open(), open()
	v := Value{ContentType: "text/plain", Data: []byte("hello")}

	if err := h1.Put(ctx, "app", "g", ScopeGlobal, v); err != nil {
		t.Fatal(err)
	}
	// Written through: h1 answers from its local copy.
	if _, from, err := h1.Get(ctx, "app", "g", ScopeLocal); err != nil || from != ScopeLocal {
		t.Fatalf("h1 local get: %s, %v", from, err)
	}
	// h2 has no local copy; an unscoped get falls back to global and
	// then keeps one.
	if _, _, err := h2.Get(ctx, "app", "g", ScopeLocal); !errors.Is(err, ErrNotFound) {
		t.Fatalf("h2 local get before any read: %v, want ErrNotFound", err)
	}
	got, from, err := h2.Get(ctx, "app", "g", ScopeAny)
	if err != nil || from != ScopeGlobal || string(got.Data) != "hello" {
		t.Fatalf("h2 unscoped get: %q from %s, %v", got.Data, from, err)
	}
	if _, from, err := h2.Get(ctx, "app", "g", ScopeAny); err != nil || from != ScopeLocal {
		t.Fatalf("h2 second unscoped get: from %s, %v; want the local copy", from, err)
	}

	// A local put stays on its host.
	if err := h1.Put(ctx, "app", "l", ScopeLocal, v); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h2.Get(ctx, "app", "l", ScopeAny); !errors.Is(err, ErrNotFound) {
		t.Fatalf("h2 read h1's local value: %v", err)
	}
	if _, _, err := h1.Get(ctx, "app", "l", ScopeGlobal); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a local value reached the global layer: %v", err)
	}

	// A global put too large for the local layer drops the stale copy.
	small := open()
	small.local = NewLocal(Config{LocalBytes: 4 << 10, LocalAppBytes: 4 << 10})
	if err := small.Put(ctx, "app", "g", ScopeGlobal, Value{Data: []byte("old")}); err != nil {
		t.Fatal(err)
	}
	large := val(8<<10, 'n')
	if err := small.Put(ctx, "app", "g", ScopeGlobal, large); err != nil {
		t.Fatal(err)
	}
	if got, from, err := small.Get(ctx, "app", "g", ScopeAny); err != nil || from != ScopeGlobal || !bytes.Equal(got.Data, large.Data) {
		t.Fatalf("after a put too large to cache: %d bytes from %s, %v", len(got.Data), from, err)
	}

	// An unscoped delete removes both; a scoped one only its layer.
	if err := h1.Put(ctx, "app", "d", ScopeGlobal, v); err != nil {
		t.Fatal(err)
	}
	if err := h1.Delete(ctx, "app", "d", ScopeGlobal); err != nil {
		t.Fatal(err)
	}
	if _, from, err := h1.Get(ctx, "app", "d", ScopeAny); err != nil || from != ScopeLocal {
		t.Fatalf("local copy after a global delete: from %s, %v", from, err)
	}
	if err := h1.Put(ctx, "app", "d", ScopeGlobal, v); err != nil {
		t.Fatal(err)
	}
	if err := h1.Delete(ctx, "app", "d", ScopeAny); err != nil {
		t.Fatal(err)
	}
	for _, scope := range []Scope{ScopeAny, ScopeLocal, ScopeGlobal} {
		if _, _, err := h1.Get(ctx, "app", "d", scope); !errors.Is(err, ErrNotFound) {
			t.Fatalf("get %q after an unscoped delete: %v, want ErrNotFound", scope, err)
		}
	}

	// AppData binds the app.
	a, b := h1.App("app"), h1.App("other")
	if err := a.Put(ctx, "mine", ScopeAny, v); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Get(ctx, "mine", ScopeAny); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another app read the key: %v", err)
	}
	if _, _, err := a.Get(ctx, "mine", ScopeAny); err != nil {
		t.Fatal(err)
	}
}

// The global layer reports a store that does not answer as retryable.
func TestGlobalUnreachable(t *testing.T) {
	s := clustertest.Server(t)
	nc, _ := clustertest.Connect(t, s)
	g, err := OpenGlobal(clustertest.Context(t), nc, GlobalConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err = g.Put(ctx, "app", "k", Value{Data: []byte("x")})
	if !errors.Is(err, ErrGlobalUnreached) {
		t.Fatalf("put on a closed connection: %v, want ErrGlobalUnreached", err)
	}
}

// Racing puts and fills of one key on one host leave the local copy equal
// to the global value.
func TestLayerLocalCopyFollowsGlobal(t *testing.T) {
	s := clustertest.Server(t)
	nc, _ := clustertest.Connect(t, s)
	ctx := clustertest.Context(t)
	l, err := Open(ctx, nc, Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for round := range 5 {
		key := fmt.Sprintf("race/%d", round)
		var wg sync.WaitGroup
		for i := range 6 {
			wg.Go(func() {
				if i%2 == 0 {
					// A fill: drop the local copy, read through.
					l.Local().Delete("app", key)
					_, _, _ = l.Get(ctx, "app", key, ScopeAny)
					return
				}
				if err := l.Put(ctx, "app", key, ScopeGlobal, val(100, byte(i))); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		g, _, gerr := l.Get(ctx, "app", key, ScopeGlobal)
		loc, _, lerr := l.Get(ctx, "app", key, ScopeLocal)
		if gerr != nil || lerr != nil && !errors.Is(lerr, ErrNotFound) {
			t.Fatalf("round %d: %v, %v", round, gerr, lerr)
		}
		if lerr == nil && !bytes.Equal(loc.Data, g.Data) {
			t.Fatalf("round %d: local copy %q, global %q", round, loc.Data[:1], g.Data[:1])
		}
	}
}
