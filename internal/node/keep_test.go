package node

import (
	"context"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/runtimes"
	"github.com/baton-faas/baton/internal/sandbox/process"
	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/workerapitest"
)

// newKeepingNode is a node with process sandboxes that keeps zygotes for
// keep; capacityMB 0 means the host's memory.
func newKeepingNode(t *testing.T, keep time.Duration, capacityMB int) (*Worker, *workerapitest.PythonCode) {
	t.Helper()
	if runtimes.Python() == "" {
		t.Skip("python3 is not installed: the test's functions are Python")
	}
	return newPythonNode(t, Options{ZygoteKeep: keep, Capacity: workerapi.Resources{MemoryMB: capacityMB}})
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// startReady starts an instance of spec and waits until it is ready.
func startReady(t *testing.T, w *Worker, spec workerapi.InstanceSpec) workerapi.Instance {
	t.Helper()
	ctx := testCtx(t)
	in, err := w.StartInstance(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	ready, err := w.WaitInstance(ctx, in.ID)
	if err != nil {
		t.Fatalf("start of %s v%d: %v", spec.Function, spec.Version, err)
	}
	return ready
}

func stop(t *testing.T, w *Worker, id string) {
	t.Helper()
	if err := w.StopInstance(testCtx(t), id); err != nil {
		t.Fatal(err)
	}
}

// keptGrain returns the kept grain worker of spec (nil if none).
func keptGrain(w *Worker, spec workerapi.InstanceSpec) *grainWorker {
	w.grains.mu.Lock()
	defer w.grains.mu.Unlock()
	if g := w.grains.grains[grainKey(spec)]; g != nil && g.kept {
		return g
	}
	return nil
}

// assertReleased waits until w holds nothing (see assertNothingHeld) and
// g's zygote process has been reaped.
func assertReleased(t *testing.T, w *Worker, g *grainWorker) {
	t.Helper()
	waitFor(t, "the keep to be dropped", func() bool { return w.Zygotes().Now == 0 && w.apps.count() == 0 })
	select {
	case <-g.exited:
	case <-time.After(time.Minute):
		t.Fatal("the dropped zygote's process is still running")
	}
	assertNothingHeld(t, w)
	if refs, _ := w.code.refs(g.spec.CodeDigest); refs != 0 {
		t.Errorf("code references after the keep ended: %d", refs)
	}
}

// A version scaled to zero keeps its zygote and sandbox; its next start
// forks from them (the same zygote process) without counting as an
// instance meanwhile.
func TestZygoteKeptAcrossScaleToZero(t *testing.T) {
	w, code := newKeepingNode(t, time.Hour, 0)
	spec := code.Deploy(t, "kept", workerapitest.Echo)
	first := startReady(t, w, spec)
	stop(t, w, first.ID)

	g := keptGrain(w, spec)
	if g == nil {
		t.Fatal("the zygote was not kept after its last instance was stopped")
	}
	if st := w.Zygotes(); st.Now != 1 || st.Kept != 1 || st.MemoryMB != spec.Spec.MemoryMB {
		t.Fatalf("zygote stats %+v, want one kept of %d MB", st, spec.Spec.MemoryMB)
	}
	info, err := w.Info(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.Instances != 0 || info.Reserved.MemoryMB != 0 {
		t.Fatalf("a kept zygote counts as an instance: %d instances, %d MB reserved", info.Instances, info.Reserved.MemoryMB)
	}
	if insts, _ := w.Instances(testCtx(t)); len(insts) != 0 {
		t.Fatalf("instances listed while only a zygote is kept: %+v", insts)
	}
	zygotePid := g.proc.Pid()
	keptLimits := w.apps.limits(g.app)

	second := startReady(t, w, spec)
	if got := w.apps.limits(g.app); got != keptLimits {
		t.Errorf("the sandbox's limits changed when the kept zygote was taken back: %+v, then %+v", keptLimits, got)
	}
	if !second.Forked || w.Zygotes().Revived != 1 || w.Zygotes().Now != 0 {
		t.Fatalf("the start after scale-to-zero: forked %v, stats %+v; want a fork from the kept zygote", second.Forked, w.Zygotes())
	}
	in, _ := w.instances.instance(second.ID)
	if in == nil || in.grain != g || !in.revived || in.grain.proc.Pid() != zygotePid {
		t.Fatal("the instance was not forked from the kept zygote")
	}
	res, err := w.Invoke(testCtx(t), second.ID, workerapi.Invocation{ID: "r1", Payload: []byte(`{"x":1}`), Deadline: time.Now().Add(time.Minute)})
	if err != nil || string(res.Payload) != `{"x": 1}` && string(res.Payload) != `{"x":1}` {
		t.Fatalf("invoke on the revived instance: %q %v", res.Payload, err)
	}
	// Kept again when it scales to zero again.
	stop(t, w, second.ID)
	if keptGrain(w, spec) != g {
		t.Fatal("the zygote was not kept the second time")
	}
}

// A new version and a delete drop the kept zygote, and an old version is
// no longer kept once a newer one is known.
func TestKeptZygoteDroppedOnDeployAndDelete(t *testing.T) {
	w, code := newKeepingNode(t, time.Hour, 0)
	spec := code.Deploy(t, "redeployed", workerapitest.Echo)
	stop(t, w, startReady(t, w, spec).ID)
	g := keptGrain(w, spec)
	if g == nil {
		t.Fatal("not kept")
	}
	w.FunctionChanged(spec.Function, spec.Version) // the same version: nothing to drop
	if keptGrain(w, spec) != g {
		t.Fatal("the keep was dropped though the version did not change")
	}
	w.FunctionChanged(spec.Function, spec.Version+1)
	assertReleased(t, w, g)

	// Version 1's instance stopped after version 2 was deployed is not
	// kept.
	old := startReady(t, w, spec)
	stop(t, w, old.ID)
	if keptGrain(w, spec) != nil || w.grains.count() != 0 {
		t.Fatal("a superseded version's zygote was kept")
	}

	v2 := spec
	v2.Version++
	stop(t, w, startReady(t, w, v2).ID)
	g2 := keptGrain(w, v2)
	if g2 == nil {
		t.Fatal("version 2 not kept")
	}
	w.FunctionChanged(v2.Function, 0) // deleted
	assertReleased(t, w, g2)
}

// The keep window's end stops the zygote and releases its sandbox and
// code.
func TestKeepWindowEnds(t *testing.T) {
	w, code := newKeepingNode(t, 200*time.Millisecond, 0)
	spec := code.Deploy(t, "brief", workerapitest.Echo)
	stop(t, w, startReady(t, w, spec).ID)
	g := keptGrain(w, spec)
	if g == nil {
		t.Fatal("not kept")
	}
	assertReleased(t, w, g)
	if st := w.Zygotes(); st.Dropped != 1 || st.Revived != 0 {
		t.Fatalf("stats %+v, want one keep dropped", st)
	}
}

// An instance that dies on its own (a crash) keeps nothing.
func TestCrashedInstanceKeepsNothing(t *testing.T) {
	w, code := newKeepingNode(t, time.Hour, 0)
	spec := code.Deploy(t, "crashy", workerapitest.Echo)
	ready := startReady(t, w, spec)
	in, ok := w.instances.instance(ready.ID)
	if !ok {
		t.Fatal("no instance")
	}
	g := in.grain
	w.kill(in)
	waitFor(t, "the crashed instance's zygote to go", func() bool { return w.grains.count() == 0 && w.apps.count() == 0 })
	<-g.exited
	if st := w.Zygotes(); st.Kept != 0 {
		t.Fatalf("stats %+v: a crashed instance's zygote was kept", st)
	}
}

// Kept zygotes give way to instances when the node's memory is short:
// they count in its capacity at their memoryMB.
func TestKeptZygoteEvictedForMemory(t *testing.T) {
	w, code := newKeepingNode(t, time.Hour, 200) // room for one 128 MB function
	a := code.Deploy(t, "evicted", workerapitest.Echo)
	stop(t, w, startReady(t, w, a).ID)
	g := keptGrain(w, a)
	if g == nil {
		t.Fatal("not kept")
	}
	b := code.Deploy(t, "newcomer", workerapitest.Echo)
	startReady(t, w, b)
	waitFor(t, "the keep to give way", func() bool { return keptGrain(w, a) == nil })
	<-g.exited
	if st := w.Zygotes(); st.Dropped != 1 || st.Now != 0 {
		t.Fatalf("stats %+v, want the keep dropped for memory", st)
	}
}

// Close stops kept zygotes too.
func TestCloseDropsKeptZygotes(t *testing.T) {
	if runtimes.Python() == "" {
		t.Skip("python3 is not installed: the test's functions are Python")
	}
	code := workerapitest.NewPythonCode()
	w, err := New(Options{ID: "node-keep", DataDir: t.TempDir(), Sandboxes: process.New(), Code: code, ZygoteKeep: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	spec := code.Deploy(t, "closing", workerapitest.Echo)
	stop(t, w, startReady(t, w, spec).ID)
	g := keptGrain(w, spec)
	if g == nil {
		t.Fatal("not kept")
	}
	if err := w.Close(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.exited:
	default:
		t.Fatal("a kept zygote outlived Close")
	}
}

// A kept grain worker's page cache is reclaimed once, after reclaimDelay.
func TestKeptZygoteReclaimIsDelayed(t *testing.T) {
	var tab grainTable
	tab.init()
	now := time.Now()
	g := &grainWorker{key: "k", kept: true, reclaimAt: now.Add(reclaimDelay(time.Minute))}
	tab.grains["k"] = g
	if due := tab.reclaimDue(now); len(due) != 0 {
		t.Fatalf("reclaimed at once: %v", due)
	}
	later := now.Add(time.Minute)
	if due := tab.reclaimDue(later); len(due) != 1 || due[0] != g {
		t.Fatalf("not reclaimed when due: %v", due)
	}
	if due := tab.reclaimDue(later); len(due) != 0 {
		t.Fatal("reclaimed twice")
	}
	if d := reclaimDelay(3 * time.Minute); d != 30*time.Second {
		t.Fatalf("reclaim delay of a 3 minute keep: %s", d)
	}
}
