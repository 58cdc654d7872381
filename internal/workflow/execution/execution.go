// Package execution runs an Amazon States Language state machine
// (internal/workflow/asl) in memory: Task states call functions through
// an Invoker, with their Retry and Catch; Choice, Pass, Wait, Parallel,
// Map, Succeed and Fail follow ASL. Each transition is reported to an
// Observer, which is where the durable record of an execution (and its
// resumption elsewhere) attaches; this package holds no state of its own
// beyond one run.
package execution

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/baton-faas/baton/internal/workflow/asl"
)

// Invoker runs one attempt of a Task's function.
// A function's own error is returned as *FunctionError; a timeout as an
// error wrapping context.DeadlineExceeded; anything else is a task
// failure (States.TaskFailed).
type Invoker interface {
	Invoke(ctx context.Context, call Call) ([]byte, error)
}

// Call is one attempt of a Task state.
type Call struct {
	Function string
	Input    []byte
	Attempt  int    // 1-based, counted by the state's Retry
	State    string // the Task state's name
	Path     string // where the state is (see Event.Path)
}

// FunctionError is an error the function raised, by its type.
type FunctionError struct {
	Type, Message string
}

func (e *FunctionError) Error() string { return e.Type + ": " + e.Message }

// Failure ends an execution: a Fail state, or an error nothing caught.
type Failure struct {
	Name, Cause string // ASL error name (States.Timeout, a function error type, ...) and cause
}

func (f *Failure) Error() string {
	if f.Cause == "" {
		return f.Name
	}
	return f.Name + ": " + f.Cause
}

// Event is one step of an execution's history.
type Event struct {
	Kind    string // entered, exited, retrying, caught, failed
	State   string
	Path    string // where the state is: "" at the top, "Ship/0" in a branch, "Items/3" in a map item
	Attempt int
	Error   string
	Time    time.Time
	// Next and Output are set when a top-level state exits: where the
	// machine goes on and with what input (Next is "" at the end). They
	// are a resume point.
	Next   string
	Output any
	// Delay is how long a retry waits (Kind "retrying").
	Delay time.Duration
}

// Options tune a Machine.
type Options struct {
	// Observe is told every event; it is called from several goroutines
	// at once inside Parallel and Map states.
	Observe func(Event)
	// Sleep waits for Wait states and retries (default: a timer that
	// ends with ctx).
	Sleep func(ctx context.Context, d time.Duration) error
	Now   func() time.Time
	// Transfers handles references to data that workers keep (direct
	// transfers), which travel in the state as opaque values; nil when
	// none can occur. See transfers.go for when they are resolved.
	Transfers Transfers
}

// Machine runs one definition.
type Machine struct {
	def  *asl.Definition
	inv  Invoker
	opts Options
}

// New returns a machine for def.
func New(def *asl.Definition, inv Invoker, o Options) *Machine {
	if o.Observe == nil {
		o.Observe = func(Event) {}
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Machine{def: def, inv: inv, opts: o}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run executes the machine on input (decoded JSON) with the context
// object ($$) and returns its output, or a *Failure.
func (m *Machine) Run(ctx context.Context, input, contextObject any) (any, error) {
	return m.RunAt(ctx, m.def.StartAt, input, contextObject)
}

// RunAt executes the machine from one of its top-level states, with that
// state's input: how an execution resumes after the step before it
// finished elsewhere (the TimeoutSeconds of the machine counts from here).
func (m *Machine) RunAt(ctx context.Context, state string, input, contextObject any) (any, error) {
	if _, ok := m.def.States[state]; !ok {
		return nil, fmt.Errorf("resume at %q: no such state", state)
	}
	if m.def.TimeoutSeconds > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(m.def.TimeoutSeconds)*time.Second)
		defer cancel()
	}
	out, err := m.runFrom(ctx, m.def, state, "", input, contextObject)
	if err != nil && errors.Is(err, context.DeadlineExceeded) && m.def.TimeoutSeconds > 0 {
		return nil, &Failure{Name: asl.ErrorTimeout, Cause: "the execution ran longer than TimeoutSeconds"}
	}
	if err == nil {
		// The execution's output leaves Baton: no reference in it.
		out, err = m.resolveAll(ctx, out)
	}
	return out, err
}

