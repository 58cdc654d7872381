// Package engine runs workflow executions: it starts them (once per
// idempotency key), drives each through its state machine
// (internal/workflow/execution) with Task states handed to a Steps
// implementation (the controller: its router when it serves the function,
// the async queue on JetStream otherwise), records every transition on
// the global bus off the critical path (internal/workflow/journal), and
// resumes the executions whose runner died from their last recorded step.
//
// Lock order: Engine.mu, then tracker.mu; neither is held across a call
// to the store or a step.
package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/requestid"
	"github.com/baton-faas/baton/internal/workflow/asl"
	"github.com/baton-faas/baton/internal/workflow/execution"
	"github.com/baton-faas/baton/internal/workflow/journal"
	"github.com/baton-faas/baton/internal/workflow/registry"
)

// Errors of the engine.
var (
	ErrInvalidInput = errdefs.New(errdefs.Invalid, "invalid_execution_input", "invalid execution input")
	ErrInvalidKey   = errdefs.New(errdefs.Invalid, "invalid_idempotency_key", "invalid idempotency key")
	ErrInvalidID    = errdefs.New(errdefs.Invalid, "invalid_execution_id", "invalid execution id")
	ErrClosed       = errdefs.New(errdefs.Unavailable, "shutting_down", "the workflow engine is shutting down")
)

// Steps runs one attempt of a Task state's function for an execution;
// callID is unique to the attempt within the execution.
// A function's own error is *execution.FunctionError; a lost instance or
// worker is an error Interrupted reports true for (the engine runs the
// step again, as a further attempt); other errors fail the attempt.
type Steps interface {
	Step(ctx context.Context, execID, callID string, call execution.Call) (Step, error)
}

// Step is how a task's attempt went.
type Step struct {
	Output []byte
	Host   string // the worker it ran on
	Bus    string // "local" or "global"
}

// Interrupted marks a step error that says the attempt was cut short by
// the platform (a worker or instance lost), not by the function.
type Interrupted interface{ Interrupted() bool }

// Options configure an Engine.
type Options struct {
	// Self is this runner's id (a controller's node id; a server's boot
	// id): it holds the executions it runs.
	Self string
	// Alive says whether a runner is alive; an unfinished execution whose
	// holder is not is claimed and resumed. nil: only Self is.
	Alive func(holder string) bool
	// Scan is how often unfinished executions are looked for (default 5 s).
	Scan time.Duration
	// MaxSteps bounds the top-level states one execution may pass
	// through (default 25,000, as Step Functions bounds a standard
	// execution's history): a workflow that loops for ever fails.
	MaxSteps int
	// MaxInterruptions bounds how often one step is run again after its
	// worker was lost (default 5).
	MaxInterruptions int
	// Transfers resolves and shares references to data that workers keep
	// (see execution.Transfers); nil when steps never produce them.
	Transfers execution.Transfers
	Logger    *slog.Logger
}

// Engine starts, runs and resumes executions.
type Engine struct {
	reg   *registry.Registry
	jnl   *journal.Journal
	hist  *journal.History
	steps Steps
	opts  Options
	log   *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex // guards running
	running map[string]*run
}

// run is an execution running here.
type run struct {
	done  chan struct{}
	final journal.Execution // set before done closes
}

