package asl

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrPath is a path that does not match the data (ASL's
// States.ParameterPathFailure / ResultPathMatchFailure).
var ErrPath = errors.New("path does not match the input")

// step is one element of a reference path: a field name or an index.
type step struct {
	field string
	index int
	isIdx bool
}

// parsePath reads a reference path: $, $.a.b, $.a[0], $['a b'].
func parsePath(p string) ([]step, error) {
	if !isPath(p) {
		return nil, fmt.Errorf("%q is not a path starting with $", p)
	}
	rest := p[1:]
	var steps []step
	for rest != "" {
		switch {
		case rest[0] == '.':
			rest = rest[1:]
			end := strings.IndexAny(rest, ".[")
			if end < 0 {
				end = len(rest)
			}
			if end == 0 {
				return nil, fmt.Errorf("%q: empty field name", p)
			}
			steps = append(steps, step{field: rest[:end]})
			rest = rest[end:]
		case strings.HasPrefix(rest, "['"):
			end := strings.Index(rest, "']")
			if end < 0 {
				return nil, fmt.Errorf("%q: unclosed ['", p)
			}
			steps = append(steps, step{field: rest[2:end]})
			rest = rest[end+2:]
		case rest[0] == '[':
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				return nil, fmt.Errorf("%q: unclosed [", p)
			}
			n, err := strconv.Atoi(rest[1:end])
			if err != nil || n < 0 {
				return nil, fmt.Errorf("%q: %q is not an index (only field names and indexes are supported)", p, rest[1:end])
			}
			steps = append(steps, step{index: n, isIdx: true})
			rest = rest[end+1:]
		default:
			return nil, fmt.Errorf("%q: unexpected %q", p, rest[:1])
		}
	}
	return steps, nil
}

// Get returns the value at path p in v (decoded JSON).
func Get(v any, p string) (any, error) {
	steps, err := parsePath(p)
	if err != nil {
		return nil, err
	}
	cur := v
	for _, s := range steps {
		switch c := cur.(type) {
		case map[string]any:
			next, ok := c[s.field]
			if s.isIdx || !ok {
				return nil, fmt.Errorf("%w: %s", ErrPath, p)
			}
			cur = next
		case []any:
			if !s.isIdx || s.index >= len(c) {
				return nil, fmt.Errorf("%w: %s", ErrPath, p)
			}
			cur = c[s.index]
		default:
			return nil, fmt.Errorf("%w: %s", ErrPath, p)
		}
	}
	return cur, nil
}

// Set returns v with value placed at path p (ResultPath): "$" replaces
// the whole input; missing objects on the way are created. v is not
// modified.
func Set(v any, p string, value any) (any, error) {
	steps, err := parsePath(p)
	if err != nil {
		return nil, err
	}
	return setAt(v, steps, value, p)
}

func setAt(v any, steps []step, value any, p string) (any, error) {
	if len(steps) == 0 {
		return value, nil
	}
	s := steps[0]
	if s.isIdx {
		arr, ok := v.([]any)
		if !ok || s.index >= len(arr) {
			return nil, fmt.Errorf("%w: %s", ErrPath, p)
		}
		out := append([]any(nil), arr...)
		next, err := setAt(arr[s.index], steps[1:], value, p)
		if err != nil {
			return nil, err
		}
		out[s.index] = next
		return out, nil
	}
	obj, ok := v.(map[string]any)
	if v == nil {
		obj, ok = map[string]any{}, true
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s (not an object)", ErrPath, p)
	}
	out := make(map[string]any, len(obj)+1)
	for k, x := range obj {
		out[k] = x
	}
	next, err := setAt(obj[s.field], steps[1:], value, p)
	if err != nil {
		return nil, err
	}
	out[s.field] = next
	return out, nil
}

// Resolve builds a Parameters or ResultSelector object: keys ending in
// ".$" take the value of a path in input (or "$$." in context) or of an
// intrinsic function; other values are copied, nested objects resolved.
func Resolve(template json.RawMessage, input, context any) (any, error) {
	var obj map[string]any
	if err := json.Unmarshal(template, &obj); err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	return resolveObject(obj, input, context)
}

func resolveObject(obj map[string]any, input, context any) (map[string]any, error) {
	out := make(map[string]any, len(obj))
	for k, v := range obj {
		if name, ok := strings.CutSuffix(k, ".$"); ok {
			expr, _ := v.(string)
			val, err := evaluate(expr, input, context)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			out[name] = val
			continue
		}
		if sub, ok := v.(map[string]any); ok {
			r, err := resolveObject(sub, input, context)
			if err != nil {
				return nil, err
			}
			out[k] = r
			continue
		}
		out[k] = v
	}
	return out, nil
}

