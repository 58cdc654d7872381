package soak

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"

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
