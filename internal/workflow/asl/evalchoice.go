package asl

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrNoChoiceMatched is ASL's States.NoChoiceMatched: no rule matched and
// the Choice state has no Default.
var ErrNoChoiceMatched = errors.New("States.NoChoiceMatched")

// Choose returns the state a Choice state goes to for input.
func (st *State) Choose(input any) (string, error) {
	for i, r := range st.Choices {
		ok, err := r.Matches(input)
		if err != nil {
			return "", fmt.Errorf("Choices[%d]: %w", i, err)
		}
		if ok {
			return r.Next, nil
		}
	}
	if st.Default != "" {
		return st.Default, nil
	}
	return "", ErrNoChoiceMatched
}

// Matches evaluates the rule against input. A comparison whose Variable
// is absent from the input is false (IsPresent says so explicitly).
func (r ChoiceRule) Matches(input any) (bool, error) {
	switch {
	case len(r.And) > 0:
		for _, s := range r.And {
			if ok, err := s.Matches(input); err != nil || !ok {
				return false, err
			}
		}
		return true, nil
	case len(r.Or) > 0:
		for _, s := range r.Or {
			if ok, err := s.Matches(input); err != nil || ok {
				return ok, err
			}
		}
		return false, nil
	case r.Not != nil:
		ok, err := r.Not.Matches(input)
		return !ok && err == nil, err
	}
	v, err := Get(input, r.Variable)
	present := err == nil
	if err != nil && !errors.Is(err, ErrPath) {
		return false, err
	}
	var operand any
	if err := json.Unmarshal(r.Value, &operand); err != nil {
		return false, err
	}
	op := r.Operator
	if strings.HasPrefix(op, "Is") {
		want, _ := operand.(bool)
		var is bool
		switch op {
		case "IsPresent":
			is = present
		case "IsNull":
			is = present && v == nil
		case "IsNumeric":
			_, is = v.(float64)
		case "IsString":
			_, is = v.(string)
		case "IsBoolean":
			_, is = v.(bool)
		case "IsTimestamp":
			_, is = timestamp(v)
		}
		return is == want, nil
	}
	if !present {
		return false, nil
	}
	if base, ok := strings.CutSuffix(op, "Path"); ok {
		p, _ := operand.(string)
		if operand, err = Get(input, p); err != nil {
			if errors.Is(err, ErrPath) {
				return false, nil
			}
			return false, err
		}
		op = base
	}
	return compare(op, v, operand)
}

func compare(op string, v, operand any) (bool, error) {
	switch {
	case op == "StringMatches":
		s, ok1 := v.(string)
		pattern, ok2 := operand.(string)
		return ok1 && ok2 && wildcard(pattern, s), nil
	case strings.HasPrefix(op, "String"):
		a, ok1 := v.(string)
		b, ok2 := operand.(string)
		if !ok1 || !ok2 {
			return false, nil
		}
		return ordered(strings.TrimPrefix(op, "String"), strings.Compare(a, b)), nil
	case strings.HasPrefix(op, "Numeric"):
		a, ok1 := v.(float64)
		b, ok2 := operand.(float64)
		if !ok1 || !ok2 {
			return false, nil
		}
		c := 0
		if a < b {
			c = -1
		} else if a > b {
			c = 1
		}
		return ordered(strings.TrimPrefix(op, "Numeric"), c), nil
	case op == "BooleanEquals":
		a, ok1 := v.(bool)
		b, ok2 := operand.(bool)
		return ok1 && ok2 && a == b, nil
	case strings.HasPrefix(op, "Timestamp"):
		a, ok1 := timestamp(v)
		b, ok2 := timestamp(operand)
		if !ok1 || !ok2 {
			return false, nil
		}
		return ordered(strings.TrimPrefix(op, "Timestamp"), a.Compare(b)), nil
	}
	return false, fmt.Errorf("comparison operator %q is not supported", op)
}

// ordered applies Equals, LessThan, ... to a comparison's result.
func ordered(rel string, c int) bool {
	switch rel {
	case "Equals":
		return c == 0
	case "LessThan":
		return c < 0
	case "GreaterThan":
		return c > 0
	case "LessThanEquals":
		return c <= 0
	case "GreaterThanEquals":
		return c >= 0
	}
	return false
}

func timestamp(v any) (time.Time, bool) {
	s, ok := v.(string)
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil
}

// wildcard matches s against an ASL StringMatches pattern: * is any run
// of characters, \* a literal star, \\ a backslash.
func wildcard(pattern, s string) bool {
	var parts []string // literal pieces between unescaped stars
	var cur strings.Builder
	for i := 0; i < len(pattern); i++ {
		switch c := pattern[i]; {
		case c == '\\' && i+1 < len(pattern):
			i++
			cur.WriteByte(pattern[i])
		case c == '*':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	parts = append(parts, cur.String())
	if len(parts) == 1 {
		return s == parts[0]
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, mid := range parts[1 : len(parts)-1] {
		i := strings.Index(s, mid)
		if i < 0 {
			return false
		}
		s = s[i+len(mid):]
	}
	return strings.HasSuffix(s, last)
}