// New returns an engine; Start its recovery with Run.
func New(reg *registry.Registry, jnl *journal.Journal, hist *journal.History, steps Steps, o Options) *Engine {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Scan <= 0 {
		o.Scan = 5 * time.Second
	}
	if o.MaxSteps <= 0 {
		o.MaxSteps = 25000
	}
	if o.MaxInterruptions <= 0 {
		o.MaxInterruptions = 5
	}
	if o.Alive == nil {
		self := o.Self
		o.Alive = func(h string) bool { return h == self }
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Engine{reg: reg, jnl: jnl, hist: hist, steps: steps, opts: o, log: o.Logger.With("component", "workflows"),
		ctx: ctx, cancel: cancel, running: map[string]*run{}}
}

// Registry is the engine's workflow registry.
func (e *Engine) Registry() *registry.Registry { return e.reg }

// Start begins an execution of a workflow's current version with input
// (JSON; empty means {}). With a key, a repeat of the start returns the
// first execution (created false) instead of starting another.
func (e *Engine) Start(ctx context.Context, name string, input []byte, key string) (x journal.Execution, created bool, err error) {
	wf, def, err := e.reg.Get(ctx, name)
	if err != nil {
		return journal.Execution{}, false, err
	}
	if len(strings.TrimSpace(string(input))) == 0 {
		input = []byte("{}")
	}
	if !json.Valid(input) {
		return journal.Execution{}, false, fmt.Errorf("%w: the input is not JSON", ErrInvalidInput)
	}
	id, err := executionID(name, key)
	if err != nil {
		return journal.Execution{}, false, err
	}
	now := time.Now().UTC()
	x = journal.Execution{
		ID: id, Workflow: name, Version: wf.Version, Definition: wf.Definition, Status: journal.Running,
		Input: json.RawMessage(input), Started: now, ResumeAt: def.StartAt, ResumeInput: json.RawMessage(input),
		Holder: e.opts.Self,
	}
	x, err = e.jnl.Create(ctx, x)
	if errors.Is(err, journal.ErrExists) {
		return x, false, nil
	}
	if err != nil {
		return journal.Execution{}, false, err
	}
	e.hist.Append(id, journal.HistoryEvent{Kind: "ExecutionStarted", Time: now, Runner: e.opts.Self, Version: wf.Version})
	if err := e.launch(x, def); err != nil {
		// Stored and not run here: the recovery of another runner (or
		// this one's next start) resumes it.
		return x, true, nil
	}
	return x, true, nil
}

// executionID is WORKFLOW.ID: random, or derived from the idempotency
// key so that a repeat finds the first.
func executionID(name, key string) (string, error) {
	if key == "" {
		return name + "." + requestid.New(), nil
	}
	if len(key) > 256 || strings.ContainsFunc(key, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", fmt.Errorf("%w: at most 256 printable characters", ErrInvalidKey)
	}
	sum := sha256.Sum256([]byte(name + "\x00" + key))
	h := hex.EncodeToString(sum[:16])
	return fmt.Sprintf("%s.%s-%s-%s-%s-%s", name, h[:8], h[8:12], h[12:16], h[16:20], h[20:]), nil
}

// ValidID checks an execution id's form (WORKFLOW.UUID).
func ValidID(id string) error {
	name, rest, ok := strings.Cut(id, ".")
	if !ok || name == "" || !requestid.Valid(rest) && !keyDerived(rest) {
		return fmt.Errorf("%w: %q (want WORKFLOW.UUID)", ErrInvalidID, id)
	}
	return nil
}

func keyDerived(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdef", r) {
				return false
			}
		}
	}
	return true
}

