package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-faas/baton/internal/cluster/clustertest"
	"github.com/baton-faas/baton/internal/workflow/execution"
	"github.com/baton-faas/baton/internal/workflow/journal"
	"github.com/baton-faas/baton/internal/workflow/registry"
)

// steps is a fake Steps: "add" adds 1 to n; "block" waits until released
// (or its context ends); "lose" is cut short by the platform the first
// time each execution calls it.
type steps struct {
	mu      sync.Mutex
	calls   map[string][]int // function → attempts seen
	block   chan struct{}
	blocked chan string // execution ids that reached "block"
	lost    map[string]bool
}

func newSteps() *steps {
	return &steps{calls: map[string][]int{}, block: make(chan struct{}), blocked: make(chan string, 16), lost: map[string]bool{}}
}

type lostErr struct{}

func (lostErr) Error() string     { return "instance gone" }
func (lostErr) Interrupted() bool { return true }

func (s *steps) Step(ctx context.Context, execID, callID string, call execution.Call) (Step, error) {
	s.mu.Lock()
	s.calls[call.Function] = append(s.calls[call.Function], call.Attempt)
	s.mu.Unlock()
	var in map[string]any
	_ = json.Unmarshal(call.Input, &in)
	switch call.Function {
	case "block":
		s.blocked <- execID
		select {
		case <-s.block:
		case <-ctx.Done():
			return Step{}, ctx.Err()
		}
	case "lose":
		s.mu.Lock()
		first := !s.lost[execID]
		s.lost[execID] = true
		s.mu.Unlock()
		if first {
			return Step{Host: "w1", Bus: "local"}, lostErr{}
		}
	case "fail":
		return Step{}, &execution.FunctionError{Type: "ValueError", Message: "no"}
	}
	n, _ := in["n"].(float64)
	in["n"] = n + 1
	in["attempt"] = call.Attempt
	out, _ := json.Marshal(in)
	return Step{Output: out, Host: "w1", Bus: "local"}, nil
}

func (s *steps) attempts(fn string) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.calls[fn]...)
}

type parts struct {
	reg  *registry.Registry
	jnl  *journal.Journal
	hist *journal.History
}

