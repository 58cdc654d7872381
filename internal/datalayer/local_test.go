package datalayer

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable clock for TTL tests.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// val is a value of n bytes whose entry costs exactly size(n) in the layer.
func val(n int, fill byte) Value {
	return Value{ContentType: "x", Data: bytes.Repeat([]byte{fill}, n)}
}

// cost is what key's entry of an n-byte val costs.
func cost(key string, n int) int64 { return entrySize(key, val(n, 0)) }

func mustGet(t *testing.T, l *Local, app, key string, want Value) {
	t.Helper()
	got, ok := l.Get(app, key)
	if !ok {
		t.Fatalf("%s/%s: missing", app, key)
	}
	if got.ContentType != want.ContentType || !bytes.Equal(got.Data, want.Data) {
		t.Fatalf("%s/%s: got %q (%d bytes), want %q (%d bytes)", app, key, got.ContentType, len(got.Data), want.ContentType, len(want.Data))
	}
}

func mustMiss(t *testing.T, l *Local, app, key string) {
	t.Helper()
	if _, ok := l.Get(app, key); ok {
		t.Fatalf("%s/%s: present, want evicted or absent", app, key)
	}
}

func TestLocalEvictsLeastRecentlyUsedByBytes(t *testing.T) {
	// Room for exactly three 1000-byte values on the host; apps may use
	// all of it.
	per := cost("k0", 1000)
	l := NewLocal(Config{LocalBytes: 3 * per, LocalAppBytes: 3 * per})
	for i := range 3 {
		if err := l.Put("a", fmt.Sprintf("k%d", i), val(1000, byte(i))); err != nil {
			t.Fatal(err)
		}
	}
	// Using k0 makes k1 the least recently used.
	mustGet(t, l, "a", "k0", val(1000, 0))
	if err := l.Put("a", "k3", val(1000, 3)); err != nil {
		t.Fatal(err)
	}
	mustMiss(t, l, "a", "k1")
	mustGet(t, l, "a", "k0", val(1000, 0))
	mustGet(t, l, "a", "k2", val(1000, 2))
	mustGet(t, l, "a", "k3", val(1000, 3))
	if st := l.Stats(); st.Entries != 3 || st.Bytes != 3*per {
		t.Fatalf("stats %+v, want 3 entries of %d bytes", st, 3*per)
	}

	// One value as large as two others evicts the two least recently
	// used: k0, then k2 (read in that order above, k3 after them).
	big := val(1000+int(per), 9)
	if err := l.Put("b", "k0", big); err != nil {
		t.Fatal(err)
	}
	mustMiss(t, l, "a", "k0")
	mustMiss(t, l, "a", "k2")
	mustGet(t, l, "a", "k3", val(1000, 3))
	mustGet(t, l, "b", "k0", big)

	// Overwriting replaces the bytes counted, not adds to them.
	if err := l.Put("a", "k3", val(10, 3)); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.Bytes != cost("k3", 10)+entrySize("k0", big) {
		t.Fatalf("after overwrite: %+v", st)
	}
}

func TestLocalPerAppLimit(t *testing.T) {
	per := cost("k0", 1000)
	l := NewLocal(Config{LocalBytes: 10 * per, LocalAppBytes: 2 * per})
	for i := range 2 {
		if err := l.Put("quiet", fmt.Sprintf("k%d", i), val(1000, 1)); err != nil {
			t.Fatal(err)
		}
	}
	// A busy app evicts its own entries, never another app's.
	for i := range 5 {
		if err := l.Put("busy", fmt.Sprintf("k%d", i), val(1000, byte(i))); err != nil {
			t.Fatal(err)
		}
	}
	mustGet(t, l, "quiet", "k0", val(1000, 1))
	mustGet(t, l, "quiet", "k1", val(1000, 1))
	for i := range 3 {
		mustMiss(t, l, "busy", fmt.Sprintf("k%d", i))
	}
	mustGet(t, l, "busy", "k3", val(1000, 3))
	mustGet(t, l, "busy", "k4", val(1000, 4))
	if got := l.AppBytes("busy"); got != 2*per {
		t.Fatalf("busy holds %d bytes, want %d", got, 2*per)
	}

	// A value larger than an app's share is refused, and the key's older
	// value goes too: a reader must not see it after the newer write.
	err := l.Put("busy", "k4", val(3000, 7))
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("put over the app's share: %v, want ErrTooLarge", err)
	}
	mustMiss(t, l, "busy", "k4")
	mustGet(t, l, "busy", "k3", val(1000, 3))
}

