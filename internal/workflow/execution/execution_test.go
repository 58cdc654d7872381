package execution

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/workflow/asl"
)

// functions is a fake Invoker: each function is a Go func of its input.
type functions struct {
	mu        sync.Mutex
	calls     map[string][]int // attempts per function
	running   int
	maxAtOnce int
	fns       map[string]func(ctx context.Context, in map[string]any, attempt int) (any, error)
}

func (f *functions) Invoke(ctx context.Context, call Call) ([]byte, error) {
	fn, input, attempt := call.Function, call.Input, call.Attempt
	f.mu.Lock()
	f.calls[fn] = append(f.calls[fn], attempt)
	f.running++
	f.maxAtOnce = max(f.maxAtOnce, f.running)
	impl := f.fns[fn]
	f.mu.Unlock()
	defer func() { f.mu.Lock(); f.running--; f.mu.Unlock() }()
	var in map[string]any
	_ = json.Unmarshal(input, &in)
	out, err := impl(ctx, in, attempt)
	if err != nil {
		return nil, err
	}
	return json.Marshal(out)
}

func newFunctions() *functions {
	return &functions{calls: map[string][]int{}, fns: map[string]func(context.Context, map[string]any, int) (any, error){}}
}

func machine(t *testing.T, def string, f *functions, sleeps *[]time.Duration) *Machine {
	t.Helper()
	d, err := asl.Parse([]byte(def))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	return New(d, f, Options{Sleep: func(ctx context.Context, dur time.Duration) error {
		mu.Lock()
		defer mu.Unlock()
		if sleeps != nil {
			*sleeps = append(*sleeps, dur)
		}
		return ctx.Err()
	}})
}