func openParts(t *testing.T, nc *nats.Conn) parts {
	t.Helper()
	ctx := clustertest.Context(t)
	reg, err := registry.Open(ctx, nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	jnl, err := journal.Open(ctx, nc, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	hist, err := journal.OpenHistory(ctx, nc, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jnl.Close)
	return parts{reg, jnl, hist}
}

const chain = `{"StartAt": "One", "States": {
  "One": {"Type": "Task", "Resource": "add", "Next": "Two"},
  "Two": {"Type": "Task", "Resource": "block", "Next": "Three"},
  "Three": {"Type": "Task", "Resource": "add", "End": true}}}`

func TestStartRunAndIdempotentStart(t *testing.T) {
	s := clustertest.Server(t)
	nc, _ := clustertest.Connect(t, s)
	ctx := clustertest.Context(t)
	p := openParts(t, nc)
	if _, err := p.reg.Put(ctx, "flow", []byte(`{"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "add", "Next": "B"}, "B": {"Type": "Task", "Resource": "lose", "End": true}}}`)); err != nil {
		t.Fatal(err)
	}
	st := newSteps()
	e := New(p.reg, p.jnl, p.hist, st, Options{Self: "r1"})
	defer e.Close()
	x, created, err := e.Start(ctx, "flow", []byte(`{"n": 1}`), "key-1")
	if err != nil || !created {
		t.Fatalf("start: %+v %v %v", x, created, err)
	}
	again, created, err := e.Start(ctx, "flow", []byte(`{"n": 5}`), "key-1")
	if err != nil || created || again.ID != x.ID {
		t.Fatalf("repeated start: %+v %v %v", again, created, err)
	}
	done, err := e.Wait(ctx, x.ID)
	if err != nil || done.Status != journal.Succeeded {
		t.Fatalf("wait: %+v %v", done, err)
	}
	var out map[string]any
	_ = json.Unmarshal(done.Output, &out)
	// The lost attempt of B ran again as attempt 2.
	if out["n"] != 3.0 || out["attempt"] != 2.0 {
		t.Fatalf("output %s", done.Output)
	}
	if a := st.attempts("lose"); fmt.Sprint(a) != "[1 2]" {
		t.Fatalf("attempts of the lost step: %v", a)
	}
	p.hist.Flush(ctx)
	evs, err := e.History(ctx, x.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, ev := range evs {
		kinds[ev.Kind]++
	}
	if kinds["ExecutionStarted"] != 1 || kinds["TaskInterrupted"] != 1 || kinds["TaskSucceeded"] != 2 || kinds["ExecutionSucceeded"] != 1 {
		t.Fatalf("history %v", kinds)
	}
	if _, _, err := e.Start(ctx, "flow", []byte(`{`), ""); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("bad input: %v", err)
	}
	if _, _, err := e.Start(ctx, "nope", nil, ""); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("unknown workflow: %v", err)
	}
	if _, err := e.Get(ctx, "flow"); !errors.Is(err, ErrInvalidID) {
		t.Fatalf("bad id: %v", err)
	}
}

// A runner that dies mid-step leaves its execution to another, which
// runs the lost step again (attempt 2, same input) and finishes it.
func TestLostRunnerIsResumed(t *testing.T) {
	s := clustertest.Server(t)
	nc, _ := clustertest.Connect(t, s)
	ctx := clustertest.Context(t)
	p := openParts(t, nc)
	if _, err := p.reg.Put(ctx, "flow", []byte(chain)); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	alive := map[string]bool{"r1": true, "r2": true}
	isAlive := func(h string) bool { mu.Lock(); defer mu.Unlock(); return alive[h] }
	st1 := newSteps()
	e1 := New(p.reg, p.jnl, p.hist, st1, Options{Self: "r1", Alive: isAlive, Scan: 50 * time.Millisecond})
	x, _, err := e1.Start(ctx, "flow", []byte(`{"n": 0}`), "")
	if err != nil {
		t.Fatal(err)
	}
	<-st1.blocked
	// The resume point (Two, after One) reaches the journal off the
	// critical path.
	clustertest.Eventually(t, "the resume point at Two", func() bool {
		r, err := p.jnl.Get(ctx, x.ID)
		return err == nil && r.ResumeAt == "Two" && r.ResumeAttempts == 1
	})
	// r1 dies: its engine stops without finishing the execution.
	e1.Close()
	mu.Lock()
	alive["r1"] = false
	mu.Unlock()

	st2 := newSteps()
	close(st2.block)
	e2 := New(p.reg, p.jnl, p.hist, st2, Options{Self: "r2", Alive: isAlive, Scan: 50 * time.Millisecond})
	e2.Run()
	defer e2.Close()
	var done journal.Execution
	clustertest.Eventually(t, "the execution to finish on r2", func() bool {
		done, err = p.jnl.Get(ctx, x.ID)
		return err == nil && done.Final()
	})
	if done.Status != journal.Succeeded || done.Holder != "r2" || done.Epoch != 1 {
		t.Fatalf("resumed execution %+v", done)
	}
	var out map[string]any
	_ = json.Unmarshal(done.Output, &out)
	if out["n"] != 3.0 {
		t.Fatalf("output %s", done.Output)
	}
	// One ran once (on r1); Two ran again on r2 as attempt 2.
	if a := st2.attempts("add"); fmt.Sprint(a) != "[1]" {
		t.Fatalf("r2 ran add %v (only Three)", a)
	}
	if a := st2.attempts("block"); fmt.Sprint(a) != "[2]" {
		t.Fatalf("r2 ran Two as attempts %v, want [2]", a)
	}
}

// A workflow that loops for ever is stopped.
func TestEndlessLoopFails(t *testing.T) {
	s := clustertest.Server(t)
	nc, _ := clustertest.Connect(t, s)
	ctx := clustertest.Context(t)
	p := openParts(t, nc)
	if _, err := p.reg.Put(ctx, "loop", []byte(`{"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "B"}, "B": {"Type": "Pass", "Next": "A"}}}`)); err != nil {
		t.Fatal(err)
	}
	e := New(p.reg, p.jnl, p.hist, newSteps(), Options{Self: "r1", MaxSteps: 500})
	defer e.Close()
	x, _, err := e.Start(ctx, "loop", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	done, err := e.Wait(ctx, x.ID)
	if err != nil || done.Status != journal.Failed || done.Error != "States.Runtime" {
		t.Fatalf("endless loop: %+v %v", done, err)
	}
}

// A Wait resumed after its runner died waits only what was left of it.
func TestResumedWaitWaitsWhatWasLeft(t *testing.T) {
	s := clustertest.Server(t)
	nc, _ := clustertest.Connect(t, s)
	ctx := clustertest.Context(t)
	p := openParts(t, nc)
	if _, err := p.reg.Put(ctx, "nap", []byte(`{"StartAt": "Nap", "States": {"Nap": {"Type": "Wait", "Seconds": 3600, "Next": "After"}, "After": {"Type": "Pass", "End": true}}}`)); err != nil {
		t.Fatal(err)
	}
	e1 := New(p.reg, p.jnl, p.hist, newSteps(), Options{Self: "r1"})
	x, _, err := e1.Start(ctx, "nap", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	var rec journal.Execution
	clustertest.Eventually(t, "the wait's end to be recorded", func() bool {
		rec, err = p.jnl.Get(ctx, x.ID)
		return err == nil && !rec.WaitUntil.IsZero()
	})
	if left := time.Until(rec.WaitUntil); left < 50*time.Minute {
		t.Fatalf("wait recorded to end in %s", left)
	}
	e1.Close()
	// Most of the hour passed while nothing ran it.
	rec.WaitUntil = time.Now().Add(200 * time.Millisecond).UTC()
	rec.Seq += 100
	if err := p.jnl.Store(ctx, rec); err != nil {
		t.Fatal(err)
	}
	e2 := New(p.reg, p.jnl, p.hist, newSteps(), Options{Self: "r2", Scan: 50 * time.Millisecond})
	e2.Run()
	defer e2.Close()
	clustertest.Eventually(t, "the resumed wait to end", func() bool {
		got, err := p.jnl.Get(ctx, x.ID)
		return err == nil && got.Status == journal.Succeeded
	})
}
