package execution

import (
	"context"
	"strings"
	"sync"
	"testing"
)

// fakeRefs stands in for the controller's references: a reference is
// {"$ref": {"name": N, "pulls": P}}; resolving one gives data[N].
type fakeRefs struct {
	mu       sync.Mutex
	data     map[string]any
	resolved []string
}

func refValue(name string, pulls float64) any {
	return map[string]any{"$ref": map[string]any{"name": name, "pulls": pulls}}
}

func refParts(v any) (string, float64, bool) {
	m, ok := v.(map[string]any)
	if !ok || len(m) != 1 {
		return "", 0, false
	}
	inner, ok := m["$ref"].(map[string]any)
	if !ok {
		return "", 0, false
	}
	name, _ := inner["name"].(string)
	pulls, _ := inner["pulls"].(float64)
	return name, pulls, true
}

func (f *fakeRefs) IsRef(v any) bool { _, _, ok := refParts(v); return ok }

func (f *fakeRefs) Contains(v any) bool {
	if f.IsRef(v) {
		return true
	}
	switch x := v.(type) {
	case map[string]any:
		for _, e := range x {
			if f.Contains(e) {
				return true
			}
		}
	case []any:
		for _, e := range x {
			if f.Contains(e) {
				return true
			}
		}
	}
	return false
}

func (f *fakeRefs) walk(v any, fn func(name string, pulls float64) any) any {
	if name, pulls, ok := refParts(v); ok {
		return fn(name, pulls)
	}
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			out[k] = f.walk(e, fn)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = f.walk(e, fn)
		}
		return out
	}
	return v
}

func (f *fakeRefs) Resolve(ctx context.Context, v any) (any, error) {
	return f.walk(v, func(name string, _ float64) any {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.resolved = append(f.resolved, name)
		return f.data[name]
	}), nil
}

func (f *fakeRefs) Share(vs []any, n int) []any {
	count := map[string]int{}
	for _, v := range vs {
		f.walk(v, func(name string, _ float64) any { count[name]++; return nil })
	}
	out := make([]any, len(vs))
	for i, v := range vs {
		out[i] = f.walk(v, func(name string, pulls float64) any { return refValue(name, pulls*float64(count[name]*n)) })
	}
	return out
}

func (f *fakeRefs) resolvedCount() int { f.mu.Lock(); defer f.mu.Unlock(); return len(f.resolved) }

// refMachine runs def with a "produce" function returning a reference to
// data {"v": 42, "s": "big"} and a "consume" function recording inputs.
func refMachine(t *testing.T, def string) (*Machine, *fakeRefs, *[]any) {
	t.Helper()
	refs := &fakeRefs{data: map[string]any{"blob": map[string]any{"v": 42.0, "s": "big"}}}
	f := newFunctions()
	var mu sync.Mutex
	var seen []any
	f.fns["produce"] = func(ctx context.Context, in map[string]any, attempt int) (any, error) {
		return refValue("blob", 1), nil
	}
	f.fns["consume"] = func(ctx context.Context, in map[string]any, attempt int) (any, error) {
		mu.Lock()
		seen = append(seen, in)
		mu.Unlock()
		if fail, _ := in["fail"].(bool); fail && attempt < 2 {
			return nil, &FunctionError{Type: "Again", Message: "once more"}
		}
		return map[string]any{"ok": true}, nil
	}
	m := machine(t, def, f, nil)
	m.opts.Transfers = refs
	return m, refs, &seen
}

func TestRefPassesThroughTasks(t *testing.T) {
	m, refs, seen := refMachine(t, `{"StartAt":"P","States":{
		"P":{"Type":"Task","Resource":"produce","Next":"C"},
		"C":{"Type":"Task","Resource":"consume","End":true}}}`)
	if _, err := m.Run(context.Background(), map[string]any{}, nil); err != nil {
		t.Fatal(err)
	}
	if refs.resolvedCount() != 0 {
		t.Fatalf("resolved %v: a Task passing a reference on must not", refs.resolved)
	}
	if name, pulls, ok := refParts((*seen)[0]); !ok || name != "blob" || pulls != 1 {
		t.Fatalf("the consumer got %v, want the reference with 1 pull", (*seen)[0])
	}
}

func TestRefRetryGrantsPulls(t *testing.T) {
	m, _, seen := refMachine(t, `{"StartAt":"P","States":{
		"P":{"Type":"Task","Resource":"produce","ResultPath":"$.blob","Next":"C"},
		"C":{"Type":"Task","Resource":"consume","Retry":[{"ErrorEquals":["Again"],"MaxAttempts":2,"IntervalSeconds":1}],"End":true}}}`)
	if _, err := m.Run(context.Background(), map[string]any{"fail": true}, nil); err != nil {
		t.Fatal(err)
	}
	if len(*seen) != 2 {
		t.Fatalf("%d attempts, want 2", len(*seen))
	}
	for i, in := range *seen {
		if _, pulls, ok := refParts(in.(map[string]any)["blob"]); !ok || pulls != 3 {
			t.Fatalf("attempt %d got %v, want the reference allowing 3 pulls (1 + MaxAttempts 2)", i+1, in)
		}
	}
}

