package controller

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/controlplane/metrics"
	"github.com/baton-faas/baton/internal/controlplane/placement"
	"github.com/baton-faas/baton/internal/controlplane/registry"
	"github.com/baton-faas/baton/internal/controlplane/router"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/fake"
)

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Workers join and leave a running controller: instances go to the ones
// present, each worker's exits reach the router under its own id, and a
// removed worker's instances leave the routing table while calls go on
// on the other.
func TestWorkersJoinAndLeave(t *testing.T) {
	// Round-robin placement spreads one function's instances (the
	// default packs an app onto the host where it is warm).
	c := New(Options{Registry: registry.New(noFunctions{}, nil, archive.DefaultLimits(), nil), Metrics: metrics.New(),
		Router: router.Options{Placement: &placement.RoundRobin{}}})
	ctx := context.Background()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		_ = c.Shutdown(sctx)
	}()
	if _, err := c.Images(ctx); !errorsIsUnavailable(err) {
		t.Fatalf("images without workers: %v, want worker unavailable", err)
	}
	a, b := fake.New(fake.Options{ID: "a"}), fake.New(fake.Options{ID: "b"})
	defer a.Close()
	defer b.Close()
	for _, w := range []*fake.Worker{a, b} {
		if err := c.AddWorker(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.AddWorker(ctx, a); err == nil {
		t.Fatal("a worker was added twice")
	}
	spec, err := function.Spec{Runtime: "nodejs", Handler: "index.handler", MaxScale: 10}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	c.router.SetFunction(function.Function{Name: "f", Version: 1, Spec: spec, CodeDigest: "sha256:" + zeros64})
	// Calls at once need several instances; keep calling until both
	// workers run one.
	a.SetBehaviour("f", fake.Behaviour{Sleep: 50 * time.Millisecond})
	b.SetBehaviour("f", fake.Behaviour{Sleep: 50 * time.Millisecond})
	onWorker := func(id string) int {
		n := 0
		for _, in := range c.Status("f").Instances {
			if in.Worker == id {
				n++
			}
		}
		return n
	}
	for i := 0; onWorker("a") == 0 || onWorker("b") == 0; i++ {
		if i > 200 {
			t.Fatalf("instances never spread over both workers: %+v", c.Status("f"))
		}
		done := make(chan error, 4)
		for range 4 {
			go func() {
				_, err := c.router.Invoke(ctx, "f", workerapi.Invocation{ID: NewRequestID(), Payload: []byte(`{}`)})
				done <- err
			}()
		}
		for range 4 {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
	}

	// An instance of b dies: the router hears it from b's stream.
	var victim string
	for _, in := range c.Status("f").Instances {
		if in.Worker == "b" {
			victim = in.ID
		}
	}
	if !b.Kill(victim, "killed by the test") {
		t.Fatalf("instance %s of b was not live", victim)
	}
	waitUntil(t, "b's dead instance to leave the routing table", func() bool {
		for _, in := range c.Status("f").Instances {
			if in.ID == victim {
				return false
			}
		}
		return true
	})

	if !c.RemoveWorker("b") {
		t.Fatal("RemoveWorker(b) found no worker")
	}
	waitUntil(t, "b's instances to leave the routing table", func() bool { return onWorker("b") == 0 })
	if _, err := c.router.Invoke(ctx, "f", workerapi.Invocation{ID: NewRequestID(), Payload: []byte(`{}`)}); err != nil {
		t.Fatalf("call after b left: %v", err)
	}
	if onWorker("b") != 0 || onWorker("a") == 0 {
		t.Fatalf("after b left: %+v", c.Status("f"))
	}
}

const zeros64 = "0000000000000000000000000000000000000000000000000000000000000000"

func errorsIsUnavailable(err error) bool {
	return errors.Is(err, workerapi.ErrWorkerUnavailable)
}