// Wait returns the execution once it ended (or ctx did: its state then).
func (e *Engine) Wait(ctx context.Context, id string) (journal.Execution, error) {
	e.mu.Lock()
	r := e.running[id]
	e.mu.Unlock()
	if r != nil {
		select {
		case <-r.done:
			return r.final, nil
		case <-ctx.Done():
			return e.jnl.Get(context.WithoutCancel(ctx), id)
		}
	}
	// Running elsewhere (or ended): its record says when it ends.
	for {
		x, err := e.jnl.Get(ctx, id)
		if err != nil || x.Final() {
			return x, err
		}
		select {
		case <-ctx.Done():
			return x, nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Get returns an execution.
func (e *Engine) Get(ctx context.Context, id string) (journal.Execution, error) {
	if err := ValidID(id); err != nil {
		return journal.Execution{}, err
	}
	return e.jnl.Get(ctx, id)
}

// History returns an execution's history.
func (e *Engine) History(ctx context.Context, id string, limit int) ([]journal.HistoryEvent, error) {
	if err := ValidID(id); err != nil {
		return nil, err
	}
	return e.hist.Read(ctx, id, limit)
}

// List returns a workflow's executions, newest first.
func (e *Engine) List(ctx context.Context, workflow string, limit int) ([]journal.Execution, error) {
	if _, _, err := e.reg.Get(ctx, workflow); err != nil {
		return nil, err
	}
	return e.jnl.List(ctx, workflow, limit)
}

// launch runs x here from its resume point.
func (e *Engine) launch(x journal.Execution, def *asl.Definition) error {
	e.mu.Lock()
	if e.ctx.Err() != nil {
		e.mu.Unlock()
		return ErrClosed
	}
	if _, ok := e.running[x.ID]; ok {
		e.mu.Unlock()
		return nil
	}
	r := &run{done: make(chan struct{})}
	e.running[x.ID] = r
	e.wg.Add(1)
	e.mu.Unlock()
	go func() {
		defer e.wg.Done()
		final, ended := e.drive(x, def)
		e.mu.Lock()
		delete(e.running, x.ID)
		e.mu.Unlock()
		if ended {
			r.final = final
		} else {
			r.final = x
		}
		close(r.done)
	}()
	return nil
}

// drive runs an execution to its end; ended is false when the engine
// stopped first (the execution stays unfinished for the next runner).
func (e *Engine) drive(x journal.Execution, def *asl.Definition) (journal.Execution, bool) {
	t := &tracker{e: e, x: x, def: def, entered: map[string]time.Time{}, resumeState: x.ResumeAt, resumeOffset: x.ResumeAttempts,
		resumeWaitUntil: x.WaitUntil}
	m := execution.New(def, invoker{t}, execution.Options{Observe: t.observe, Sleep: t.sleep, Transfers: e.opts.Transfers})
	var input any
	if err := json.Unmarshal(x.ResumeInput, &input); err != nil {
		input = map[string]any{}
	}
	cobj := map[string]any{
		"Execution": map[string]any{
			"Id": x.ID, "Name": strings.TrimPrefix(x.ID, x.Workflow+"."), "Input": jsonValue(x.Input),
			"StartTime": x.Started.Format(time.RFC3339Nano),
		},
		"StateMachine": map[string]any{"Id": x.Workflow, "Name": x.Workflow},
	}
	if x.Epoch > 0 {
		e.hist.Append(x.ID, journal.HistoryEvent{Kind: "ExecutionResumed", State: x.ResumeAt, Time: time.Now().UTC(),
			Runner: e.opts.Self, Attempt: x.ResumeAttempts + 1})
	}
	ctx, stop := context.WithCancelCause(e.ctx)
	defer stop(nil)
	t.stop = stop
	out, err := m.RunAt(ctx, x.ResumeAt, input, cobj)
	if e.ctx.Err() != nil {
		return journal.Execution{}, false
	}
	if cause := context.Cause(ctx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	final := t.finish(out, err)
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
		serr := e.jnl.Store(ctx, final)
		cancel()
		if serr == nil || e.ctx.Err() != nil || i == 30 {
			if serr != nil {
				e.log.Error("an execution's end could not be stored; it will run again from its last step", "execution", x.ID, "err", serr)
				return final, e.ctx.Err() == nil
			}
			break
		}
		time.Sleep(time.Second)
	}
	return final, true
}

func jsonValue(raw json.RawMessage) any {
	var v any
	_ = json.Unmarshal(raw, &v)
	return v
}

// tracker keeps an execution's record as its machine moves.
type tracker struct {
	e *Engine

	mu      sync.Mutex // guards what follows; a leaf
	x       journal.Execution
	entered map[string]time.Time
	// resumeState and resumeOffset: the first visit of the state an
	// execution resumed at counts the runs before the crash.
	resumeState  string
	resumeOffset int
	// resumeWaitUntil is when a top-level Wait the execution resumed in
	// ends: it waits only what was left.
	resumeWaitUntil time.Time
	def             *asl.Definition
	current         string // the top-level state running
	// calls numbers the task attempts this runner made: with the epoch it
	// tells two visits of one state apart (a loop), for the global bus's
	// idempotency keys.
	calls int
	// stop ends the run when it took too many steps.
	stop context.CancelCauseFunc
}

// nextCall returns a number for a task attempt, unique in the execution.
func (t *tracker) nextCall() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.calls++
	return fmt.Sprintf("%d.%d", t.x.Epoch, t.calls)
}

func (t *tracker) observe(ev execution.Event) {
	key := ev.Path + "\x00" + ev.State
	h := journal.HistoryEvent{State: ev.State, Path: ev.Path, Time: ev.Time.UTC(), Attempt: ev.Attempt, Error: ev.Error}
	t.mu.Lock()
	switch ev.Kind {
	case "entered":
		h.Kind = "StateEntered"
		t.entered[key] = ev.Time
		if ev.Path == "" {
			t.current = ev.State
		}
		if ev.Path == "" && ev.State == t.x.ResumeAt {
			// This run of the resume state started: after a crash, the
			// next is a further attempt.
			t.x.ResumeAttempts++
			t.x.Seq++
			t.e.jnl.Record(t.x)
		}
	case "exited":
		h.Kind = "StateExited"
		if at, ok := t.entered[key]; ok {
			h.Millis = millis(ev.Time.Sub(at))
			delete(t.entered, key)
		}
		if ev.Path == "" {
			if ev.State == t.resumeState {
				t.resumeState, t.resumeOffset = "", 0
			}
			t.x.Steps++
			if t.x.Steps >= t.e.opts.MaxSteps && ev.Next != "" {
				t.stop(&execution.Failure{Name: "States.Runtime",
					Cause: fmt.Sprintf("the execution passed through %d states, the most one may", t.e.opts.MaxSteps)})
			}
			if ev.Next != "" {
				raw, err := json.Marshal(ev.Output)
				if err == nil {
					t.x.ResumeAt, t.x.ResumeInput, t.x.ResumeAttempts, t.x.WaitUntil = ev.Next, raw, 0, time.Time{}
					t.x.Seq++
					t.e.jnl.Record(t.x)
				}
			}
		}
	case "retrying":
		h.Kind, h.Millis = "StateRetrying", millis(ev.Delay)
	case "caught":
		h.Kind = "StateCaught"
	case "failed":
		h.Kind = "StateFailed"
		delete(t.entered, key)
	default:
		h.Kind = ev.Kind
	}
	id := t.x.ID
	t.mu.Unlock()
	t.e.hist.Append(id, h)
}

// sleep waits for Wait states and retries; a top-level Wait's end is
// recorded, so that a resumed execution waits only what was left.
func (t *tracker) sleep(ctx context.Context, d time.Duration) error {
	t.mu.Lock()
	if st := t.def.States[t.current]; st != nil && st.Type == "Wait" {
		if !t.resumeWaitUntil.IsZero() && t.current == t.resumeState {
			d = max(time.Until(t.resumeWaitUntil), 0)
			t.resumeWaitUntil = time.Time{}
		}
		t.x.WaitUntil = time.Now().Add(d).UTC()
		t.x.Seq++
		t.e.jnl.Record(t.x)
	}
	t.mu.Unlock()
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// offset is how many runs of a state happened before this runner took
// the execution over: non-zero only in the first visit of the state it
// resumed at (and in the branches and items inside it).
func (t *tracker) offset(state, path string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.resumeState != "" && (path == "" && state == t.resumeState || strings.HasPrefix(path, t.resumeState+"/")) {
		return t.resumeOffset
	}
	return 0
}

func (t *tracker) finish(out any, err error) journal.Execution {
	t.mu.Lock()
	defer t.mu.Unlock()
	x := t.x
	x.Stopped = time.Now().UTC()
	x.Seq++
	x.ResumeAt, x.ResumeInput = "", nil
	h := journal.HistoryEvent{Time: x.Stopped, Runner: t.e.opts.Self, Millis: millis(x.Stopped.Sub(x.Started))}
	if err != nil {
		f := &execution.Failure{}
		if !errors.As(err, &f) {
			f = &execution.Failure{Name: asl.ErrorTaskFailed, Cause: err.Error()}
		}
		x.Status, x.Error, x.Cause = journal.Failed, f.Name, f.Cause
		h.Kind, h.Error, h.Cause = "ExecutionFailed", f.Name, f.Cause
	} else {
		raw, merr := json.Marshal(out)
		if merr != nil {
			x.Status, x.Error, x.Cause = journal.Failed, "States.Runtime", merr.Error()
		} else {
			x.Status, x.Output = journal.Succeeded, raw
		}
		h.Kind = "ExecutionSucceeded"
	}
	t.x = x
	t.e.hist.Append(x.ID, h)
	return x
}

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// invoker runs Task attempts through the engine's Steps, running an
// attempt again (as a further attempt) when the platform lost it.
type invoker struct{ t *tracker }

func (iv invoker) Invoke(ctx context.Context, call execution.Call) ([]byte, error) {
	e := iv.t.e
	id := iv.t.x.ID
	base := iv.t.offset(call.State, call.Path)
	extra := 0
	for {
		c := call
		c.Attempt = call.Attempt + base + extra
		start := time.Now()
		e.hist.Append(id, journal.HistoryEvent{Kind: "TaskScheduled", State: c.State, Path: c.Path, Time: start.UTC(), Attempt: c.Attempt})
		res, err := e.step(ctx, id, iv.t.nextCall(), c)
		h := journal.HistoryEvent{State: c.State, Path: c.Path, Time: time.Now().UTC(), Attempt: c.Attempt,
			Millis: millis(time.Since(start)), Host: res.Host, Bus: res.Bus, Runner: e.opts.Self}
		var lost Interrupted
		switch {
		case err == nil:
			h.Kind = "TaskSucceeded"
			e.hist.Append(id, h)
			return res.Output, nil
		case errors.As(err, &lost) && lost.Interrupted() && ctx.Err() == nil && extra < e.opts.MaxInterruptions:
			h.Kind, h.Error, h.Cause = "TaskInterrupted", "Baton.InstanceLost", err.Error()
			e.hist.Append(id, h)
			extra++
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(extra) * 200 * time.Millisecond):
			}
			continue
		default:
			var fe *execution.FunctionError
			switch {
			case errors.As(err, &fe):
				h.Error, h.Cause = fe.Type, fe.Message
			case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
				h.Error, h.Cause = asl.ErrorTimeout, err.Error()
			default:
				h.Error, h.Cause = asl.ErrorTaskFailed, err.Error()
			}
			h.Kind = "TaskFailed"
			e.hist.Append(id, h)
			return nil, err
		}
	}
}

// step runs one attempt through Steps. Under a deadline (a Task's
// TimeoutSeconds, a machine's) it returns when the deadline passes even
// if the attempt goes on: a function's invocation is not cancelled by its
// caller (as on Lambda), and the task must end on time. The attempt left
// behind is the engine's, waited for by Close.
func (e *Engine) step(ctx context.Context, id, callID string, c execution.Call) (Step, error) {
	if _, ok := ctx.Deadline(); !ok {
		return e.steps.Step(ctx, id, callID, c)
	}
	type result struct {
		res Step
		err error
	}
	done := make(chan result, 1)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		res, err := e.steps.Step(ctx, id, callID, c)
		done <- result{res, err}
	}()
	select {
	case r := <-done:
		return r.res, r.err
	case <-ctx.Done():
		return Step{}, ctx.Err()
	}
}

