package execution

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/baton-faas/baton/internal/workflow/asl"
)

// Transfers handles references to data that workers keep (direct
// transfers, package transfer). A Task's result may be such a reference;
// it travels in the state as an opaque value that paths move as a whole
// and Tasks pass on to the next function, whose worker pulls the data.
// The machine resolves references (pulls the data here) only where it
// must look inside one:
//   - a Choice state's input, and the input of a Wait state whose
//     SecondsPath or TimestampPath passes through one;
//   - an InputPath, ItemsPath, ResultPath or a Parameters, ItemSelector
//     or ResultSelector path that passes through one (a path that ends at
//     one just moves it), and an intrinsic function while the data holds
//     any;
//   - an OutputPath other than "$" while the input or result holds any;
//   - the execution's output.
//
// References allow a number of pulls: a Parallel state's branches and a
// Map state's items each count as one receiver, and a Task's every
// attempt its Retry allows counts as one more pull.
type Transfers interface {
	// IsRef says whether v is a reference; Contains whether v holds one.
	IsRef(v any) bool
	Contains(v any) bool
	// Resolve returns v with every reference replaced by the data it
	// names. A failure is a *Failure (a *FunctionError is taken as one).
	Resolve(ctx context.Context, v any) (any, error)
	// Share returns vs with each reference in them allowing k×n times
	// the pulls it allowed, k being how often it occurs in vs.
	Share(vs []any, n int) []any
}

// maxAttempts caps the pulls granted for a Task's retries.
const maxAttempts = 10

// attemptsOf is how many times a Task may run under its Retry.
func attemptsOf(st *asl.State) int {
	n := 1
	for _, r := range st.Retry {
		if r.MaxAttempts != nil {
			n += *r.MaxAttempts
		} else {
			n += 3 // ASL's default MaxAttempts
		}
	}
	return min(n, maxAttempts)
}

func (m *Machine) share(vs []any, n int) []any {
	if m.opts.Transfers == nil {
		return vs
	}
	return m.opts.Transfers.Share(vs, n)
}

// pathTouches reports whether evaluating path p on v would pass through a
// reference (reaching one as the path's end just moves it): whether any
// proper prefix of p names a reference in v.
func (m *Machine) pathTouches(v any, p string) bool {
	t := m.opts.Transfers
	if t == nil || p == "" || p == "$" {
		return false
	}
	for _, q := range pathPrefixes(p) {
		if r, err := asl.Get(v, q); err == nil && t.IsRef(r) {
			return true
		}
	}
	return false
}

// pathPrefixes are the proper prefixes of a reference path that are paths
// themselves: "$.a.b[0]" gives "$", "$.a", "$.a.b". Field names in
// brackets and quotes ($['a.b']) are not split.
func pathPrefixes(p string) []string {
	var out []string
	quoted := false
	for i := 1; i < len(p); i++ {
		switch {
		case strings.HasPrefix(p[i:], "['") && !quoted:
			out = append(out, p[:i])
			quoted = true
			i++
		case strings.HasPrefix(p[i:], "']") && quoted:
			quoted = false
			i++
		case quoted:
		case p[i] == '.' || p[i] == '[':
			out = append(out, p[:i])
		}
	}
	return out
}

// templateTouches reports whether resolving a Parameters, ItemSelector or
// ResultSelector template on input and context would look inside a
// reference: a path passing through one, or an intrinsic function while
// the data holds any (conservatively).
func (m *Machine) templateTouches(tpl json.RawMessage, input, cobj any) bool {
	if m.opts.Transfers == nil || len(tpl) == 0 {
		return false
	}
	var obj map[string]any
	if json.Unmarshal(tpl, &obj) != nil {
		return false
	}
	return m.objectTouches(obj, input, cobj)
}

func (m *Machine) objectTouches(obj map[string]any, input, cobj any) bool {
	t := m.opts.Transfers
	for k, v := range obj {
		if strings.HasSuffix(k, ".$") {
			expr, _ := v.(string)
			expr = strings.TrimSpace(expr)
			switch {
			case strings.HasPrefix(expr, "$$"):
				if m.pathTouches(cobj, expr[1:]) {
					return true
				}
			case strings.HasPrefix(expr, "$"):
				if m.pathTouches(input, expr) {
					return true
				}
			default:
				if t.Contains(input) || t.Contains(cobj) {
					return true
				}
			}
			continue
		}
		if sub, ok := v.(map[string]any); ok && m.objectTouches(sub, input, cobj) {
			return true
		}
	}
	return false
}

