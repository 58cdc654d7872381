package journal

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/cluster/clustertest"
)

func TestRecordStoreAndResumePoints(t *testing.T) {
	s := clustertest.Server(t)
	nc, _ := clustertest.Connect(t, s)
	ctx := clustertest.Context(t)
	j, err := Open(ctx, nc, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := Execution{ID: "e1", Workflow: "orders", Version: 1, Status: Running, Input: json.RawMessage(`{"n":1}`), Started: time.Now().UTC()}
	if _, err := j.Create(ctx, start); err != nil {
		t.Fatal(err)
	}
	// Steps finish faster than they are written: only the newest state
	// of the execution needs to reach the store.
	for i := range 50 {
		x := start
		x.Seq = i + 1
		x.ResumeAt, x.ResumeInput = fmt.Sprintf("step-%d", i), json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))
		j.Record(x)
	}
	clustertest.Eventually(t, "the last resume point to be stored", func() bool {
		x, err := j.Get(ctx, "e1")
		return err == nil && x.ResumeAt == "step-49" && string(x.ResumeInput) == `{"i":49}`
	})
	other := Execution{ID: "e2", Workflow: "orders", Status: Running, Started: time.Now().UTC()}
	if _, err := j.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	done := start
	done.Status, done.Output, done.Stopped, done.Seq = Succeeded, json.RawMessage(`{"ok":true}`), time.Now().UTC(), 100
	if err := j.Store(ctx, done); err != nil {
		t.Fatal(err)
	}
	// A late queued state does not overwrite the final one.
	stale := start
	stale.ResumeAt, stale.Seq = "stale", 99
	if err := j.put(ctx, stale); err != nil {
		t.Fatal(err)
	}
	j.Close()
	x, err := j.Get(ctx, "e1")
	if err != nil || x.Status != Succeeded || string(x.Output) != `{"ok":true}` {
		t.Fatalf("final state %+v, %v", x, err)
	}
	un, err := j.Unfinished(ctx)
	if err != nil || len(un) != 1 || un[0].ID != "e2" {
		t.Fatalf("unfinished %+v, %v", un, err)
	}
	if _, err := j.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown execution: %v", err)
	}
	j.Record(other) // after Close: logged, not a panic
}

func TestCreateClaimListAndHistory(t *testing.T) {
	s := clustertest.Server(t)
	nc, _ := clustertest.Connect(t, s)
	ctx := clustertest.Context(t)
	j, err := Open(ctx, nc, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	first := Execution{ID: "orders.a", Workflow: "orders", Status: Running, Holder: "c1", Started: time.Now().UTC()}
	if _, err := j.Create(ctx, first); err != nil {
		t.Fatal(err)
	}
	again := first
	again.Holder = "c2"
	if x, err := j.Create(ctx, again); !errors.Is(err, ErrExists) || x.Holder != "c1" {
		t.Fatalf("second create: %+v, %v", x, err)
	}
	if _, err := j.Create(ctx, Execution{ID: "billing.b", Workflow: "billing", Status: Running, Started: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	// Two runners claim the lost execution as they saw it: one wins.
	won, err := j.Claim(ctx, first, "c2")
	if err != nil || won.Epoch != 1 || won.Holder != "c2" {
		t.Fatalf("claim: %+v, %v", won, err)
	}
	if _, err := j.Claim(ctx, first, "c3"); !errors.Is(err, ErrClaimed) {
		t.Fatalf("second claim: %v", err)
	}
	// The old holder's late write (epoch 0) does not undo the claim.
	late := first
	late.Seq, late.ResumeAt = 50, "late"
	if err := j.Store(ctx, late); err != nil {
		t.Fatal(err)
	}
	if x, _ := j.Get(ctx, "orders.a"); x.Holder != "c2" || x.ResumeAt == "late" {
		t.Fatalf("after a stale write: %+v", x)
	}
	list, err := j.List(ctx, "orders", 0)
	if err != nil || len(list) != 1 || list[0].ID != "orders.a" {
		t.Fatalf("list: %+v, %v", list, err)
	}
	if list, err := j.List(ctx, "nothing", 0); err != nil || len(list) != 0 {
		t.Fatalf("empty list: %+v, %v", list, err)
	}

	h, err := OpenHistory(ctx, nc, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 700 {
		h.Append("orders.a", HistoryEvent{Kind: "StateEntered", State: fmt.Sprint(i), Time: time.Now()})
	}
	h.Append("billing.b", HistoryEvent{Kind: "StateEntered", State: "other"})
	h.Flush(ctx)
	evs, err := h.Read(ctx, "orders.a", 0)
	if err != nil || len(evs) != 700 {
		t.Fatalf("history: %d events, %v", len(evs), err)
	}
	for i, ev := range evs {
		if ev.State != fmt.Sprint(i) {
			t.Fatalf("event %d is %+v: out of order", i, ev)
		}
	}
	if evs, err := h.Read(ctx, "none.x", 0); err != nil || len(evs) != 0 {
		t.Fatalf("no history: %d, %v", len(evs), err)
	}
}