func decode(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSequenceChoicePassAndRetry(t *testing.T) {
	f := newFunctions()
	f.fns["price"] = func(_ context.Context, in map[string]any, attempt int) (any, error) {
		if attempt < 3 {
			return nil, &FunctionError{Type: "Busy", Message: "try again"}
		}
		return map[string]any{"total": in["qty"].(float64) * 10}, nil
	}
	var sleeps []time.Duration
	m := machine(t, `{"StartAt": "Price", "States": {
	  "Price": {"Type": "Task", "Resource": "price", "ResultPath": "$.price",
	            "Retry": [{"ErrorEquals": ["Busy"], "IntervalSeconds": 1, "BackoffRate": 2}], "Next": "Big?"},
	  "Big?": {"Type": "Choice", "Choices": [{"Variable": "$.price.total", "NumericGreaterThan": 20, "Next": "Big"}], "Default": "Small"},
	  "Big": {"Type": "Pass", "Result": "big", "ResultPath": "$.size", "Next": "Done"},
	  "Small": {"Type": "Pass", "Result": "small", "ResultPath": "$.size", "Next": "Done"},
	  "Done": {"Type": "Succeed"}}}`, f, &sleeps)
	out, err := m.Run(context.Background(), decode(t, `{"qty": 3}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, decode(t, `{"qty": 3, "price": {"total": 30}, "size": "big"}`)) {
		t.Fatalf("output %v", out)
	}
	if !reflect.DeepEqual(f.calls["price"], []int{1, 2, 3}) || !reflect.DeepEqual(sleeps, []time.Duration{time.Second, 2 * time.Second}) {
		t.Fatalf("attempts %v, waits %v", f.calls["price"], sleeps)
	}
}

func TestCatchTimeoutAndFail(t *testing.T) {
	f := newFunctions()
	f.fns["hang"] = func(ctx context.Context, _ map[string]any, _ int) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	f.fns["boom"] = func(context.Context, map[string]any, int) (any, error) {
		return nil, &FunctionError{Type: "Boom", Message: "broken"}
	}
	m := machine(t, `{"StartAt": "Hang", "States": {
	  "Hang": {"Type": "Task", "Resource": "hang", "TimeoutSeconds": 1,
	           "Catch": [{"ErrorEquals": ["States.Timeout"], "ResultPath": "$.timeout", "Next": "Boom"}], "Next": "Boom"},
	  "Boom": {"Type": "Task", "Resource": "boom", "Retry": [{"ErrorEquals": ["States.TaskFailed"], "MaxAttempts": 1}],
	           "Catch": [{"ErrorEquals": ["Other"], "Next": "Done"}], "Next": "Done"},
	  "Done": {"Type": "Succeed"}}}`, f, nil)
	var events []Event
	var mu sync.Mutex
	m.opts.Observe = func(e Event) { mu.Lock(); events = append(events, e); mu.Unlock() }
	_, err := m.Run(context.Background(), decode(t, `{}`), nil)
	var fail *Failure
	if !errors.As(err, &fail) || fail.Name != "Boom" || fail.Cause != "broken" {
		t.Fatalf("run: %v, want the uncaught Boom", err)
	}
	if !reflect.DeepEqual(f.calls["boom"], []int{1, 2}) {
		t.Errorf("boom attempts %v, want one retry (TaskFailed catches function errors)", f.calls["boom"])
	}
	var kinds []string
	for _, e := range events {
		kinds = append(kinds, e.Kind+" "+e.State+" "+e.Error)
	}
	want := "entered Hang |caught Hang States.Timeout|exited Hang |entered Boom |retrying Boom Boom|failed Boom Boom"
	if got := strings.Join(kinds, "|"); got != want {
		t.Errorf("history %s\nwant    %s", got, want)
	}

	m = machine(t, `{"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "Refused", "Cause": "no"}}}`, f, nil)
	if _, err := m.Run(context.Background(), nil, nil); !errors.As(err, &fail) || fail.Name != "Refused" {
		t.Errorf("Fail state: %v", err)
	}
}

func TestParallelAndMap(t *testing.T) {
	f := newFunctions()
	f.fns["double"] = func(_ context.Context, in map[string]any, _ int) (any, error) {
		time.Sleep(5 * time.Millisecond) // lets items overlap
		return in["v"].(float64) * 2, nil
	}
	f.fns["name"] = func(_ context.Context, in map[string]any, _ int) (any, error) { return "n-" + in["id"].(string), nil }
	var sleeps []time.Duration
	m := machine(t, `{"StartAt": "Both", "States": {
	  "Both": {"Type": "Parallel", "ResultPath": "$.both", "Next": "Each", "Branches": [
	      {"StartAt": "Name", "States": {"Name": {"Type": "Task", "Resource": "name", "End": true}}},
	      {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "SecondsPath": "$.delay", "Next": "Echo"},
	                                     "Echo": {"Type": "Pass", "InputPath": "$.id", "End": true}}}]},
	  "Each": {"Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 2, "ResultPath": "$.doubled",
	      "Parameters": {"v.$": "$$.Map.Item.Value", "i.$": "$$.Map.Item.Index"},
	      "ItemProcessor": {"StartAt": "D", "States": {"D": {"Type": "Task", "Resource": "double", "End": true}}},
	      "End": true}}}`, f, &sleeps)
	out, err := m.Run(context.Background(), decode(t, `{"id": "x", "delay": 2, "items": [1, 2, 3, 4, 5]}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := decode(t, `{"id": "x", "delay": 2, "items": [1, 2, 3, 4, 5], "both": ["n-x", "x"], "doubled": [2, 4, 6, 8, 10]}`)
	if !reflect.DeepEqual(out, want) {
		t.Fatalf("output %v", out)
	}
	if f.maxAtOnce > 2 || !reflect.DeepEqual(sleeps, []time.Duration{2 * time.Second}) {
		t.Errorf("at most %d at once (MaxConcurrency 2), waits %v", f.maxAtOnce, sleeps)
	}
}

// An execution resumes at the state after the last one that finished,
// with that state's input; the finished steps do not run again.
func TestRunAtResumes(t *testing.T) {
	f := newFunctions()
	f.fns["a"] = func(_ context.Context, in map[string]any, _ int) (any, error) { return "a-ran", nil }
	f.fns["b"] = func(_ context.Context, in map[string]any, _ int) (any, error) { return in["from"], nil }
	m := machine(t, `{"StartAt": "A", "States": {
	  "A": {"Type": "Task", "Resource": "a", "ResultPath": "$.from", "Next": "B"},
	  "B": {"Type": "Task", "Resource": "b", "End": true}}}`, f, nil)
	out, err := m.RunAt(context.Background(), "B", decode(t, `{"from": "recorded output of A"}`), nil)
	if err != nil || out != "recorded output of A" || len(f.calls["a"]) != 0 {
		t.Fatalf("resumed run: %v, %v; a ran %d times", out, err, len(f.calls["a"]))
	}
	if _, err := m.RunAt(context.Background(), "Nope", nil, nil); err == nil {
		t.Fatal("resumed at a state that does not exist")
	}
}

// Succeed and Wait apply InputPath; a Task's input that does not fit its
// paths is States.Runtime, which no Catch takes; a Map's ItemSelector
// builds each item's input.
func TestPathsOfEveryState(t *testing.T) {
	f := newFunctions()
	f.fns["echo"] = func(_ context.Context, in map[string]any, _ int) (any, error) { return in, nil }
	for _, tc := range []struct{ def, input, want, err string }{
		{`{"StartAt": "S", "States": {"S": {"Type": "Succeed", "InputPath": "$.a", "OutputPath": "$.b"}}}`, `{"a": {"b": 1}}`, `1`, ""},
		{`{"StartAt": "W", "States": {"W": {"Type": "Wait", "SecondsPath": "$.s", "InputPath": "$.a", "End": true}}}`, `{"a": {"s": 0}}`, `{"s": 0}`, ""},
		{`{"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "echo", "InputPath": "$.missing", "End": true,
		  "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "C"}]}, "C": {"Type": "Pass", "End": true}}}`, `{}`, ``, "States.Runtime"},
		{`{"StartAt": "M", "States": {"M": {"Type": "Map", "ItemSelector": {"v.$": "$$.Map.Item.Value", "i.$": "$$.Map.Item.Index", "k.$": "$.k"},
		  "ItemsPath": "$.items", "ItemProcessor": {"StartAt": "E", "States": {"E": {"Type": "Task", "Resource": "echo", "End": true}}}, "End": true}}}`,
			`{"k": "x", "items": ["a"]}`, `[{"v": "a", "i": 0, "k": "x"}]`, ""},
	} {
		out, err := machine(t, tc.def, f, nil).Run(context.Background(), decode(t, tc.input), nil)
		var fail *Failure
		switch {
		case tc.err != "" && (!errors.As(err, &fail) || fail.Name != tc.err):
			t.Errorf("%.60s: %v, %v; want the error %s", tc.def, out, err, tc.err)
		case tc.err == "" && (err != nil || !reflect.DeepEqual(out, decode(t, tc.want))):
			t.Errorf("%.60s: %v, %v; want %s", tc.def, out, err, tc.want)
		}
	}
}