func (m *Machine) emit(kind, state, path string, attempt int, errName string) {
	m.opts.Observe(Event{Kind: kind, State: state, Path: path, Attempt: attempt, Error: errName, Time: m.opts.Now()})
}

// run executes one state machine (the top level, a branch or a map item).
func (m *Machine) run(ctx context.Context, def *asl.Definition, path string, input, cobj any) (any, error) {
	return m.runFrom(ctx, def, def.StartAt, path, input, cobj)
}

func (m *Machine) runFrom(ctx context.Context, def *asl.Definition, name, path string, input, cobj any) (any, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		st := def.States[name]
		m.emit("entered", name, path, 0, "")
		out, next, err := m.step(ctx, name, st, path, input, cobj)
		if err != nil {
			m.emit("failed", name, path, 0, errorName(err))
			return nil, err
		}
		ev := Event{Kind: "exited", State: name, Path: path, Time: m.opts.Now()}
		if path == "" {
			ev.Next, ev.Output = next, out
		}
		m.opts.Observe(ev)
		if next == "" {
			return out, nil
		}
		name, input = next, out
	}
}

// step runs one state; next is "" when the machine ends.
func (m *Machine) step(ctx context.Context, name string, st *asl.State, path string, input, cobj any) (any, string, error) {
	input, err := m.prepareInput(ctx, st, input, cobj)
	if err != nil {
		return nil, "", err
	}
	switch st.Type {
	case "Succeed":
		eff, err := st.EffectiveInput(input, cobj)
		if err != nil {
			return nil, "", asTaskFailure(err)
		}
		out, err := m.output(ctx, st, eff, eff, cobj)
		return out, "", err
	case "Fail":
		return nil, "", &Failure{Name: st.Error, Cause: st.Cause}
	case "Choice":
		eff, err := st.EffectiveInput(input, cobj)
		if err != nil {
			return nil, "", asTaskFailure(err)
		}
		next, err := st.Choose(eff)
		if err != nil {
			return nil, "", &Failure{Name: "States.NoChoiceMatched", Cause: fmt.Sprintf("state %q: no choice rule matched", name)}
		}
		out, err := m.output(ctx, st, eff, eff, cobj)
		return out, next, err
	case "Pass":
		eff, err := st.EffectiveInput(input, cobj)
		if err != nil {
			return nil, "", asTaskFailure(err)
		}
		result := eff
		if len(st.Result) > 0 {
			if err := json.Unmarshal(st.Result, &result); err != nil {
				return nil, "", asTaskFailure(err)
			}
		}
		out, err := m.output(ctx, st, input, result, cobj)
		return out, st.Next, err
	case "Wait":
		eff, err := st.EffectiveInput(input, cobj)
		if err != nil {
			return nil, "", asTaskFailure(err)
		}
		d, err := m.waitFor(st, eff)
		if err != nil {
			return nil, "", asTaskFailure(err)
		}
		if err := m.opts.Sleep(ctx, d); err != nil {
			return nil, "", err
		}
		out, err := m.output(ctx, st, eff, eff, cobj)
		return out, st.Next, err
	}
	// Task, Parallel and Map: the work, with Retry and Catch around it.
	// An input that does not fit the state's paths is States.Runtime, as
	// a result that does not: no function failed, so no Retry or Catch
	// applies.
	eff, err := st.EffectiveInput(input, cobj)
	if err != nil {
		return nil, "", asTaskFailure(err)
	}
	if st.Type == "Task" {
		// Each attempt the Retry allows may pull the data again.
		eff = m.share([]any{eff}, attemptsOf(st))[0]
	}
	result, err := m.withRetry(ctx, name, st, path, func(attempt int) (any, error) {
		return m.work(ctx, name, st, path, eff, cobj, attempt)
	})
	if err != nil {
		var f *Failure
		if !errors.As(err, &f) {
			f = failureOf(err)
		}
		if c, ok := st.CatcherFor(f.Name); ok && ctx.Err() == nil {
			m.emit("caught", name, path, 0, f.Name)
			in, err := m.resolveIf(ctx, m.pathTouches(input, pathOf(c.ResultPath)), input)
			if err != nil {
				return nil, "", err
			}
			out, err := c.CatchOutput(in, f.Name, f.Cause)
			return out, c.Next, asTaskFailure(err)
		}
		return nil, "", f
	}
	out, err := m.output(ctx, st, input, result, cobj)
	if err != nil {
		return nil, "", err
	}
	if st.End {
		return out, "", nil
	}
	return out, st.Next, nil
}

