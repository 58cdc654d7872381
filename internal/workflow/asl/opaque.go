package asl

import (
	"encoding/json"
	"strings"
)

// Opaque values (the workflow engine's references to data kept
// elsewhere, package transfer) may be moved by paths as whole values, but
// nothing may look inside one until it is resolved. These functions say
// whether a state's processing would.

// PathTouches reports whether evaluating path p on v (Get, or Set for a
// ResultPath) would descend into a value for which opaque is true:
// reaching one as the path's end is fine, passing through one is not.
func PathTouches(v any, p string, opaque func(any) bool) bool {
	steps, err := parsePath(p)
	if err != nil {
		return false // the path fails on its own
	}
	cur := v
	for _, s := range steps {
		if opaque(cur) {
			return true
		}
		switch c := cur.(type) {
		case map[string]any:
			cur = c[s.field]
		case []any:
			if !s.isIdx || s.index >= len(c) {
				return false
			}
			cur = c[s.index]
		default:
			return false
		}
	}
	return false
}

// TemplateTouches reports whether resolving a Parameters, ItemSelector
// or ResultSelector template on input and context would look inside an
// opaque value: a path passing through one, or an intrinsic function
// (conservatively, when input or context holds any opaque value).
// contains says whether a value holds an opaque value anywhere.
func TemplateTouches(template json.RawMessage, input, context any, opaque func(any) bool, contains func(any) bool) bool {
	var obj map[string]any
	if len(template) == 0 || json.Unmarshal(template, &obj) != nil {
		return false
	}
	return objectTouches(obj, input, context, opaque, contains)
}

func objectTouches(obj map[string]any, input, context any, opaque func(any) bool, contains func(any) bool) bool {
	for k, v := range obj {
		if strings.HasSuffix(k, ".$") {
			expr, _ := v.(string)
			expr = strings.TrimSpace(expr)
			switch {
			case strings.HasPrefix(expr, "$$"):
				if PathTouches(context, expr[1:], opaque) {
					return true
				}
			case isPath(expr):
				if PathTouches(input, expr, opaque) {
					return true
				}
			default:
				if contains(input) || contains(context) {
					return true
				}
			}
			continue
		}
		if sub, ok := v.(map[string]any); ok && objectTouches(sub, input, context, opaque, contains) {
			return true
		}
	}
	return false
}

// InputPathOf is the state's InputPath ("$" when absent or null).
func (st *State) InputPathOf() string { p, _ := pathField(st.InputPath); return orRoot(p) }

// ResultPathOf is the state's ResultPath ("$" when absent, "" when null).
func (st *State) ResultPathOf() string { p, _ := pathField(st.ResultPath); return p }

// OutputPathOf is the state's OutputPath ("$" when absent or null).
func (st *State) OutputPathOf() string { p, _ := pathField(st.OutputPath); return orRoot(p) }

func orRoot(p string) string {
	if p == "" {
		return "$"
	}
	return p
}