func TestLocalTTL(t *testing.T) {
	c := newClock()
	l := NewLocal(Config{LocalTTL: time.Minute, Now: c.Now})
	if err := l.Put("a", "old", val(10, 1)); err != nil {
		t.Fatal(err)
	}
	c.Advance(40 * time.Second)
	if err := l.Put("a", "young", val(10, 2)); err != nil {
		t.Fatal(err)
	}
	// Reading does not extend an entry's life.
	mustGet(t, l, "a", "old", val(10, 1))
	c.Advance(20 * time.Second)
	mustMiss(t, l, "a", "old")
	mustGet(t, l, "a", "young", val(10, 2))
	// Writing again does.
	if err := l.Put("a", "young", val(10, 3)); err != nil {
		t.Fatal(err)
	}
	c.Advance(59 * time.Second)
	mustGet(t, l, "a", "young", val(10, 3))
	c.Advance(time.Second)
	mustMiss(t, l, "a", "young")
	if st := l.Stats(); st.Entries != 0 || st.Bytes != 0 || st.Apps != 0 {
		t.Fatalf("everything expired, but stats are %+v", st)
	}
}

func TestLocalIsolatesApps(t *testing.T) {
	l := NewLocal(Config{})
	if err := l.Put("a", "shared/name", Value{ContentType: "text/plain", Data: []byte("A's")}); err != nil {
		t.Fatal(err)
	}
	mustMiss(t, l, "b", "shared/name")
	if err := l.Put("b", "shared/name", Value{ContentType: "text/plain", Data: []byte("B's")}); err != nil {
		t.Fatal(err)
	}
	mustGet(t, l, "a", "shared/name", Value{ContentType: "text/plain", Data: []byte("A's")})
	l.Delete("b", "shared/name")
	mustGet(t, l, "a", "shared/name", Value{ContentType: "text/plain", Data: []byte("A's")})
	mustMiss(t, l, "b", "shared/name")
}

func TestLayerRefusesBadRequests(t *testing.T) {
	l := New(NewLocal(Config{}), nil, 1000, nil)
	ctx := t.Context()
	for _, key := range []string{"", strings.Repeat("k", MaxKeyBytes+1), "a b", "a/../b", "..", "a//b", "/a", "a/", "./a", "é", "a%2Fb", "a?b"} {
		if err := l.Put(ctx, "app", key, ScopeLocal, val(1, 0)); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("put key %q: %v, want ErrInvalidKey", key, err)
		}
	}
	for _, key := range []string{"a", strings.Repeat("k", MaxKeyBytes), "img/cat.v2.jpg", "a..b", "-_.x/y"} {
		if err := l.Put(ctx, "app", key, ScopeLocal, val(1, 0)); err != nil {
			t.Errorf("put key %q: %v", key, err)
		}
	}
	if err := l.Put(ctx, "app", "k", "both", val(1, 0)); !errors.Is(err, ErrInvalidScope) {
		t.Errorf("put with scope both: %v, want ErrInvalidScope", err)
	}
	if err := l.Put(ctx, "app", "k", ScopeLocal, val(1001, 0)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("put over MaxValue: %v, want ErrTooLarge", err)
	}
	if err := l.Put(ctx, "app", "k", ScopeLocal, Value{ContentType: "text/plain\n", Data: []byte("x")}); !errors.Is(err, ErrInvalidType) {
		t.Errorf("put with a control character in the type: %v, want ErrInvalidType", err)
	}
	if err := l.Put(ctx, "App.x", "k", ScopeLocal, val(1, 0)); err == nil {
		t.Errorf("put for an invalid app name succeeded")
	}
	// Without NATS the global scope says so; the unscoped get and delete
	// use the local layer alone.
	for _, err := range []error{
		l.Put(ctx, "app", "k", ScopeGlobal, val(1, 0)),
		l.Put(ctx, "app", "k", ScopeAny, val(1, 0)),
		func() error { _, _, err := l.Get(ctx, "app", "k", ScopeGlobal); return err }(),
		l.Delete(ctx, "app", "k", ScopeGlobal),
	} {
		if !errors.Is(err, ErrNoGlobal) {
			t.Errorf("global scope without NATS: %v, want ErrNoGlobal", err)
		}
	}
	if _, _, err := l.Get(ctx, "app", "absent", ScopeAny); !errors.Is(err, ErrNotFound) {
		t.Errorf("unscoped get of a missing key without NATS: %v, want ErrNotFound", err)
	}
	if err := l.Delete(ctx, "app", "a", ScopeAny); err != nil {
		t.Errorf("unscoped delete without NATS: %v", err)
	}
	if _, _, err := l.Get(ctx, "app", "a", ScopeLocal); !errors.Is(err, ErrNotFound) {
		t.Errorf("get after delete: %v, want ErrNotFound", err)
	}
	// A value without a type is stored as bytes.
	if err := l.Put(ctx, "app", "untyped", ScopeLocal, Value{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if v, _, err := l.Get(ctx, "app", "untyped", ScopeAny); err != nil || v.ContentType != DefaultContentType {
		t.Errorf("untyped value read back as %q, %v", v.ContentType, err)
	}
}

func TestConfigCheck(t *testing.T) {
	if err := (Config{LocalBytes: 10 << 20, LocalAppBytes: 20 << 20}).Check(); err == nil {
		t.Error("an app share above the host's limit was accepted")
	}
	if err := (Config{GlobalTTL: time.Millisecond}).Check(); err == nil {
		t.Error("a global TTL below a second was accepted")
	}
	if err := (Config{}).Check(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}
