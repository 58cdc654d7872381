// Package workerapitest is the conformance suite of workerapi.Worker: every
// implementation (the node, the fake, a network transport) runs it.
package workerapitest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/workerapi"
)

// Kind is how a function used by the suite behaves.
type Kind string

const (
	// Echo starts and answers an invocation with its payload.
	Echo Kind = "echo"
	// InitFails has code that fails to initialise (raises at import): its
	// start fails with an *workerapi.InitError.
	InitFails Kind = "init-fails"
	// SlowStart takes far longer to start than any test waits (minutes).
	SlowStart Kind = "slow-start"
	// Crashes kills its instance when invoked.
	Crashes Kind = "crashes"
)

// Deployer makes functions available to the worker under test.
type Deployer interface {
	// Deploy makes a function of kind available (its code stored where
	// the worker fetches code by digest, or its behaviour set) and returns
	// the spec that starts it.
	Deploy(t *testing.T, name string, kind Kind) workerapi.InstanceSpec
}

// EventBuffer is the largest event buffer the suite's workers may keep:
// newWorker must configure at most this many, so that overflow (Resync)
// can be tested with a few events.
const EventBuffer = 4

// wait bounds every wait of the suite: generous, for busy hosts.
const wait = 2 * time.Minute

// Run runs the suite. newWorker returns a fresh worker (closed by the
// caller's t.Cleanup) with an event buffer of EventBuffer events, and the
// Deployer that feeds it.
func Run(t *testing.T, newWorker func(t *testing.T) (workerapi.Worker, Deployer)) {
	tests := []struct {
		name string
		fn   func(t *testing.T, w workerapi.Worker, d Deployer)
	}{
		{"Info", testInfo},
		{"StartWaitReady", testStartWaitReady},
		{"StartFailure", testStartFailure},
		{"StopStarting", testStopStarting},
		{"UnknownInstance", testUnknownInstance},
		{"Events", testEvents},
		{"Resync", testResync},
		{"CancelledContext", testCancelledContext},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, d := newWorker(t)
			tc.fn(t, w, d)
		})
	}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

func workerID(t *testing.T, w workerapi.Worker) string {
	t.Helper()
	info, err := w.Info(ctxFor(t))
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	return info.ID
}

