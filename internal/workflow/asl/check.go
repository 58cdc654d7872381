package asl

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

func itoa(i int) string { return strconv.Itoa(i) }

// maxStateName is ASL's limit on a state's name.
const maxStateName = 80

// check enforces the rules a definition must meet to run: StartAt and
// every transition name a state of the same machine, every state is
// reachable, each state type has the fields it needs and no field it
// cannot use, paths are paths.
func (d *Definition) check(scope string) error {
	p := prefix(scope)
	if d.StartAt == "" {
		return invalid("%sStartAt is missing", p)
	}
	if len(d.States) == 0 {
		return invalid("%sStates is empty", p)
	}
	if _, ok := d.States[d.StartAt]; !ok {
		return invalid("%sStartAt %q names no state", p, d.StartAt)
	}
	if d.TimeoutSeconds < 0 {
		return invalid("%sTimeoutSeconds must not be negative", p)
	}
	names := make([]string, 0, len(d.States))
	for name := range d.States {
		names = append(names, name)
	}
	slices.Sort(names) // errors name the first offender, the same every time
	for _, name := range names {
		if name == "" || len(name) > maxStateName {
			return invalid("%sstate names must be 1 to %d characters (%q)", p, maxStateName, name)
		}
		if err := d.checkState(scope, name, d.States[name]); err != nil {
			return err
		}
	}
	// Every state reachable from StartAt, as ASL requires.
	seen := map[string]bool{}
	queue := []string{d.StartAt}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		if seen[n] {
			continue
		}
		seen[n] = true
		queue = append(queue, d.States[n].transitions()...)
	}
	for _, name := range names {
		if !seen[name] {
			return invalid("%s: is not reachable from StartAt %q", where(scope, name), d.StartAt)
		}
	}
	return nil
}

// transitions are the states st may go to.
func (st *State) transitions() []string {
	var out []string
	if st.Next != "" {
		out = append(out, st.Next)
	}
	if st.Default != "" {
		out = append(out, st.Default)
	}
	for _, r := range st.Choices {
		out = append(out, r.Next)
	}
	for _, c := range st.Catch {
		out = append(out, c.Next)
	}
	return out
}

func (d *Definition) checkState(scope, name string, st *State) error {
	at := where(scope, name)
	exists := func(field, target string) error {
		if _, ok := d.States[target]; !ok {
			return invalid("%s: %s %q names no state", at, field, target)
		}
		return nil
	}
	switch st.Type {
	case "Choice", "Succeed", "Fail":
		// Terminal by nature, or transitions through Choices/Default.
	default:
		if (st.Next == "") == !st.End {
			return invalid("%s: exactly one of Next and End must be set", at)
		}
		if st.Next != "" {
			if err := exists("Next", st.Next); err != nil {
				return err
			}
		}
	}
	for _, f := range []struct {
		name string
		v    json.RawMessage
	}{{"InputPath", st.InputPath}, {"OutputPath", st.OutputPath}, {"ResultPath", st.ResultPath}} {
		if err := checkPathField(f.v); err != nil {
			return invalid("%s: %s %v", at, f.name, err)
		}
	}
	for _, f := range []struct {
		name string
		v    json.RawMessage
	}{{"Parameters", st.Parameters}, {"ResultSelector", st.ResultSelector}, {"ItemSelector", st.ItemSelector}} {
		if len(f.v) == 0 {
			continue
		}
		if err := checkTemplate(f.v); err != nil {
			return invalid("%s: %s: %v", at, f.name, err)
		}
	}
	if err := checkRetry(st.Retry); err != nil {
		return invalid("%s: %v", at, err)
	}
	for i, c := range st.Catch {
		if err := checkErrorNames(c.ErrorEquals, i == len(st.Catch)-1); err != nil {
			return invalid("%s: Catch[%d]: %v", at, i, err)
		}
		if err := exists(fmt.Sprintf("Catch[%d].Next", i), c.Next); err != nil {
			return err
		}
		if err := checkPathField(c.ResultPath); err != nil {
			return invalid("%s: Catch[%d].ResultPath %v", at, i, err)
		}
	}
	switch st.Type {
	case "Task":
		if st.Resource == "" {
			return invalid("%s: Resource is missing (the function to run)", at)
		}
		if _, err := FunctionOf(st.Resource); err != nil {
			return invalid("%s: Resource: %v", at, err)
		}
		if st.TimeoutSeconds < 0 {
			return invalid("%s: TimeoutSeconds must not be negative", at)
		}
	case "Choice":
		if len(st.Choices) == 0 {
			return invalid("%s: Choices is missing or empty", at)
		}
		for i, r := range st.Choices {
			if err := exists(fmt.Sprintf("Choices[%d].Next", i), r.Next); err != nil {
				return err
			}
		}
		if st.Default != "" {
			if err := exists("Default", st.Default); err != nil {
				return err
			}
		}
	case "Parallel":
		if len(st.Branches) == 0 {
			return invalid("%s: Branches is missing or empty", at)
		}
		for i, b := range st.Branches {
			if err := b.check(fmt.Sprintf("%s branch %d", at, i)); err != nil {
				return err
			}
		}
	case "Map":
		proc := st.ItemProcessor
		if proc == nil {
			proc = st.Iterator
		} else if st.Iterator != nil {
			return invalid("%s: set ItemProcessor or Iterator, not both", at)
		}
		if proc == nil {
			return invalid("%s: ItemProcessor (or Iterator) is missing", at)
		}
		if len(st.ItemSelector) > 0 && len(st.Parameters) > 0 {
			return invalid("%s: set ItemSelector or Parameters, not both", at)
		}
		if st.ItemsPath != "" && !validPath(st.ItemsPath) {
			return invalid("%s: ItemsPath %q is not a path starting with $", at, st.ItemsPath)
		}
		if st.MaxConcurrency < 0 {
			return invalid("%s: MaxConcurrency must not be negative", at)
		}
		if err := proc.check(at + " ItemProcessor"); err != nil {
			return err
		}
	case "Wait":
		set := 0
		if st.Seconds != nil {
			set++
			if *st.Seconds < 0 {
				return invalid("%s: Seconds must not be negative", at)
			}
		}
		if st.Timestamp != "" {
			set++
			if _, err := time.Parse(time.RFC3339, st.Timestamp); err != nil {
				return invalid("%s: Timestamp %q is not an RFC 3339 time", at, st.Timestamp)
			}
		}
		for _, p := range []string{st.SecondsPath, st.TimestampPath} {
			if p != "" {
				set++
				if !validPath(p) {
					return invalid("%s: %q is not a path starting with $", at, p)
				}
			}
		}
		if set != 1 {
			return invalid("%s: exactly one of Seconds, Timestamp, SecondsPath and TimestampPath must be set", at)
		}
	}
	return nil
}

