package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/test/harness"
)

// TestTriggers: a rate(1 second) schedule fires once per tick with its
// event, and stops when removed; every message published on a NATS
// subject becomes an invocation with the message as its event; bad
// triggers are refused with the field named.
func TestTriggers(t *testing.T) {
	t.Parallel()
	natsAddr := harness.FreeAddr(t)
	srv := harness.Start(t, harness.Options{Args: []string{"--sandbox", "fake", "--fake-start-latency", "20ms", "--nats-listen", natsAddr}})
	c := srv.Client
	deploy(t, srv, "ticker", pySpec("echo"), pyDir)
	deploy(t, srv, "orders", pySpec("echo"), pyDir)

	for _, bad := range []apiv1.TriggerRequest{
		{Function: "ticker", Schedule: "rate(0 seconds)"},
		{Function: "ticker", Schedule: "cron(0 12 * * * *)"},
		{Function: "ticker", Schedule: "every minute"},
		{Function: "ticker"},
		{Function: "ticker", Schedule: "rate(1 minute)", NATSSubject: "a.b"},
		{Function: "ticker", NATSSubject: "baton.async.ticker"},
		{Function: "ticker", NATSSubject: "a..b"},
	} {
		if _, err := c.AddTrigger(ctx(t), bad); !hasStatus(err, http.StatusBadRequest, "") {
			t.Errorf("trigger %+v: %v, want 400", bad, err)
		}
	}
	if _, err := c.AddTrigger(ctx(t), apiv1.TriggerRequest{Function: "nope", Schedule: "rate(1 minute)"}); !hasStatus(err, http.StatusNotFound, "function_not_found") {
		t.Errorf("trigger of an unknown function: %v", err)
	}

	tick, err := c.AddTrigger(ctx(t), apiv1.TriggerRequest{Function: "ticker", Schedule: "rate(1 second)", Event: json.RawMessage(`{"tick":true}`)})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, settle, "the schedule to fire 3 times", func() (bool, string) {
		ts, err := c.Triggers(ctx(t), "ticker")
		if err != nil || len(ts) != 1 {
			return false, fmt.Sprint(ts, err)
		}
		return ts[0].Fired >= 3, fmt.Sprintf("fired %d", ts[0].Fired)
	})
	if err := c.RemoveTrigger(ctx(t), tick.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveTrigger(ctx(t), tick.ID); !hasStatus(err, http.StatusNotFound, "") {
		t.Errorf("removing a removed trigger: %v", err)
	}
	// Every fired tick ran once, with the trigger's event.
	var runs int
	waitFor(t, settle, "the ticks' invocations to be recorded", func() (bool, string) {
		recs, err := c.Invocations(ctx(t), "ticker", 1000)
		if err != nil {
			return false, err.Error()
		}
		runs = len(recs)
		return runs >= 3, fmt.Sprint(runs)
	})
	time.Sleep(2 * time.Second) // a tick fired as the trigger was removed has landed by now
	recs, err := c.Invocations(ctx(t), "ticker", 1000)
	if err != nil {
		t.Fatal(err)
	}
	after := len(recs)
	time.Sleep(2 * time.Second)
	if recs, _ := c.Invocations(ctx(t), "ticker", 1000); len(recs) != after {
		t.Errorf("the schedule fired after it was removed: %d invocations, then %d", after, len(recs))
	}

	sub, err := c.AddTrigger(ctx(t), apiv1.TriggerRequest{Function: "orders", NATSSubject: "shop.orders.*"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddTrigger(ctx(t), apiv1.TriggerRequest{Function: "orders", NATSSubject: "shop.>"}); !hasStatus(err, http.StatusConflict, "") {
		t.Errorf("an overlapping subject: %v, want 409", err)
	}
	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for i := range 5 {
		if err := nc.Publish(fmt.Sprintf("shop.orders.%d", i), []byte(fmt.Sprintf(`{"order":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, settle, "every message to become an invocation", func() (bool, string) {
		recs, err := c.Invocations(ctx(t), "orders", 100)
		if err != nil {
			return false, err.Error()
		}
		return len(recs) == 5, fmt.Sprint(len(recs), " invocations")
	})
	ts, err := c.Triggers(ctx(t), "orders")
	if err != nil || len(ts) != 1 || ts[0].ID != sub.ID || ts[0].Fired != 5 || !strings.HasPrefix(ts[0].NATSSubject, "shop.") {
		t.Fatalf("nats trigger: %+v, %v", ts, err)
	}
}
