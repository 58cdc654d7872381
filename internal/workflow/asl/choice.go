package asl

import (
	"encoding/json"
	"slices"
	"strings"
)

// comparisons are the ASL comparison operators with the JSON type of
// their operand ("path" for the *Path forms, which name another field of
// the input).
var comparisons = map[string]string{
	"StringEquals": "string", "StringLessThan": "string", "StringGreaterThan": "string",
	"StringLessThanEquals": "string", "StringGreaterThanEquals": "string", "StringMatches": "string",
	"NumericEquals": "number", "NumericLessThan": "number", "NumericGreaterThan": "number",
	"NumericLessThanEquals": "number", "NumericGreaterThanEquals": "number",
	"BooleanEquals":   "boolean",
	"TimestampEquals": "string", "TimestampLessThan": "string", "TimestampGreaterThan": "string",
	"TimestampLessThanEquals": "string", "TimestampGreaterThanEquals": "string",
	"IsNull": "boolean", "IsPresent": "boolean", "IsNumeric": "boolean", "IsString": "boolean",
	"IsBoolean": "boolean", "IsTimestamp": "boolean",
}

func init() {
	for op := range comparisons {
		if !strings.HasPrefix(op, "Is") && op != "StringMatches" {
			comparisons[op+"Path"] = "path"
		}
	}
}

// decodeRule reads one choice rule; top says it is a direct entry of
// Choices (it needs Next; nested ones must not have it).
func decodeRule(raw json.RawMessage, at string, top bool) (ChoiceRule, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return ChoiceRule{}, invalid("%s: not a JSON object: %v", at, err)
	}
	var r ChoiceRule
	if v, ok := fields["Next"]; ok {
		if !top {
			return r, invalid("%s: Next is allowed only on a top-level choice rule", at)
		}
		if err := json.Unmarshal(v, &r.Next); err != nil || r.Next == "" {
			return r, invalid("%s: Next must name a state", at)
		}
		delete(fields, "Next")
	} else if top {
		return r, invalid("%s: Next is missing", at)
	}
	delete(fields, "Comment")
	switch {
	case fields["And"] != nil || fields["Or"] != nil:
		name := "And"
		if fields["Or"] != nil {
			name = "Or"
		}
		if len(fields) != 1 {
			return r, invalid("%s: %s must stand alone in its rule (found %s)", at, name, keys(fields))
		}
		var subs []json.RawMessage
		if err := json.Unmarshal(fields[name], &subs); err != nil || len(subs) == 0 {
			return r, invalid("%s: %s must be a non-empty list of rules", at, name)
		}
		for i, s := range subs {
			sub, err := decodeRule(s, at+"."+name+"["+itoa(i)+"]", false)
			if err != nil {
				return r, err
			}
			if name == "And" {
				r.And = append(r.And, sub)
			} else {
				r.Or = append(r.Or, sub)
			}
		}
		return r, nil
	case fields["Not"] != nil:
		if len(fields) != 1 {
			return r, invalid("%s: Not must stand alone in its rule (found %s)", at, keys(fields))
		}
		sub, err := decodeRule(fields["Not"], at+".Not", false)
		if err != nil {
			return r, err
		}
		r.Not = &sub
		return r, nil
	}
	if err := json.Unmarshal(fields["Variable"], &r.Variable); err != nil || !validPath(r.Variable) {
		return r, invalid("%s: Variable must be a path starting with $", at)
	}
	delete(fields, "Variable")
	if len(fields) != 1 {
		return r, invalid("%s: want exactly one comparison operator besides Variable (found %s)", at, keys(fields))
	}
	for op, v := range fields {
		want, ok := comparisons[op]
		if !ok {
			return r, invalid("%s: comparison operator %q is not supported", at, op)
		}
		if !hasType(v, want) {
			return r, invalid("%s: %s needs a %s operand", at, op, want)
		}
		r.Operator, r.Value = op, v
	}
	return r, nil
}

func hasType(v json.RawMessage, want string) bool {
	var x any
	if json.Unmarshal(v, &x) != nil {
		return false
	}
	switch want {
	case "string":
		_, ok := x.(string)
		return ok
	case "number":
		_, ok := x.(float64)
		return ok
	case "boolean":
		_, ok := x.(bool)
		return ok
	case "path":
		s, ok := x.(string)
		return ok && validPath(s)
	}
	return false
}

// validPath says whether p is a reference path Get and Set can follow:
// definitions are checked with it, so that a path that deploys runs.
func validPath(p string) bool {
	_, err := parsePath(p)
	return err == nil
}

func isPath(p string) bool {
	return p == "$" || strings.HasPrefix(p, "$.") || strings.HasPrefix(p, "$[")
}

func keys(m map[string]json.RawMessage) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return strings.Join(ks, ", ")
}