// resolveIf resolves v's references when look is set.
func (m *Machine) resolveIf(ctx context.Context, look bool, v any) (any, error) {
	if !look {
		return v, nil
	}
	return m.resolveAll(ctx, v)
}

func (m *Machine) resolveAll(ctx context.Context, v any) (any, error) {
	t := m.opts.Transfers
	if t == nil || !t.Contains(v) {
		return v, nil
	}
	out, err := t.Resolve(ctx, v)
	if err != nil {
		var f *Failure
		if errors.As(err, &f) {
			return nil, f
		}
		return nil, failureOf(err)
	}
	return out, nil
}

// prepareInput resolves a state's input when its processing looks inside
// a reference (see Transfers).
func (m *Machine) prepareInput(ctx context.Context, st *asl.State, input, cobj any) (any, error) {
	t := m.opts.Transfers
	if t == nil || !t.Contains(input) {
		return input, nil
	}
	look := st.Type == "Choice" || m.pathTouches(input, inputPathOf(st))
	if !look {
		eff, err := st.EffectiveInput(input, cobj)
		if err != nil {
			// Let the state fail on its own, on resolved data.
			look = true
		} else {
			switch st.Type {
			case "Map":
				look = m.mapTouches(st, eff, cobj)
			case "Wait":
				look = m.pathTouches(eff, st.SecondsPath) || m.pathTouches(eff, st.TimestampPath)
			}
		}
		if !look && st.Type != "Map" {
			if v, err := asl.Get(input, inputPathOf(st)); err == nil {
				look = m.templateTouches(st.Parameters, v, cobj)
			}
		}
	}
	return m.resolveIf(ctx, look, input)
}

// mapTouches says whether a Map's ItemsPath or item selector looks
// inside a reference.
func (m *Machine) mapTouches(st *asl.State, eff, cobj any) bool {
	itemsPath := st.ItemsPath
	if itemsPath == "" {
		itemsPath = "$"
	}
	if m.opts.Transfers.IsRef(eff) || m.pathTouches(eff, itemsPath) {
		return true
	}
	selector := st.Parameters
	if len(st.ItemSelector) > 0 {
		selector = st.ItemSelector
	}
	v, err := asl.Get(eff, itemsPath)
	items, ok := v.([]any)
	if err != nil || !ok {
		return false // the state fails on its own
	}
	for i, item := range items {
		if m.templateTouches(selector, eff, withMapItem(cobj, i, item)) {
			return true
		}
	}
	return false
}

// output is st.Output with the references it would look inside resolved.
func (m *Machine) output(ctx context.Context, st *asl.State, input, result, cobj any) (any, error) {
	if t := m.opts.Transfers; t != nil {
		var err error
		if m.templateTouches(st.ResultSelector, result, cobj) || (outputPathOf(st) != "$" && t.Contains(result)) {
			if result, err = m.resolveAll(ctx, result); err != nil {
				return nil, err
			}
		}
		if m.pathTouches(input, pathOf(st.ResultPath)) || (outputPathOf(st) != "$" && t.Contains(input)) {
			if input, err = m.resolveAll(ctx, input); err != nil {
				return nil, err
			}
		}
	}
	out, err := st.Output(input, result, cobj)
	return out, asTaskFailure(err)
}

// inputPathOf and outputPathOf are a state's InputPath and OutputPath
// ("$" when absent or null: null makes the data an empty object, which
// holds nothing to look into).
func inputPathOf(st *asl.State) string  { return orRoot(pathOf(st.InputPath)) }
func outputPathOf(st *asl.State) string { return orRoot(pathOf(st.OutputPath)) }

func orRoot(p string) string {
	if p == "" {
		return "$"
	}
	return p
}

// pathOf reads an InputPath, OutputPath or ResultPath ("$" when absent,
// "" when null).
func pathOf(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "$"
	}
	var p string
	if json.Unmarshal(raw, &p) != nil {
		return ""
	}
	return p
}
