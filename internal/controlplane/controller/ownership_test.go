package controller

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/controlplane/metrics"
	"github.com/baton-faas/baton/internal/controlplane/records"
	"github.com/baton-faas/baton/internal/controlplane/registry"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/fake"
)

// owners is an ownership that the test moves by hand: one owner for every
// function. Each controller sees it through a view with its own id.
type owners struct {
	mu    sync.Mutex
	owner string
}

func (o *owners) set(id string) {
	o.mu.Lock()
	o.owner = id
	o.mu.Unlock()
}

type ownerView struct {
	*owners
	self string
}

func (v ownerView) Owns(string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.owner == v.self
}

func (v ownerView) Owner(string) (string, string, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.owner, "addr-" + v.owner, v.owner != ""
}

func (ownerView) ShardOf(string) int       { return 0 }
func (ownerView) Address(id string) string { return "addr-" + id }
func (ownerView) Close(context.Context)    {}

func memoryRecords(t *testing.T) *records.Log {
	t.Helper()
	recs, err := records.Open(context.Background(), records.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(recs.Close)
	return recs
}

func clusterController(t *testing.T, own *owners, self string, workers ...workerapi.Worker) *Controller {
	t.Helper()
	c := New(Options{Registry: registry.New(noFunctions{}, nil, archive.DefaultLimits(), nil), Metrics: metrics.New(),
		Records: memoryRecords(t), Ownership: ownerView{own, self}, Self: self, AuditInterval: 50 * time.Millisecond})
	ctx := context.Background()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		_ = c.Shutdown(sctx)
	})
	for _, w := range workers {
		if err := c.AddWorker(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func testFunction(t *testing.T, name string) function.Function {
	t.Helper()
	spec, err := function.Spec{Runtime: "nodejs", Handler: "index.handler"}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	return function.Function{Name: name, Version: 1, Spec: spec, CodeDigest: "sha256:" + zeros64}
}

func liveInstances(t *testing.T, w *fake.Worker, fn string) []workerapi.Instance {
	t.Helper()
	all, err := w.Instances(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []workerapi.Instance
	for _, in := range all {
		if in.Function == fn && (in.State == workerapi.Ready || in.State == workerapi.Starting) {
			out = append(out, in)
		}
	}
	return out
}

// A function moves from one controller to another: requests sent to the
// non-owner are routed to the owner, the new owner takes the warm
// instance over instead of starting another, and the old owner forgets
// it without stopping it.
func TestOwnershipHandOverAdoptsInstances(t *testing.T) {
	w := fake.New(fake.Options{ID: "w"})
	defer w.Close()
	own := &owners{owner: "c1"}
	c1 := clusterController(t, own, "c1", w)
	c2 := clusterController(t, own, "c2", w)
	fn := testFunction(t, "f")
	c1.setKnown(fn)
	c2.setKnown(fn)
	ctx := context.Background()

	c1.poke()
	if addr, err := c1.Route(ctx, "f", false); err != nil || addr != "" {
		t.Fatalf("owner's route: %q, %v; want here", addr, err)
	}
	if addr, err := c2.Route(ctx, "f", false); err != nil || addr != "addr-c1" {
		t.Fatalf("non-owner's route: %q, %v; want addr-c1", addr, err)
	}
	if c2.router.Has("f") {
		t.Fatal("the non-owner's router holds the function")
	}
	inv, err := c1.Invoke(ctx, "f", "", []byte(`{}`))
	if err != nil || inv.Err != nil || !inv.Cold {
		t.Fatalf("first call on the owner: %+v, %v", inv, err)
	}

	own.set("c2")
	c1.ShardsChanged(nil, []int{0})
	c2.ShardsChanged([]int{0}, nil)
	if c1.router.Has("f") {
		t.Fatal("the old owner still holds the function after losing it")
	}
	if addr, err := c2.Route(ctx, "f", false); err != nil || addr != "" {
		t.Fatalf("new owner's route: %q, %v", addr, err)
	}
	waitUntil(t, "the new owner to adopt the instance", func() bool { return len(c2.Status("f").Instances) == 1 })
	inv, err = c2.Invoke(ctx, "f", "", []byte(`{}`))
	if err != nil || inv.Err != nil || inv.Cold {
		t.Fatalf("call on the new owner: %+v, %v; want a warm call", inv, err)
	}
	if got := liveInstances(t, w, "f"); len(got) != 1 {
		t.Fatalf("worker runs %d instances of f after the hand-over, want the one adopted: %+v", len(got), got)
	}

	// A forwarded request to a controller that does not own the function
	// waits rather than bouncing it, and gets a clear error in the end.
	c1.ownerWait = 100 * time.Millisecond
	if _, err := c1.Route(ctx, "f", true); err == nil {
		t.Fatal("a forwarded request on a non-owner was routed")
	}
	// Unless another controller stays the owner for forwardedPatience:
	// the forwarder's view was stale, and the request goes on to the owner
	// instead of waiting out OwnerWait.
	c1.ownerWait = time.Minute
	if addr, err := c1.Route(ctx, "f", true); err != nil || addr != "addr-c2" {
		t.Fatalf("a forwarded request on a non-owner while c2 owns f: %q, %v; want addr-c2", addr, err)
	}
}

// A worker that comes back with instances: those of a function the
// controller holds are adopted, those of a function that no longer exists
// are stopped.
func TestWorkerRejoinAdoptsAndStopsOrphans(t *testing.T) {
	w := fake.New(fake.Options{ID: "w"})
	defer w.Close()
	ctx := context.Background()
	start := func(fn function.Function) string {
		in, err := w.StartInstance(ctx, workerapi.InstanceSpec{Function: fn.Name, Version: fn.Version, Spec: fn.Spec, CodeDigest: fn.CodeDigest})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.WaitInstance(ctx, in.ID); err != nil {
			t.Fatal(err)
		}
		return in.ID
	}
	kept := testFunction(t, "kept")
	keptID := start(kept)
	start(testFunction(t, "gone"))

	own := &owners{owner: "c1"}
	c := clusterController(t, own, "c1")
	c.setKnown(kept)
	c.poke()
	waitUntil(t, "the controller to hold kept", func() bool { return c.router.Has("kept") })
	if err := c.AddWorker(ctx, w); err != nil {
		t.Fatal(err)
	}
	if got := liveInstances(t, w, "gone"); len(got) != 0 {
		t.Fatalf("instances of a deleted function left running: %+v", got)
	}
	st := c.Status("kept")
	if len(st.Instances) != 1 || st.Instances[0].ID != keptID {
		t.Fatalf("kept's instance was not adopted: %+v", st)
	}
	inv, err := c.Invoke(ctx, "kept", "", []byte(`{}`))
	if err != nil || inv.Err != nil || inv.Cold {
		t.Fatalf("call on the adopted instance: %+v, %v", inv, err)
	}
}

// An instance that appears on a worker the controller already uses,
// without the controller having started it (a controller that died
// mid-start), is found by the audit and adopted.
func TestAuditAdoptsUntrackedInstances(t *testing.T) {
	w := fake.New(fake.Options{ID: "w"})
	defer w.Close()
	ctx := context.Background()
	own := &owners{owner: "c1"}
	c := clusterController(t, own, "c1", w)
	fn := testFunction(t, "f")
	c.setKnown(fn)
	c.poke()
	waitUntil(t, "the controller to hold f", func() bool { return c.router.Has("f") })
	in, err := w.StartInstance(ctx, workerapi.InstanceSpec{Function: fn.Name, Version: fn.Version, Spec: fn.Spec, CodeDigest: fn.CodeDigest})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the audit to adopt the instance", func() bool { return c.router.Tracks("f", "w", in.ID) })
}

// In cluster mode a controller that shuts down leaves the instances for
// the next owner.
func TestShutdownLeavesInstancesInClusterMode(t *testing.T) {
	w := fake.New(fake.Options{ID: "w"})
	defer w.Close()
	own := &owners{owner: "c1"}
	c := New(Options{Registry: registry.New(noFunctions{}, nil, archive.DefaultLimits(), nil), Metrics: metrics.New(),
		Records: memoryRecords(t), Ownership: ownerView{own, "c1"}, Self: "c1"})
	ctx := context.Background()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.AddWorker(ctx, w); err != nil {
		t.Fatal(err)
	}
	fn := testFunction(t, "f")
	c.setKnown(fn)
	c.poke()
	waitUntil(t, "the controller to hold f", func() bool { return c.router.Has("f") })
	if inv, err := c.Invoke(ctx, "f", "", []byte(`{}`)); err != nil || inv.Err != nil {
		t.Fatalf("invoke: %+v, %v", inv, err)
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := c.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if got := liveInstances(t, w, "f"); len(got) != 1 {
		t.Fatalf("after shutdown the worker runs %d instances of f, want 1 left for the next owner", len(got))
	}
}
