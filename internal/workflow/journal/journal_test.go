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
	if err := j.Store(ctx, start); err != nil {
		t.Fatal(err)
	}
	// Steps finish faster than they are written: only the newest state
	// of the execution needs to reach the store.
	for i := range 50 {
		x := start
		x.ResumeAt, x.ResumeInput = fmt.Sprintf("step-%d", i), json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))
		j.Record(x)
	}
	clustertest.Eventually(t, "the last resume point to be stored", func() bool {
		x, err := j.Get(ctx, "e1")
		return err == nil && x.ResumeAt == "step-49" && string(x.ResumeInput) == `{"i":49}`
	})
	other := Execution{ID: "e2", Workflow: "orders", Status: Running, Started: time.Now().UTC()}
	j.Record(other)
	done := start
	done.Status, done.Output, done.Stopped = Succeeded, json.RawMessage(`{"ok":true}`), time.Now().UTC()
	if err := j.Store(ctx, done); err != nil {
		t.Fatal(err)
	}
	// A late queued state does not overwrite the final one.
	stale := start
	stale.ResumeAt = "stale"
	stale.Updated = time.Time{}
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
