package soak

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
)

// report is what the soak's end state shows: problems break a guarantee;
// the rest are the figures the test logs.
type report struct {
	problems []string
	keys     int
	ids      int
	// states counts final states per function.
	states map[string]map[string]int
	// attempts counts recorded attempts per function.
	attempts map[string]int
	// interrupted counts attempts a kill cut short; interruptedRan those
	// of them whose execution left its line (the function ran, the
	// outcome was lost with the server).
	interrupted, interruptedRan int
	// multiWork lists work ids with more than one side-effect line.
	multiWork []string
	// dead is the dead-letter queue's size; deadRepeated counts entries
	// beyond one per id.
	dead, deadRepeated int
}

func (r *report) problem(format string, args ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

// verify checks the end state of the soak against issue 10's guarantees:
//
//   - one id per idempotency key, a final state for every id;
//   - every side-effect line is an execution the state records: the
//     function saw attempt k, and the state has an attempt k;
//   - every attempt that ended (not interrupted) ran exactly once, with
//     the outcome its function gives (work succeeds on its last attempt,
//     flaky fails with its error, slow times out);
//   - an interrupted attempt (its server died while it ran) ran at most
//     once, and a kill happened between its start and its end: an
//     execution beyond one per ended attempt is explained by a crash or
//     it is a problem;
//   - the policy: work succeeded, flaky dead-lettered after 1+2 attempts
//     and listed in its dead-letter queue, slow failed after 1+1.
func verify(jobs []job, subs []submission, states map[string]apiv1.AsyncInvocation, eff effects,
	dead []apiv1.DeadLetter, kills []kill) *report {
	r := &report{states: map[string]map[string]int{}, attempts: map[string]int{}}
	keyOf := map[string]int{} // id → job
	for i, s := range subs {
		if s.err != nil {
			continue
		}
		r.keys++
		if other, ok := keyOf[s.id]; ok {
			r.problem("keys %s and %s got the same id %s", jobs[other].key, jobs[i].key, s.id)
			continue
		}
		keyOf[s.id] = i
		if s.duplicate && s.tries == 1 {
			r.problem("key %s was answered as a duplicate (id %s) on its first request", jobs[i].key, s.id)
		}
	}
	r.ids = len(keyOf)

	for id, i := range keyOf {
		j := jobs[i]
		inv, ok := states[id]
		if !ok {
			r.problem("lost: %s (key %s, %s) has no state", id, j.key, j.fn)
			continue
		}
		if r.states[j.fn] == nil {
			r.states[j.fn] = map[string]int{}
		}
		r.states[j.fn][inv.State]++
		r.attempts[j.fn] += len(inv.Attempts)
		if inv.Function != j.fn {
			r.problem("%s (key %s) is an invocation of %q, submitted to %q", id, j.key, inv.Function, j.fn)
		}
		lines := eff.byID[id]
		r.checkAttempts(j, inv, lines, kills)
		switch j.fn {
		case fnWork:
			if inv.State != "succeeded" || decodeKey(inv.Result) != j.key {
				r.problem("work %s (key %s) ended %s with result %s, want succeeded with its event: %s", id, j.key, inv.State, inv.Result, show(inv))
			}
			if len(lines) == 0 {
				r.problem("work %s (key %s) succeeded without its side effect: %s", id, j.key, show(inv))
			}
			if len(lines) > 1 {
				r.multiWork = append(r.multiWork, id)
			}
		case fnFlaky:
			if inv.State != "dead-lettered" || inv.Destination != "dlq:"+dlqName || len(inv.Attempts) != flakyAttempts {
				r.problem("flaky %s (key %s): want dead-lettered to dlq:%s after %d attempts: %s", id, j.key, dlqName, flakyAttempts, show(inv))
			}
		case fnSlow:
			if inv.State != "failed" || inv.Reason != "retries exhausted" || inv.Destination != "" || len(inv.Attempts) != 1+slowRetries {
				r.problem("slow %s (key %s): want failed (retries exhausted) after %d attempts: %s", id, j.key, 1+slowRetries, show(inv))
			}
		}
	}
	for id, lines := range eff.byID {
		if _, ok := keyOf[id]; !ok {
			r.problem("%d side-effect lines of %s, which is no accepted invocation: attempts %v", len(lines), id, lines)
		}
	}
	for _, l := range eff.malformed {
		r.problem("malformed side-effect line %q", l)
	}

	// The dead-letter queue holds every flaky invocation, and nothing
	// else; an entry twice only if the server died between storing it and
	// settling the invocation (its last attempt is then interrupted).
	r.dead = len(dead)
	entries := map[string]int{}
	for _, d := range dead {
		entries[d.ID]++
		i, ok := keyOf[d.ID]
		if !ok || jobs[i].fn != fnFlaky || d.Function != fnFlaky || d.Condition != "RetriesExhausted" {
			r.problem("dead letter #%d (id %s, function %s, condition %s) is not a flaky invocation's", d.Seq, d.ID, d.Function, d.Condition)
		}
	}
	for id, i := range keyOf {
		if jobs[i].fn != fnFlaky {
			continue
		}
		switch c := entries[id]; {
		case c == 0:
			r.problem("flaky %s (key %s) is not in dead-letter queue %s", id, jobs[i].key, dlqName)
		case c > 1:
			r.deadRepeated += c - 1
			if inv := states[id]; !hasInterrupted(inv) {
				r.problem("flaky %s is %d times in the dead-letter queue without an interrupted attempt: %s", id, c, show(inv))
			}
		}
	}
	return r
}

// checkAttempts matches an invocation's side-effect lines (the attempt
// numbers its executions saw) with the attempts its state records.
func (r *report) checkAttempts(j job, inv apiv1.AsyncInvocation, lines []int, kills []kill) {
	ran := map[int]int{}
	for _, a := range lines {
		if a < 1 || a > len(inv.Attempts) {
			r.problem("%s (key %s) ran as attempt %d, but its state records %d attempts: lines %v, %s", inv.ID, j.key, a, len(inv.Attempts), lines, show(inv))
			continue
		}
		ran[a]++
	}
	for k, a := range inv.Attempts {
		c := ran[k+1]
		if a.Number != k+1 {
			r.problem("%s (key %s): attempt %d is numbered %d: %s", inv.ID, j.key, k+1, a.Number, show(inv))
		}
		if a.Interrupted {
			r.interrupted++
			if c == 1 {
				r.interruptedRan++
			}
			if c > 1 {
				r.problem("%s (key %s): interrupted attempt %d ran %d times: lines %v", inv.ID, j.key, k+1, c, lines)
			}
			if !killedDuring(a, kills) {
				r.problem("%s (key %s): attempt %d is interrupted, but no kill happened between its start and its end: %s", inv.ID, j.key, k+1, show(inv))
			}
			continue
		}
		if c != 1 {
			r.problem("%s (key %s): attempt %d ran %d times (side-effect lines %v), want once: %s", inv.ID, j.key, k+1, c, lines, show(inv))
		}
		switch j.fn {
		case fnWork:
			if a.Error != "" || k != len(inv.Attempts)-1 {
				r.problem("work %s (key %s): attempt %d failed (not cut short by a kill): %s", inv.ID, j.key, k+1, show(inv))
			}
		case fnFlaky:
			if a.ErrorType != "SoakError" || !strings.Contains(a.Error, "flaky "+j.key+" fails") {
				r.problem("flaky %s (key %s): attempt %d ended with %q (%s), want the function's SoakError: %s", inv.ID, j.key, k+1, a.Error, a.ErrorType, show(inv))
			}
		case fnSlow:
			if a.ErrorType != "timeout" {
				r.problem("slow %s (key %s): attempt %d ended with %q (%s), want a timeout: %s", inv.ID, j.key, k+1, a.Error, a.ErrorType, show(inv))
			}
		}
	}
}

// killedDuring: a kill of the server happened while the attempt ran (it
// started before the kill and was found cut short after).
func killedDuring(a apiv1.AsyncAttempt, kills []kill) bool {
	for _, k := range kills {
		if !a.Start.After(k.at) && a.End.After(k.at) {
			return true
		}
	}
	return false
}

func hasInterrupted(inv apiv1.AsyncInvocation) bool {
	for _, a := range inv.Attempts {
		if a.Interrupted {
			return true
		}
	}
	return false
}

// show is an invocation's state as evidence, without its result.
func show(inv apiv1.AsyncInvocation) string {
	inv.Result = nil
	b, _ := json.Marshal(inv)
	return string(b)
}

// log reports the figures and fails the test with the problems.
func (r *report) log(t *testing.T) {
	t.Helper()
	fns := []string{fnWork, fnFlaky, fnSlow}
	for _, fn := range fns {
		t.Logf("result %s: final states %v, %d attempts recorded", fn, r.states[fn], r.attempts[fn])
	}
	t.Logf("result: %d keys accepted, %d distinct ids; %d attempts interrupted by the kills (%d of them had run their side effect); %d work ids ran more than once (allowed only through an interrupted attempt); dead-letter queue %s holds %d entries (%d repeated)",
		r.keys, r.ids, r.interrupted, r.interruptedRan, len(r.multiWork), dlqName, r.dead, r.deadRepeated)
	if len(r.multiWork) > 0 {
		sort.Strings(r.multiWork)
		t.Logf("work ids with more than one execution (first 10): %v", r.multiWork[:min(10, len(r.multiWork))])
	}
	if r.ids != r.keys {
		t.Errorf("%d distinct ids for %d keys", r.ids, r.keys)
	}
	for i, p := range r.problems {
		if i == 50 {
			t.Errorf("... and %d more problems", len(r.problems)-50)
			break
		}
		t.Error(p)
	}
}

// TestVerifyFindsBreaches proves the soak's checks can fail: starting
// from a consistent end state, each breach of a guarantee is reported.
func TestVerifyFindsBreaches(t *testing.T) {
	kill0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return kill0.Add(time.Duration(s) * time.Second) }
	kills := []kill{{why: "test", at: kill0, up: at(1)}}
	jobs := []job{{fn: fnWork, key: "k0"}, {fn: fnFlaky, key: "k1"}, {fn: fnSlow, key: "k2"}, {fn: fnWork, key: "k3"}}
	ids := []string{"id-work", "id-flaky", "id-slow", "id-crashed"}
	type world struct {
		subs   []submission
		states map[string]apiv1.AsyncInvocation
		eff    effects
		dead   []apiv1.DeadLetter
	}
	good := func() world {
		w := world{states: map[string]apiv1.AsyncInvocation{}, eff: effects{byID: map[string][]int{}}}
		for _, id := range ids {
			w.subs = append(w.subs, submission{id: id, tries: 1})
		}
		flakyErr := apiv1.AsyncAttempt{Error: "flaky k1 fails", ErrorType: "SoakError", Start: at(-9), End: at(-8)}
		timeout := apiv1.AsyncAttempt{Error: "function timed out after 1s", ErrorType: "timeout", Start: at(-9), End: at(-8)}
		number := func(as ...apiv1.AsyncAttempt) []apiv1.AsyncAttempt {
			for i := range as {
				as[i].Number = i + 1
			}
			return as
		}
		w.states["id-work"] = apiv1.AsyncInvocation{ID: "id-work", Function: fnWork, State: "succeeded", Result: []byte(`{"key":"k0"}`),
			Attempts: number(apiv1.AsyncAttempt{Start: at(-5), End: at(-4)})}
		w.states["id-flaky"] = apiv1.AsyncInvocation{ID: "id-flaky", Function: fnFlaky, State: "dead-lettered", Destination: "dlq:" + dlqName,
			Attempts: number(flakyErr, flakyErr, flakyErr)}
		w.states["id-slow"] = apiv1.AsyncInvocation{ID: "id-slow", Function: fnSlow, State: "failed", Reason: "retries exhausted",
			Attempts: number(timeout, timeout)}
		// Cut short by the kill after its side effect, then run again.
		w.states["id-crashed"] = apiv1.AsyncInvocation{ID: "id-crashed", Function: fnWork, State: "succeeded", Result: []byte(`{"key":"k3"}`),
			Attempts: number(apiv1.AsyncAttempt{Start: at(-1), End: at(20), Interrupted: true}, apiv1.AsyncAttempt{Start: at(20), End: at(21)})}
		w.eff.byID = map[string][]int{"id-work": {1}, "id-flaky": {1, 2, 3}, "id-slow": {1, 2}, "id-crashed": {1, 2}}
		w.dead = []apiv1.DeadLetter{{Seq: 1, ID: "id-flaky", Function: fnFlaky, Condition: "RetriesExhausted"}}
		return w
	}
	if r := verify(jobs, good().subs, good().states, good().eff, good().dead, kills); len(r.problems) != 0 || len(r.multiWork) != 1 || r.interruptedRan != 1 {
		t.Fatalf("a consistent end state: problems %q, work ids run twice %v, interrupted attempts that ran %d (want none, [id-crashed], 1)",
			r.problems, r.multiWork, r.interruptedRan)
	}
	breaches := map[string]struct {
		breach func(*world)
		want   string
	}{
		"a duplicate without a crash": {func(w *world) { w.eff.byID["id-work"] = []int{1, 1} }, "ran 2 times"},
		"an interrupted attempt without a kill": {func(w *world) {
			inv := w.states["id-crashed"]
			inv.Attempts[0].Start = at(2)
			w.states["id-crashed"] = inv
		}, "no kill happened"},
		"an execution the state does not record": {func(w *world) { w.eff.byID["id-work"] = []int{1, 2} }, "records 1 attempts"},
		"work without its side effect":           {func(w *world) { delete(w.eff.byID, "id-work") }, "without its side effect"},
		"an accepted id lost":                    {func(w *world) { delete(w.states, "id-slow") }, "lost"},
		"an execution of an id never accepted":   {func(w *world) { w.eff.byID["stray"] = []int{1} }, "no accepted invocation"},
		"two keys, one id":                       {func(w *world) { w.subs[3].id = "id-work" }, "same id"},
		"a fresh key answered as a duplicate":    {func(w *world) { w.subs[0].duplicate = true }, "duplicate"},
		"flaky missing from its queue":           {func(w *world) { w.dead = nil }, "not in dead-letter queue"},
		"flaky tried too few times": {func(w *world) {
			inv := w.states["id-flaky"]
			inv.Attempts = inv.Attempts[:2]
			w.states["id-flaky"] = inv
			w.eff.byID["id-flaky"] = []int{1, 2}
		}, "after 3 attempts"},
		"slow not timing out": {func(w *world) {
			inv := w.states["id-slow"]
			inv.Attempts[1].ErrorType = "crash"
			w.states["id-slow"] = inv
		}, "want a timeout"},
		"work that failed": {func(w *world) {
			inv := w.states["id-work"]
			inv.State = "failed"
			w.states["id-work"] = inv
		}, "want succeeded"},
	}
	for name, b := range breaches {
		w := good()
		b.breach(&w)
		r := verify(jobs, w.subs, w.states, w.eff, w.dead, kills)
		if !strings.Contains(strings.Join(r.problems, "\n"), b.want) {
			t.Errorf("%s: problems %q, want one saying %q", name, r.problems, b.want)
		}
	}
}