// withRetry runs work, retrying per the state's retriers (each counts
// its own retries).
func (m *Machine) withRetry(ctx context.Context, name string, st *asl.State, path string, work func(attempt int) (any, error)) (any, error) {
	retried := make([]int, len(st.Retry))
	for attempt := 1; ; attempt++ {
		out, err := work(attempt)
		if err == nil {
			return out, nil
		}
		f := failureOf(err)
		i := st.RetrierFor(f.Name)
		if i < 0 || ctx.Err() != nil {
			return nil, f
		}
		d, ok := st.Retry[i].Delay(retried[i])
		if !ok {
			return nil, f
		}
		retried[i]++
		m.opts.Observe(Event{Kind: "retrying", State: name, Path: path, Attempt: attempt, Error: f.Name, Time: m.opts.Now(), Delay: d})
		if err := m.opts.Sleep(ctx, d); err != nil {
			return nil, err
		}
	}
}

func (m *Machine) work(ctx context.Context, name string, st *asl.State, path string, input, cobj any, attempt int) (any, error) {
	switch st.Type {
	case "Task":
		return m.task(ctx, st, Call{State: name, Path: path, Attempt: attempt}, input)
	case "Parallel":
		outs := make([]any, len(st.Branches))
		inputs := make([]any, len(st.Branches))
		for i := range inputs {
			inputs[i] = input
		}
		// Every branch may pull the data a reference in the input names.
		inputs = m.share(inputs, 1)
		err := m.fanOut(ctx, len(st.Branches), 0, func(ctx context.Context, i int) error {
			out, err := m.run(ctx, st.Branches[i], join(path, name, i), inputs[i], cobj)
			outs[i] = out
			return err
		})
		return outs, err
	case "Map":
		itemsPath := st.ItemsPath
		if itemsPath == "" {
			itemsPath = "$"
		}
		v, err := asl.Get(input, itemsPath)
		if err != nil {
			return nil, &Failure{Name: "States.Runtime", Cause: fmt.Sprintf("state %q: ItemsPath: %v", name, err)}
		}
		items, ok := v.([]any)
		if !ok {
			return nil, &Failure{Name: "States.Runtime", Cause: fmt.Sprintf("state %q: ItemsPath %s is not an array", name, itemsPath)}
		}
		proc := st.ItemProcessor
		if proc == nil {
			proc = st.Iterator
		}
		selector := st.Parameters
		if len(st.ItemSelector) > 0 {
			selector = st.ItemSelector
		}
		inputs := make([]any, len(items))
		for i, item := range items {
			if len(selector) > 0 {
				itemCtx := withMapItem(cobj, i, item)
				r, err := asl.Resolve(selector, input, itemCtx)
				if err != nil {
					return nil, &Failure{Name: "States.ParameterPathFailure", Cause: err.Error()}
				}
				item = r
			}
			inputs[i] = item
		}
		// A reference in several items' inputs may be pulled by each.
		inputs = m.share(inputs, 1)
		outs := make([]any, len(items))
		err = m.fanOut(ctx, len(items), st.MaxConcurrency, func(ctx context.Context, i int) error {
			out, err := m.run(ctx, proc, join(path, name, i), inputs[i], cobj)
			outs[i] = out
			return err
		})
		return outs, err
	}
	return nil, fmt.Errorf("state type %q cannot do work", st.Type)
}