// Run looks for executions to resume (at once, then every Scan) until
// Close.
func (e *Engine) Run() {
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		t := time.NewTicker(e.opts.Scan)
		defer t.Stop()
		for {
			e.Recover(e.ctx)
			select {
			case <-e.ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// Recover claims and resumes the unfinished executions whose runner is
// gone (or is this one, from before a restart, and not running now).
func (e *Engine) Recover(ctx context.Context) {
	un, err := e.jnl.Unfinished(ctx)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Warn("look for executions to resume", "err", err)
		}
		return
	}
	alive := map[string]bool{} // asked once per holder and scan
	for _, x := range un {
		e.mu.Lock()
		_, here := e.running[x.ID]
		e.mu.Unlock()
		if here {
			continue
		}
		if x.Holder != e.opts.Self {
			live, asked := alive[x.Holder]
			if !asked {
				live = e.opts.Alive(x.Holder)
				alive[x.Holder] = live
			}
			if live {
				continue
			}
		}
		if x.Holder == e.opts.Self && time.Since(x.Updated) < e.opts.Scan {
			// Just created here and being launched: not lost.
			continue
		}
		c, err := e.jnl.Claim(ctx, x, e.opts.Self)
		if err != nil {
			if !errors.Is(err, journal.ErrClaimed) && ctx.Err() == nil {
				e.log.Warn("claim an execution to resume", "execution", x.ID, "err", err)
			}
			continue
		}
		def, err := asl.Parse(c.Definition)
		if err != nil {
			e.log.Error("an execution's definition no longer parses; it cannot resume", "execution", x.ID, "err", err)
			continue
		}
		e.log.Info("resuming an execution", "execution", c.ID, "previous runner", x.Holder, "at", c.ResumeAt, "attempt", c.ResumeAttempts+1)
		_ = e.launch(c, def)
	}
}

// Close stops the engine and waits for its goroutines; executions still
// running stay unfinished in the journal for the next runner.
func (e *Engine) Close() {
	e.mu.Lock()
	e.cancel()
	e.mu.Unlock()
	e.wg.Wait()
}
