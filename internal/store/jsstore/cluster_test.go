package jsstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/store"
	"github.com/baton-faas/baton/internal/store/jsstore"
	"github.com/baton-faas/baton/internal/store/natsd"
	"github.com/baton-faas/baton/internal/store/natsd/natsdtest"
)

// backing streams of the functions KV, the code object store and the
// record log.
var streams = []string{"KV_baton_functions", "OBJ_baton_code", "BATON_RECORDS"}

func replicas(t *testing.T, nc *nats.Conn) map[string]int {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := map[string]int{}
	for _, name := range streams {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		out[name] = s.CachedInfo().Config.Replicas
	}
	return out
}

func wantReplicas(t *testing.T, nc *nats.Conn, want int) {
	t.Helper()
	for name, got := range replicas(t, nc) {
		if got != want {
			t.Errorf("stream %s has %d replicas, want %d", name, got, want)
		}
	}
}

func dial(t *testing.T, urls []string) *nats.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := natsd.Dial(ctx, urls, natsd.DialOptions{Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func open(t *testing.T, nc *nats.Conn, o jsstore.Options) *jsstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := jsstore.Open(ctx, nc, o)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// `baton server`'s embedded server keeps one copy of everything, and
// AutoReplicas on a server outside any cluster means one copy too.
func TestOpenSingleServer(t *testing.T) {
	ns, err := natsd.Start(context.Background(), natsd.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := ns.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	open(t, nc, jsstore.Options{MaxRecords: 100})
	wantReplicas(t, nc, 1)
	open(t, nc, jsstore.Options{Replicas: jsstore.AutoReplicas, MaxRecords: 100})
	wantReplicas(t, nc, 1)
}

// Controllers starting together against a three-node cluster each open the
// stores through a different node, with different record limits: every
// Open succeeds, and every bucket and stream has three replicas.
func TestOpenClusterConcurrently(t *testing.T) {
	c := natsdtest.StartCluster(t, 3, nil)
	c.WaitReady(3 * time.Minute)
	urls := c.URLs()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	stores := make([]*jsstore.Store, 3)
	for i := range 3 {
		nc := dial(t, urls[i:i+1])
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			stores[i], errs[i] = jsstore.Open(ctx, nc, jsstore.Options{
				Replicas: jsstore.AutoReplicas, MaxRecords: int64(1000 + i), MaxRecordBytes: 1 << 20, Logger: slog.Default(),
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open through node %d: %v", i+1, err)
		}
	}
	wantReplicas(t, dial(t, urls), 3)

	// A write through one node is read through another.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fn := function.Function{Name: "hello", Version: 1, CodeDigest: "sha256:00"}
	if _, err := stores[0].PutFunction(ctx, fn, 0); err != nil {
		t.Fatal(err)
	}
	if err := stores[1].PutBlob(ctx, "sha256:00", bytes.NewReader([]byte("code"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "function and code visible through node 3", func() error {
		if _, _, err := stores[2].GetFunction(ctx, "hello"); err != nil {
			return err
		}
		r, err := stores[2].GetBlob(ctx, "sha256:00")
		if err != nil {
			return err
		}
		defer r.Close()
		b, err := io.ReadAll(r)
		if err == nil && string(b) != "code" {
			err = errors.New("code is " + string(b))
		}
		return err
	})
}

// A revision check that fails on a replicated bucket is a conflict, as on
// a single server (JetStream reports it with another code there).
func TestRevisionConflictOnReplicatedBucket(t *testing.T) {
	c := natsdtest.StartCluster(t, 3, nil)
	c.WaitReady(3 * time.Minute)
	st := open(t, dial(t, c.URLs()), jsstore.Options{Replicas: jsstore.AutoReplicas, MaxRecords: 100})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fn := function.Function{Name: "hello", Version: 1}
	rev, err := st.PutFunction(ctx, fn, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutFunction(ctx, fn, 0); !errors.Is(err, store.ErrConflict) {
		t.Errorf("create of an existing function: %v, want ErrConflict", err)
	}
	fn.Version = 2
	if _, err := st.PutFunction(ctx, fn, rev); err != nil {
		t.Fatal(err)
	}
	fn.Version = 3
	if _, err := st.PutFunction(ctx, fn, rev); !errors.Is(err, store.ErrConflict) {
		t.Errorf("update with a stale revision: %v, want ErrConflict", err)
	}
	got, _, err := st.GetFunction(ctx, "hello")
	if err != nil || got.Version != 2 {
		t.Errorf("after the conflict: version %d, %v; want version 2", got.Version, err)
	}
}

// AutoReplicas is min(3, servers in the cluster): two on a two-node
// cluster. Replicas 0 means the same, so a process that leaves it unset
// does not lower the others' copies.
func TestAutoReplicasOnTwoNodes(t *testing.T) {
	c := natsdtest.StartCluster(t, 2, nil)
	c.WaitReady(3 * time.Minute)
	nc := dial(t, c.URLs())
	open(t, nc, jsstore.Options{Replicas: jsstore.AutoReplicas, MaxRecords: 100})
	wantReplicas(t, nc, 2)
	open(t, nc, jsstore.Options{MaxRecords: 100})
	wantReplicas(t, nc, 2)
}

// Stores created while one of three nodes is down get three copies when
// JetStream still counts the node as a member to place on (two of them, a
// quorum, are up) or two when it does not; either way writes work, and
// once the node is back a later Open gives every store three.
func TestAutoReplicasWithANodeDown(t *testing.T) {
	c := natsdtest.StartCluster(t, 3, nil)
	c.WaitReady(3 * time.Minute)
	c.Stop(2)
	c.WaitReady(3 * time.Minute)
	nc := dial(t, c.URLs()[:2])
	st := open(t, nc, jsstore.Options{Replicas: jsstore.AutoReplicas, MaxRecords: 100})
	for name, r := range replicas(t, nc) {
		if r != 2 && r != 3 {
			t.Errorf("stream %s has %d replicas with one node of three down, want 2 or 3", name, r)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := st.PutFunction(ctx, function.Function{Name: "hello", Version: 1}, 0); err != nil {
		t.Fatalf("write with one node of three down: %v", err)
	}

	c.Start(2)
	c.WaitReady(3 * time.Minute)
	// The meta leader learns that the node is back from its reports, a
	// moment after the routes are up.
	waitFor(t, "three replicas after the node is back", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := jsstore.Open(ctx, nc, jsstore.Options{Replicas: jsstore.AutoReplicas, MaxRecords: 100}); err != nil {
			return err
		}
		for name, r := range replicas(t, nc) {
			if r != 3 {
				return fmt.Errorf("%s has %d replicas", name, r)
			}
		}
		return nil
	})
	if _, _, err := st.GetFunction(ctx, "hello"); err != nil {
		t.Errorf("function written while the node was down: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after 60s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