func (m *Machine) task(ctx context.Context, st *asl.State, call Call, input any) (any, error) {
	fn, err := asl.FunctionOf(st.Resource)
	if err != nil {
		return nil, &Failure{Name: asl.ErrorTaskFailed, Cause: err.Error()}
	}
	body, err := json.Marshal(input)
	if err != nil {
		return nil, &Failure{Name: asl.ErrorTaskFailed, Cause: err.Error()}
	}
	tctx := ctx
	if st.TimeoutSeconds > 0 {
		var cancel context.CancelFunc
		tctx, cancel = context.WithTimeout(ctx, time.Duration(st.TimeoutSeconds)*time.Second)
		defer cancel()
	}
	call.Function, call.Input = fn, body
	out, err := m.inv.Invoke(tctx, call)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return nil, &Failure{Name: asl.ErrorTimeout, Cause: fmt.Sprintf("function %s ran longer than %d s", fn, st.TimeoutSeconds)}
		}
		return nil, err
	}
	var v any
	if len(out) > 0 {
		if err := json.Unmarshal(out, &v); err != nil {
			// A result that is not JSON is passed on as a string.
			v = string(out)
		}
	}
	return v, nil
}

// fanOut runs n jobs, at most limit at once (0: all); the first error
// cancels the others and is returned.
func (m *Machine) fanOut(ctx context.Context, n, limit int, job func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if limit <= 0 || limit > n {
		limit = n
	}
	sem := make(chan struct{}, max(limit, 1))
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := job(ctx, i); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

func join(path, state string, i int) string {
	if path == "" {
		return fmt.Sprintf("%s/%d", state, i)
	}
	return fmt.Sprintf("%s/%s/%d", path, state, i)
}

// withMapItem adds $$.Map.Item.{Index,Value} to the context object.
func withMapItem(cobj any, i int, item any) any {
	out := map[string]any{}
	if m, ok := cobj.(map[string]any); ok {
		for k, v := range m {
			out[k] = v
		}
	}
	out["Map"] = map[string]any{"Item": map[string]any{"Index": float64(i), "Value": item}}
	return out
}

func (m *Machine) waitFor(st *asl.State, input any) (time.Duration, error) {
	switch {
	case st.Seconds != nil:
		return time.Duration(*st.Seconds * float64(time.Second)), nil
	case st.SecondsPath != "":
		v, err := asl.Get(input, st.SecondsPath)
		if err != nil {
			return 0, err
		}
		s, ok := v.(float64)
		if !ok || s < 0 {
			return 0, fmt.Errorf("SecondsPath %s is not a non-negative number", st.SecondsPath)
		}
		return time.Duration(s * float64(time.Second)), nil
	}
	ts := st.Timestamp
	if st.TimestampPath != "" {
		v, err := asl.Get(input, st.TimestampPath)
		if err != nil {
			return 0, err
		}
		s, ok := v.(string)
		if !ok {
			return 0, fmt.Errorf("TimestampPath %s is not a string", st.TimestampPath)
		}
		ts = s
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return 0, fmt.Errorf("timestamp %q: %w", ts, err)
	}
	return max(t.Sub(m.opts.Now()), 0), nil
}

// failureOf names an error the way Retry and Catch see it.
func failureOf(err error) *Failure {
	var f *Failure
	if errors.As(err, &f) {
		return f
	}
	var fe *FunctionError
	if errors.As(err, &fe) {
		return &Failure{Name: fe.Type, Cause: fe.Message}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &Failure{Name: asl.ErrorTimeout, Cause: err.Error()}
	}
	return &Failure{Name: asl.ErrorTaskFailed, Cause: err.Error()}
}

func errorName(err error) string { return failureOf(err).Name }

// asTaskFailure turns a data-processing error into the ASL runtime error.
func asTaskFailure(err error) error {
	if err == nil {
		return nil
	}
	return &Failure{Name: "States.Runtime", Cause: err.Error()}
}
