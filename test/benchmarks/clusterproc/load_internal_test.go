package clusterproc

import (
	"testing"
	"time"
)

// TestRecoveryOf checks the arithmetic the failover figures rest on: a
// function's gap ends with its first success sent after the event, and
// only failures that ended after the event are the event's.
func TestRecoveryOf(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	results := []result{
		{fn: "a", sent: at(-500), done: at(-490), ok: false, what: "HTTP 500 x"},      // before the event
		{fn: "a", sent: at(-10), done: at(5), ok: false, what: "connection reset"},    // in flight at it
		{fn: "a", sent: at(-20), done: at(-15), ok: true},                             // success before it
		{fn: "a", sent: at(10), done: at(3000), ok: true},                             // held, then served
		{fn: "a", sent: at(20), done: at(3010), ok: true},                             // later success
		{fn: "b", sent: at(30), done: at(40), ok: false, what: "HTTP 503 owner_lost"}, // failed after it
		{fn: "b", sent: at(50), done: at(2500), ok: true, failedOver: true},           // b back
		{fn: "c", sent: at(60), done: at(70), ok: true},                               // not watched
	}
	rc := recoveryOf(results, t0, []string{"a", "b", "d"})
	if rc.gap["a"] != 3000*time.Millisecond || rc.gap["b"] != 2500*time.Millisecond || len(rc.gap) != 2 {
		t.Errorf("gaps %v, want a 3000ms, b 2500ms, d none", rc.gap)
	}
	if rc.failed != 2 || rc.failures["connection reset"] != 1 || rc.failures["HTTP 503 owner_lost"] != 1 {
		t.Errorf("failed %d %v, want the reset and the owner_lost", rc.failed, rc.failures)
	}
	if rc.before != 1 || rc.failedOver != 1 || rc.lastFailure != 40*time.Millisecond {
		t.Errorf("before %d, failed over %d, last failure %s", rc.before, rc.failedOver, rc.lastFailure)
	}
	if rc.slow != 3 || rc.slowest != 2990*time.Millisecond {
		t.Errorf("slow %d slowest %s, want 3 and 2990ms", rc.slow, rc.slowest)
	}
	ds := []time.Duration{5, 1, 4, 2, 3}
	if pct(ds, 0.5) != 3 || pct(ds, 1) != 5 || pct(nil, 0.5) != 0 {
		t.Errorf("pct of %v: p50 %d max %d", ds, pct(ds, 0.5), pct(ds, 1))
	}
}