func TestRefMapFanOutShares(t *testing.T) {
	m, refs, seen := refMachine(t, `{"StartAt":"P","States":{
		"P":{"Type":"Task","Resource":"produce","ResultPath":"$.blob","Next":"M"},
		"M":{"Type":"Map","ItemsPath":"$.items","ItemSelector":{"i.$":"$$.Map.Item.Value","blob.$":"$.blob"},
			"ItemProcessor":{"StartAt":"C","States":{"C":{"Type":"Task","Resource":"consume","End":true}}},"End":true}}}`)
	if _, err := m.Run(context.Background(), map[string]any{"items": []any{1.0, 2.0, 3.0}}, nil); err != nil {
		t.Fatal(err)
	}
	if refs.resolvedCount() != 0 {
		t.Fatalf("resolved %v: a Map moving a reference into its items must not", refs.resolved)
	}
	if len(*seen) != 3 {
		t.Fatalf("%d items consumed", len(*seen))
	}
	for _, in := range *seen {
		if _, pulls, ok := refParts(in.(map[string]any)["blob"]); !ok || pulls != 3 {
			t.Fatalf("item got %v, want the reference allowing 3 pulls", in)
		}
	}
}

func TestRefParallelShares(t *testing.T) {
	m, _, seen := refMachine(t, `{"StartAt":"P","States":{
		"P":{"Type":"Task","Resource":"produce","Next":"B"},
		"B":{"Type":"Parallel","End":true,"Branches":[
			{"StartAt":"C1","States":{"C1":{"Type":"Task","Resource":"consume","End":true}}},
			{"StartAt":"C2","States":{"C2":{"Type":"Task","Resource":"consume","End":true}}}]}}}`)
	if _, err := m.Run(context.Background(), map[string]any{}, nil); err != nil {
		t.Fatal(err)
	}
	for _, in := range *seen {
		if _, pulls, ok := refParts(in); !ok || pulls != 2 {
			t.Fatalf("branch got %v, want the reference allowing 2 pulls", in)
		}
	}
}

func TestRefResolvedWhereLookedInside(t *testing.T) {
	for _, tc := range []struct{ name, def string }{
		{"Choice", `{"StartAt":"P","States":{
			"P":{"Type":"Task","Resource":"produce","Next":"Q"},
			"Q":{"Type":"Choice","Choices":[{"Variable":"$.v","NumericEquals":42,"Next":"C"}]},
			"C":{"Type":"Task","Resource":"consume","End":true}}}`},
		{"InputPath into it", `{"StartAt":"P","States":{
			"P":{"Type":"Task","Resource":"produce","Next":"C"},
			"C":{"Type":"Task","Resource":"consume","InputPath":"$","Parameters":{"v.$":"$.v"},"End":true}}}`},
		{"ResultSelector", `{"StartAt":"P","States":{
			"P":{"Type":"Task","Resource":"produce","ResultSelector":{"v.$":"$.v"},"Next":"C"},
			"C":{"Type":"Task","Resource":"consume","End":true}}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, refs, seen := refMachine(t, tc.def)
			if _, err := m.Run(context.Background(), map[string]any{}, nil); err != nil {
				t.Fatal(err)
			}
			if refs.resolvedCount() != 1 {
				t.Fatalf("resolved %v, want once", refs.resolved)
			}
			if v := (*seen)[0].(map[string]any)["v"]; v != 42.0 {
				t.Fatalf("the consumer got %v, want the resolved data", (*seen)[0])
			}
		})
	}
}

func TestRefResolvedInOutput(t *testing.T) {
	m, refs, _ := refMachine(t, `{"StartAt":"P","States":{"P":{"Type":"Task","Resource":"produce","End":true}}}`)
	out, err := m.Run(context.Background(), map[string]any{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if refs.Contains(out) || out.(map[string]any)["s"] != "big" {
		t.Fatalf("the execution's output %v still holds a reference", out)
	}
}

func TestPathPrefixes(t *testing.T) {
	for p, want := range map[string]string{
		"$":             "",
		"$.a":           "$",
		"$.a.b[0]":      "$ $.a $.a.b",
		"$['a.b'].c":    "$ $['a.b']",
		"$.x['y z'][2]": "$ $.x $.x['y z']",
	} {
		if got := strings.Join(pathPrefixes(p), " "); got != want {
			t.Errorf("pathPrefixes(%q) = %q, want %q", p, got, want)
		}
	}
}

func TestRefPathInsideResolves(t *testing.T) {
	m, refs, seen := refMachine(t, `{"StartAt":"P","States":{
		"P":{"Type":"Task","Resource":"produce","ResultPath":"$.blob","Next":"C"},
		"C":{"Type":"Task","Resource":"consume","InputPath":"$.blob","End":true}}}`)
	if _, err := m.Run(context.Background(), map[string]any{}, nil); err != nil {
		t.Fatal(err)
	}
	if refs.resolvedCount() != 0 {
		t.Fatalf("an InputPath ending at the reference resolved it: %v", refs.resolved)
	}
	if _, _, ok := refParts((*seen)[0]); !ok {
		t.Fatalf("the consumer got %v, want the reference", (*seen)[0])
	}
	m, refs, _ = refMachine(t, `{"StartAt":"P","States":{
		"P":{"Type":"Task","Resource":"produce","ResultPath":"$.blob","Next":"C"},
		"C":{"Type":"Task","Resource":"consume","InputPath":"$.blob.v","End":true}}}`)
	if _, err := m.Run(context.Background(), map[string]any{}, nil); err != nil {
		t.Fatal(err)
	}
	if refs.resolvedCount() != 1 {
		t.Fatalf("an InputPath into the reference resolved it %d times, want once", refs.resolvedCount())
	}
}