// evaluate is a path, a context path, or an intrinsic function call.
func evaluate(expr string, input, context any) (any, error) {
	expr = strings.TrimSpace(expr)
	switch {
	case strings.HasPrefix(expr, "$$"):
		return Get(context, expr[1:])
	case isPath(expr):
		return Get(input, expr)
	}
	name, argText, ok := strings.Cut(expr, "(")
	if !ok || !strings.HasSuffix(argText, ")") {
		return nil, fmt.Errorf("%q is neither a path nor an intrinsic function call", expr)
	}
	args, err := splitArgs(strings.TrimSuffix(argText, ")"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	vals := make([]any, len(args))
	for i, a := range args {
		if i == 0 && strings.TrimSpace(name) == "States.Format" && strings.HasPrefix(a, "'") {
			vals[i] = literalTemplate(strings.TrimSuffix(strings.TrimPrefix(a, "'"), "'"))
			continue
		}
		if vals[i], err = argument(a, input, context); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	return intrinsic(strings.TrimSpace(name), vals)
}

// splitArgs splits on top-level commas, keeping quoted strings and
// nested calls whole.
func splitArgs(s string) ([]string, error) {
	var out []string
	depth, start, quoted := 0, 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && quoted:
			i++
		case c == '\'':
			quoted = !quoted
		case quoted:
		case c == '(':
			depth++
		case c == ')':
			depth--
		case c == ',' && depth == 0:
			out = append(out, strings.TrimSpace(s[start:i]))
			start = i + 1
		}
	}
	if quoted || depth != 0 {
		return nil, fmt.Errorf("unbalanced quotes or parentheses in %q", s)
	}
	if last := strings.TrimSpace(s[start:]); last != "" || len(out) > 0 {
		out = append(out, last)
	}
	return out, nil
}

// argument is a quoted string, a number, true/false/null, a path or a
// nested intrinsic call.
func argument(a string, input, context any) (any, error) {
	switch {
	case strings.HasPrefix(a, "'"):
		s := strings.TrimSuffix(strings.TrimPrefix(a, "'"), "'")
		r := strings.NewReplacer(`\'`, `'`, `\{`, `{`, `\}`, `}`, `\\`, `\`)
		return r.Replace(s), nil
	case a == "true":
		return true, nil
	case a == "false":
		return false, nil
	case a == "null":
		return nil, nil
	case strings.HasPrefix(a, "$") || strings.HasPrefix(a, "States."):
		return evaluate(a, input, context)
	}
	f, err := strconv.ParseFloat(a, 64)
	if err != nil {
		return nil, fmt.Errorf("argument %q is not a string, number, boolean, null, path or call", a)
	}
	return f, nil
}

func intrinsic(name string, args []any) (any, error) {
	switch name {
	case "States.Array":
		return args, nil
	case "States.Format":
		if len(args) == 0 {
			return nil, errors.New("States.Format needs a template")
		}
		var tmpl string
		escaped := false
		switch v := args[0].(type) {
		case string:
			tmpl = v
		case literalTemplate:
			tmpl, escaped = string(v), true
		default:
			return nil, errors.New("States.Format: the template must be a string")
		}
		var b strings.Builder
		n := 1
		for i := 0; i < len(tmpl); i++ {
			switch {
			case escaped && tmpl[i] == '\\' && i+1 < len(tmpl) && strings.IndexByte(`{}'\\`, tmpl[i+1]) >= 0:
				i++
				b.WriteByte(tmpl[i])
			case strings.HasPrefix(tmpl[i:], "{}"):
				if n >= len(args) {
					return nil, errors.New("States.Format: more {} than arguments")
				}
				switch v := args[n].(type) {
				case string:
					b.WriteString(v)
				default:
					j, _ := json.Marshal(v)
					b.Write(j)
				}
				n++
				i++
			default:
				b.WriteByte(tmpl[i])
			}
		}
		if n != len(args) {
			return nil, errors.New("States.Format: more arguments than {}")
		}
		return b.String(), nil
	case "States.StringToJson":
		s, ok := one(args).(string)
		if !ok || len(args) != 1 {
			return nil, errors.New("States.StringToJson takes one string")
		}
		var v any
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			return nil, fmt.Errorf("States.StringToJson: %w", err)
		}
		return v, nil
	case "States.JsonToString":
		if len(args) != 1 {
			return nil, errors.New("States.JsonToString takes one value")
		}
		j, err := json.Marshal(args[0])
		if err != nil {
			return nil, err
		}
		return string(j), nil
	}
	return nil, fmt.Errorf("intrinsic function %q is not supported", name)
}

// literalTemplate is a States.Format template written in the call, its
// escapes (\{ \} \' \\) kept until the {} are found: an escaped brace is a
// brace, not half a placeholder.
type literalTemplate string

func one(args []any) any {
	if len(args) == 0 {
		return nil
	}
	return args[0]
}
