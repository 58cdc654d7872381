// Package clustertest starts what the cluster packages' tests need: a real
// embedded JetStream server per test, connections to it, and polling with
// generous deadlines (tests wait for conditions, never for durations).
package clustertest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/store/natsd"
)

// Deadline bounds every wait: long, because the suite runs on a busy
// two-core machine.
const Deadline = 30 * time.Second

// Server starts an embedded JetStream server in a temporary directory,
// stopped when the test ends.
func Server(t testing.TB) *natsd.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Deadline)
	defer cancel()
	s, err := natsd.Start(ctx, natsd.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// Connect opens a connection of its own (one per simulated node, so that
// closing it cuts that node off), closed when the test ends.
func Connect(t testing.TB, s *natsd.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := s.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// Context is a test's context with the Deadline.
func Context(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Deadline)
	t.Cleanup(cancel)
	return ctx
}

// Eventually polls cond until it holds, failing the test with what after
// the Deadline.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Deadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