// checkPathField accepts absent, null, or a path string.
func checkPathField(v json.RawMessage) error {
	if len(v) == 0 || string(v) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil || !validPath(s) {
		return fmt.Errorf("must be null or a path starting with $ (got %s)", v)
	}
	return nil
}

// intrinsics are the intrinsic functions Parameters may call.
var intrinsics = []string{"States.Format", "States.StringToJson", "States.JsonToString", "States.Array"}

// checkTemplate checks a Parameters or ResultSelector object: a key
// ending in ".$" takes a path (or "$$" context path) or an intrinsic call.
func checkTemplate(v json.RawMessage) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(v, &obj); err != nil {
		return fmt.Errorf("must be a JSON object")
	}
	for k, raw := range obj {
		if strings.HasSuffix(k, ".$") {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return fmt.Errorf("%q must be a string (a path or an intrinsic function)", k)
			}
			if err := checkDynamic(s); err != nil {
				return fmt.Errorf("%q: %v", k, err)
			}
			continue
		}
		if len(raw) > 0 && raw[0] == '{' {
			if err := checkTemplate(raw); err != nil {
				return fmt.Errorf("%s.%v", k, err)
			}
		}
	}
	return nil
}

func checkDynamic(s string) error {
	if validPath(s) || strings.HasPrefix(s, "$$") && validPath(s[1:]) {
		return nil
	}
	name, _, ok := strings.Cut(s, "(")
	if !ok || !strings.HasSuffix(s, ")") {
		return fmt.Errorf("%q is neither a path nor an intrinsic function call", s)
	}
	if !slices.Contains(intrinsics, strings.TrimSpace(name)) {
		return fmt.Errorf("intrinsic function %q is not supported (%s)", name, strings.Join(intrinsics, ", "))
	}
	return nil
}

func checkRetry(rs []Retrier) error {
	for i, r := range rs {
		if err := checkErrorNames(r.ErrorEquals, i == len(rs)-1); err != nil {
			return fmt.Errorf("Retry[%d]: %v", i, err)
		}
		if r.IntervalSeconds != nil && *r.IntervalSeconds < 1 {
			return fmt.Errorf("Retry[%d]: IntervalSeconds must be at least 1", i)
		}
		if r.MaxAttempts != nil && *r.MaxAttempts < 0 {
			return fmt.Errorf("Retry[%d]: MaxAttempts must not be negative", i)
		}
		if r.BackoffRate != nil && *r.BackoffRate < 1 {
			return fmt.Errorf("Retry[%d]: BackoffRate must be at least 1.0", i)
		}
		if r.MaxDelaySeconds != nil && *r.MaxDelaySeconds < 1 {
			return fmt.Errorf("Retry[%d]: MaxDelaySeconds must be at least 1", i)
		}
	}
	return nil
}

// checkErrorNames: a non-empty list; States.ALL only alone and only in
// the last entry.
func checkErrorNames(names []string, last bool) error {
	if len(names) == 0 {
		return fmt.Errorf("ErrorEquals is missing or empty")
	}
	if slices.Contains(names, ErrorAll) && (len(names) > 1 || !last) {
		return fmt.Errorf("%s must appear alone and in the last entry", ErrorAll)
	}
	for _, n := range names {
		if strings.HasPrefix(n, "States.") && !slices.Contains(knownErrors, n) {
			return fmt.Errorf("error name %q is not one ASL defines", n)
		}
	}
	return nil
}

var knownErrors = []string{ErrorAll, ErrorTimeout, ErrorTaskFailed, "States.Permissions", "States.ResultPathMatchFailure",
	"States.ParameterPathFailure", "States.BranchFailed", "States.NoChoiceMatched", "States.IntrinsicFailure",
	"States.HeartbeatTimeout", "States.ExceedToleratedFailureThreshold", "States.DataLimitExceeded", "States.Runtime"}

// FunctionOf returns the Baton function a Task's Resource names: the
// function's name, "function:NAME", or a Lambda ARN
// ("arn:aws:lambda:REGION:ACCOUNT:function:NAME").
func FunctionOf(resource string) (string, error) {
	name := resource
	if i := strings.LastIndex(resource, ":function:"); i >= 0 {
		name = resource[i+len(":function:"):]
	} else if rest, ok := strings.CutPrefix(resource, "function:"); ok {
		name = rest
	}
	if name == "" || strings.ContainsAny(name, ":/ ") {
		return "", fmt.Errorf("%q names no function (want NAME, function:NAME or a Lambda function ARN)", resource)
	}
	return name, nil
}