func testInfo(t *testing.T, w workerapi.Worker, _ Deployer) {
	info, err := w.Info(ctxFor(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.ID == "" || info.Isolation == "" {
		t.Errorf("Info %+v: want an id and an isolation", info)
	}
	if info.Capacity.MemoryMB <= 0 || info.Capacity.MilliCPUs <= 0 {
		t.Errorf("Info capacity %+v: want memory and CPU", info.Capacity)
	}
	if info.Instances != 0 || info.Reserved != (workerapi.Resources{}) {
		t.Errorf("a new worker reports instances or reservations: %+v", info)
	}
}

// start starts an instance of spec and checks the immediate answer.
func start(t *testing.T, w workerapi.Worker, spec workerapi.InstanceSpec) workerapi.Instance {
	t.Helper()
	in, err := w.StartInstance(ctxFor(t), spec)
	if err != nil {
		t.Fatalf("StartInstance: %v", err)
	}
	if in.ID == "" || in.State != workerapi.Starting || in.Function != spec.Function || in.Version != spec.Version {
		t.Fatalf("StartInstance answered %+v; want an id, State starting, function %s version %d", in, spec.Function, spec.Version)
	}
	return in
}

func startReady(t *testing.T, w workerapi.Worker, spec workerapi.InstanceSpec) workerapi.Instance {
	t.Helper()
	in := start(t, w, spec)
	ready, err := w.WaitInstance(ctxFor(t), in.ID)
	if err != nil {
		t.Fatalf("WaitInstance: %v", err)
	}
	if ready.ID != in.ID || ready.State != workerapi.Ready || ready.Capacity < 1 {
		t.Fatalf("WaitInstance answered %+v; want instance %s ready with a capacity", ready, in.ID)
	}
	return ready
}

func ids(t *testing.T, w workerapi.Worker) []string {
	t.Helper()
	list, err := w.Instances(ctxFor(t))
	if err != nil {
		t.Fatalf("Instances: %v", err)
	}
	var out []string
	for _, in := range list {
		out = append(out, in.ID)
	}
	return out
}

// eventually polls cond until it holds or the suite's wait passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, wait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testStartWaitReady(t *testing.T, w workerapi.Worker, d Deployer) {
	id := workerID(t, w)
	spec := d.Deploy(t, "echo", Echo)
	in := startReady(t, w, spec)
	if in.Worker != id {
		t.Errorf("instance carries worker %q, want %q", in.Worker, id)
	}
	list, err := w.Instances(ctxFor(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != in.ID || list[0].State != workerapi.Ready || list[0].Worker != id {
		t.Fatalf("Instances: %+v; want just %s, ready, on %s", list, in.ID, id)
	}
	info, err := w.Info(ctxFor(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.Instances != 1 || info.Reserved.MemoryMB != spec.Spec.MemoryMB {
		t.Errorf("Info with one instance: %+v; want 1 instance reserving %d MB", info, spec.Spec.MemoryMB)
	}
	payload := []byte(`{"hello":"world","n":[1,2,3]}`)
	res, err := w.Invoke(ctxFor(t), in.ID, workerapi.Invocation{ID: "inv-1", Payload: payload, Deadline: time.Now().Add(wait)})
	if err != nil {
		t.Fatalf("Invoke: %v", err)
	}
	if res.Error != nil || !sameJSON(res.Payload, payload) {
		t.Fatalf("Invoke answered %s (error %v); want the payload %s back", res.Payload, res.Error, payload)
	}
	if err := w.StopInstance(ctxFor(t), in.ID); err != nil {
		t.Fatalf("StopInstance: %v", err)
	}
	eventually(t, "the stopped instance leaves Instances", func() bool { return len(ids(t, w)) == 0 })
	if err := w.StopInstance(ctxFor(t), in.ID); err != nil {
		t.Errorf("stopping a stopped instance: %v", err)
	}
}

func sameJSON(a, b []byte) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

func testStartFailure(t *testing.T, w workerapi.Worker, d Deployer) {
	in := start(t, w, d.Deploy(t, "broken", InitFails))
	_, err := w.WaitInstance(ctxFor(t), in.ID)
	var initErr *workerapi.InitError
	if !errors.As(err, &initErr) {
		t.Fatalf("WaitInstance for code that fails at import: %v; want an *InitError", err)
	}
	if _, again := w.WaitInstance(ctxFor(t), in.ID); !errors.As(again, &initErr) {
		t.Errorf("a second WaitInstance: %v; want the init error again", again)
	}
	if slices.Contains(ids(t, w), in.ID) {
		t.Error("a failed instance is listed")
	}
}

func testStopStarting(t *testing.T, w workerapi.Worker, d Deployer) {
	in := start(t, w, d.Deploy(t, "slow", SlowStart))
	waited := make(chan error, 1)
	go func() {
		_, err := w.WaitInstance(ctxFor(t), in.ID)
		waited <- err
	}()
	if !slices.Contains(ids(t, w), in.ID) {
		t.Error("a starting instance is not listed")
	}
	if err := w.StopInstance(ctxFor(t), in.ID); err != nil {
		t.Fatalf("StopInstance of a starting instance: %v", err)
	}
	select {
	case err := <-waited:
		var initErr *workerapi.InitError
		if err == nil || errors.As(err, &initErr) {
			t.Errorf("WaitInstance of a stopped start: %v; want a cancellation, not readiness nor an init error", err)
		}
	case <-time.After(wait):
		t.Fatal("WaitInstance did not return after the start was stopped")
	}
	// The cancelled start released everything it took.
	eventually(t, "the worker is empty after a cancelled start", func() bool {
		info, err := w.Info(ctxFor(t))
		return err == nil && info.Instances == 0 && info.Sandboxes == 0 && info.Reserved == (workerapi.Resources{})
	})
}

func testUnknownInstance(t *testing.T, w workerapi.Worker, _ Deployer) {
	_, err := w.Invoke(ctxFor(t), "no-such-instance", workerapi.Invocation{ID: "x", Payload: []byte("{}"), Deadline: time.Now().Add(time.Minute)})
	var f *workerapi.Failure
	if !errors.As(err, &f) || f.Kind != workerapi.FailureNotDelivered {
		t.Errorf("Invoke on an unknown instance: %v; want a Failure %s", err, workerapi.FailureNotDelivered)
	}
	if _, err := w.WaitInstance(ctxFor(t), "no-such-instance"); !errors.Is(err, workerapi.ErrUnknownInstance) {
		t.Errorf("WaitInstance of an unknown instance: %v; want ErrUnknownInstance", err)
	}
	if err := w.StopInstance(ctxFor(t), "no-such-instance"); err != nil {
		t.Errorf("StopInstance of an unknown instance: %v", err)
	}
}

// next reads the next event, failing the test after the suite's wait.
func next(t *testing.T, ch <-chan workerapi.Event) workerapi.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("event stream closed")
		}
		return ev
	case <-time.After(wait):
		t.Fatal("no event")
	}
	return workerapi.Event{}
}

func testEvents(t *testing.T, w workerapi.Worker, d Deployer) {
	id := workerID(t, w)
	ch, err := w.Events(ctxFor(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	echo := startReady(t, w, d.Deploy(t, "echo", Echo))
	ready := next(t, ch)
	if ready.Kind != workerapi.InstanceReady || ready.Instance != echo.ID || ready.Worker != id || ready.Seq == 0 ||
		ready.Ready == nil || ready.Ready.State != workerapi.Ready {
		t.Fatalf("first event %+v; want instance-ready of %s from %s with the ready instance", ready, echo.ID, id)
	}
	crash := startReady(t, w, d.Deploy(t, "crash", Crashes))
	if ev := next(t, ch); ev.Kind != workerapi.InstanceReady || ev.Instance != crash.ID || ev.Seq <= ready.Seq {
		t.Fatalf("event %+v; want instance-ready of %s after Seq %d", ev, crash.ID, ready.Seq)
	}
	_, err = w.Invoke(ctxFor(t), crash.ID, workerapi.Invocation{ID: "c", Payload: []byte("{}"), Deadline: time.Now().Add(wait)})
	var f *workerapi.Failure
	if !errors.As(err, &f) {
		t.Fatalf("invoking a crashing function: %v; want a Failure", err)
	}
	exited := next(t, ch)
	if exited.Kind != workerapi.InstanceExited || exited.Instance != crash.ID || exited.Function != "crash" || exited.Seq <= ready.Seq {
		t.Fatalf("event %+v; want instance-exited of %s", exited, crash.ID)
	}
	// A stop asked for is not an exit event.
	if err := w.StopInstance(ctxFor(t), echo.ID); err != nil {
		t.Fatal(err)
	}

	// Resuming after a Seq gives the events after it, in order.
	resumed, err := w.Events(ctxFor(t), ready.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, resumed); ev.Kind != workerapi.InstanceReady || ev.Instance != crash.ID || ev.Seq != ready.Seq+1 {
		t.Fatalf("resumed after %d: %+v; want instance-ready of %s with Seq %d", ready.Seq, ev, crash.ID, ready.Seq+1)
	}
	if ev := next(t, resumed); ev.Seq != exited.Seq || ev.Kind != workerapi.InstanceExited {
		t.Fatalf("resumed: second event %+v; want the exit (Seq %d)", ev, exited.Seq)
	}
	// The stream ends with its context.
	ctx, cancel := context.WithCancel(context.Background())
	short, err := w.Events(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case _, ok := <-short:
		if ok {
			t.Error("an event on a stream whose context ended")
		}
	case <-time.After(wait):
		t.Error("a stream stayed open after its context ended")
	}
}

func testResync(t *testing.T, w workerapi.Worker, d Deployer) {
	ch, err := w.Events(ctxFor(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	spec := d.Deploy(t, "echo", Echo)
	var first workerapi.Event
	for i := range EventBuffer + 2 {
		in := startReady(t, w, spec)
		ev := next(t, ch)
		if ev.Kind != workerapi.InstanceReady || ev.Instance != in.ID {
			t.Fatalf("event %+v; want instance-ready of %s", ev, in.ID)
		}
		if i == 0 {
			first = ev
		}
	}
	// The event after first was dropped: a reader resuming there must
	// reconcile.
	late, err := w.Events(ctxFor(t), first.Seq)
	if err != nil {
		t.Fatal(err)
	}
	rs := next(t, late)
	if rs.Kind != workerapi.Resync {
		t.Fatalf("resuming after a dropped event: %+v; want a resync first", rs)
	}
	if ev := next(t, late); ev.Kind != workerapi.InstanceReady || ev.Seq <= first.Seq+1 || ev.Seq != rs.Seq+1 {
		t.Fatalf("after the resync (Seq %d): %+v; want the oldest kept event", rs.Seq, ev)
	}
	// A Seq the worker never issued (a reader of an earlier incarnation)
	// also needs a resync.
	future, err := w.Events(ctxFor(t), first.Seq+1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, future); ev.Kind != workerapi.Resync {
		t.Fatalf("resuming after an unknown Seq: %+v; want a resync", ev)
	}
}

func testCancelledContext(t *testing.T, w workerapi.Worker, d Deployer) {
	spec := d.Deploy(t, "echo", Echo)
	live := startReady(t, w, spec)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	check := func(call string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: %v; want context.Canceled", call, err)
		}
	}
	_, err := w.Info(ctx)
	check("Info", err)
	_, err = w.StartInstance(ctx, spec)
	check("StartInstance", err)
	_, err = w.WaitInstance(ctx, live.ID)
	check("WaitInstance", err)
	check("StopInstance", w.StopInstance(ctx, live.ID))
	_, err = w.Instances(ctx)
	check("Instances", err)
	_, err = w.Invoke(ctx, live.ID, workerapi.Invocation{ID: "x", Payload: []byte("{}"), Deadline: time.Now().Add(time.Minute)})
	check("Invoke", err)
	_, err = w.Events(ctx, 0)
	check("Events", err)
	_, err = w.Images(ctx)
	check("Images", err)
	check("CheckImage", w.CheckImage(ctx, "some-image"))
	_, err = w.ImportImage(ctx, "some-image", nil)
	check("ImportImage", err)
	check("RemoveImage", w.RemoveImage(ctx, "some-image", nil))
	// Nothing happened: the instance still runs and is the only one.
	if got := ids(t, w); !slices.Equal(got, []string{live.ID}) {
		t.Errorf("instances after calls with a cancelled context: %v; want [%s]", got, live.ID)
	}
	if err := w.StopInstance(ctxFor(t), live.ID); err != nil {
		t.Error(fmt.Errorf("stop: %w", err))
	}
}
