// Package asl parses and checks workflow definitions written in Amazon
// States Language (JSON, or YAML converted to JSON): the states Baton runs
// (Task, Choice, Parallel, Map, Pass, Wait, Succeed, Fail) and their
// fields. Anything else is refused with the state and the field named,
// so that a definition that deploys is one the engine can run.
package asl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// ErrInvalid marks every definition error.
var ErrInvalid = errors.New("invalid workflow definition")

// Definition is a state machine (also a Parallel branch or a Map's
// item processor).
type Definition struct {
	Comment        string            `json:"Comment,omitempty"`
	StartAt        string            `json:"StartAt"`
	States         map[string]*State `json:"States"`
	TimeoutSeconds int               `json:"TimeoutSeconds,omitempty"`
}

// State is one state; which fields mean something depends on Type.
type State struct {
	Type    string `json:"Type"`
	Comment string `json:"Comment,omitempty"`
	Next    string `json:"Next,omitempty"`
	End     bool   `json:"End,omitempty"`

	// Input and output processing. A JSON null path (InputPath: null)
	// is kept as the literal "null" so that it differs from absent.
	InputPath      json.RawMessage `json:"InputPath,omitempty"`
	OutputPath     json.RawMessage `json:"OutputPath,omitempty"`
	ResultPath     json.RawMessage `json:"ResultPath,omitempty"`
	Parameters     json.RawMessage `json:"Parameters,omitempty"`
	ResultSelector json.RawMessage `json:"ResultSelector,omitempty"`

	// Task.
	Resource       string    `json:"Resource,omitempty"`
	TimeoutSeconds int       `json:"TimeoutSeconds,omitempty"`
	Retry          []Retrier `json:"Retry,omitempty"`
	Catch          []Catcher `json:"Catch,omitempty"`

	// Choice.
	Choices []ChoiceRule `json:"Choices,omitempty"`
	Default string       `json:"Default,omitempty"`

	// Parallel and Map.
	Branches       []*Definition `json:"Branches,omitempty"`
	Iterator       *Definition   `json:"Iterator,omitempty"`
	ItemProcessor  *Definition   `json:"ItemProcessor,omitempty"`
	ItemsPath      string        `json:"ItemsPath,omitempty"`
	MaxConcurrency int           `json:"MaxConcurrency,omitempty"`

	// ItemSelector is ASL's current name for a Map's Parameters (which
	// build each item's input).
	ItemSelector json.RawMessage `json:"ItemSelector,omitempty"`

	// Pass.
	Result json.RawMessage `json:"Result,omitempty"`

	// Wait.
	Seconds       *float64 `json:"Seconds,omitempty"`
	Timestamp     string   `json:"Timestamp,omitempty"`
	SecondsPath   string   `json:"SecondsPath,omitempty"`
	TimestampPath string   `json:"TimestampPath,omitempty"`

	// Fail.
	Error string `json:"Error,omitempty"`
	Cause string `json:"Cause,omitempty"`
}

// Retrier is one entry of a Task's Retry.
type Retrier struct {
	ErrorEquals     []string `json:"ErrorEquals"`
	IntervalSeconds *int     `json:"IntervalSeconds,omitempty"`
	MaxAttempts     *int     `json:"MaxAttempts,omitempty"`
	BackoffRate     *float64 `json:"BackoffRate,omitempty"`
	MaxDelaySeconds *int     `json:"MaxDelaySeconds,omitempty"`
}

// Catcher is one entry of a Task's (or Parallel's, Map's) Catch.
type Catcher struct {
	ErrorEquals []string        `json:"ErrorEquals"`
	Next        string          `json:"Next"`
	ResultPath  json.RawMessage `json:"ResultPath,omitempty"`
}

// ChoiceRule is a comparison, or And/Or/Not of rules; Next is set only on
// a top-level rule.
type ChoiceRule struct {
	Variable string          `json:"Variable,omitempty"`
	Operator string          `json:"-"` // e.g. "StringEquals", "NumericLessThanPath", "IsPresent"
	Value    json.RawMessage `json:"-"`
	And      []ChoiceRule    `json:"And,omitempty"`
	Or       []ChoiceRule    `json:"Or,omitempty"`
	Not      *ChoiceRule     `json:"Not,omitempty"`
	Next     string          `json:"Next,omitempty"`
}

// Error names ASL defines; a Retry or Catch may also name any error type
// a function raises.
const (
	ErrorAll        = "States.ALL"
	ErrorTimeout    = "States.Timeout"
	ErrorTaskFailed = "States.TaskFailed"
)

// Parse reads a definition (JSON, or YAML when it does not start with
// '{') and checks it.
func Parse(src []byte) (*Definition, error) {
	data := bytes.TrimSpace(src)
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: the definition is empty", ErrInvalid)
	}
	if data[0] != '{' {
		j, err := yaml.YAMLToJSON(data)
		if err != nil {
			return nil, fmt.Errorf("%w: not JSON, and not YAML: %v", ErrInvalid, err)
		}
		data = j
	}
	def, err := decodeDefinition(data, "")
	if err != nil {
		return nil, err
	}
	if err := def.check(""); err != nil {
		return nil, err
	}
	return def, nil
}

// where prefixes an error with the branch it is in ("" at the top).
func where(scope, state string) string {
	if scope == "" {
		return fmt.Sprintf("state %q", state)
	}
	return fmt.Sprintf("%s: state %q", scope, state)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

var definitionFields = []string{"Comment", "StartAt", "States", "TimeoutSeconds", "Version"}

// stateFields are the fields each state type allows.
var stateFields = map[string][]string{
	"Task": {"Type", "Comment", "Next", "End", "InputPath", "OutputPath", "ResultPath", "Parameters", "ResultSelector",
		"Resource", "TimeoutSeconds", "Retry", "Catch"},
	"Choice":   {"Type", "Comment", "InputPath", "OutputPath", "Choices", "Default"},
	"Parallel": {"Type", "Comment", "Next", "End", "InputPath", "OutputPath", "ResultPath", "Parameters", "ResultSelector", "Branches", "Retry", "Catch"},
	"Map": {"Type", "Comment", "Next", "End", "InputPath", "OutputPath", "ResultPath", "Parameters", "ResultSelector",
		"Iterator", "ItemProcessor", "ItemSelector", "ItemsPath", "MaxConcurrency", "Retry", "Catch"},
	"Pass":    {"Type", "Comment", "Next", "End", "InputPath", "OutputPath", "ResultPath", "Parameters", "Result"},
	"Wait":    {"Type", "Comment", "Next", "End", "InputPath", "OutputPath", "Seconds", "Timestamp", "SecondsPath", "TimestampPath"},
	"Succeed": {"Type", "Comment", "InputPath", "OutputPath"},
	"Fail":    {"Type", "Comment", "Error", "Cause"},
}

func decodeDefinition(data []byte, scope string) (*Definition, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, invalid("%snot a JSON object: %v", prefix(scope), err)
	}
	if err := onlyFields(fields, definitionFields, strings.TrimSuffix(prefix(scope), ": ")); err != nil {
		return nil, err
	}
	def := &Definition{States: map[string]*State{}}
	for _, f := range []struct {
		name string
		into any
	}{{"Comment", &def.Comment}, {"StartAt", &def.StartAt}, {"TimeoutSeconds", &def.TimeoutSeconds}} {
		if raw, ok := fields[f.name]; ok {
			if err := json.Unmarshal(raw, f.into); err != nil {
				return nil, invalid("%s%s: %v", prefix(scope), f.name, err)
			}
		}
	}
	var states map[string]json.RawMessage
	if raw, ok := fields["States"]; !ok {
		return nil, invalid("%sStates is missing", prefix(scope))
	} else if err := json.Unmarshal(raw, &states); err != nil {
		return nil, invalid("%sStates must be an object of states: %v", prefix(scope), err)
	}
	for name, raw := range states {
		st, err := decodeState(raw, scope, name)
		if err != nil {
			return nil, err
		}
		def.States[name] = st
	}
	return def, nil
}

func prefix(scope string) string {
	if scope == "" {
		return ""
	}
	return scope + ": "
}

func onlyFields(fields map[string]json.RawMessage, allowed []string, what string) error {
	var extra []string
	for k := range fields {
		if !slices.Contains(allowed, k) {
			extra = append(extra, k)
		}
	}
	if len(extra) == 0 {
		return nil
	}
	sort.Strings(extra)
	if what == "" {
		what = "the definition"
	}
	return invalid("%s: field %q is not supported (allowed: %s)", what, extra[0], strings.Join(allowed, ", "))
}

func decodeState(raw json.RawMessage, scope, name string) (*State, error) {
	at := where(scope, name)
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, invalid("%s: not a JSON object: %v", at, err)
	}
	var typ string
	if err := json.Unmarshal(fields["Type"], &typ); err != nil || typ == "" {
		return nil, invalid("%s: Type is missing", at)
	}
	allowed, ok := stateFields[typ]
	if !ok {
		return nil, invalid("%s: Type %q is not supported (Task, Choice, Parallel, Map, Pass, Wait, Succeed, Fail)", at, typ)
	}
	if err := onlyFields(fields, allowed, at+" ("+typ+")"); err != nil {
		return nil, err
	}
	// Branches, Iterator and ItemProcessor are definitions of their own,
	// checked field by field like the top level.
	nested := map[string]json.RawMessage{}
	for _, k := range []string{"Branches", "Iterator", "ItemProcessor", "Choices"} {
		if v, ok := fields[k]; ok {
			nested[k] = v
			delete(fields, k)
		}
	}
	rest, _ := json.Marshal(fields)
	st := &State{}
	dec := json.NewDecoder(bytes.NewReader(rest))
	dec.DisallowUnknownFields() // also inside Retry and Catch entries
	if err := dec.Decode(st); err != nil {
		return nil, invalid("%s: %v", at, err)
	}
	if raw, ok := nested["Branches"]; ok {
		var branches []json.RawMessage
		if err := json.Unmarshal(raw, &branches); err != nil {
			return nil, invalid("%s: Branches must be a list of state machines: %v", at, err)
		}
		for i, b := range branches {
			def, err := decodeDefinition(b, fmt.Sprintf("%s branch %d", at, i))
			if err != nil {
				return nil, err
			}
			st.Branches = append(st.Branches, def)
		}
	}
	for _, k := range []string{"Iterator", "ItemProcessor"} {
		if raw, ok := nested[k]; ok {
			def, err := decodeDefinition(raw, at+" "+k)
			if err != nil {
				return nil, err
			}
			if k == "Iterator" {
				st.Iterator = def
			} else {
				st.ItemProcessor = def
			}
		}
	}
	if raw, ok := nested["Choices"]; ok {
		var rules []json.RawMessage
		if err := json.Unmarshal(raw, &rules); err != nil {
			return nil, invalid("%s: Choices must be a list of rules: %v", at, err)
		}
		for i, r := range rules {
			rule, err := decodeRule(r, fmt.Sprintf("%s: Choices[%d]", at, i), true)
			if err != nil {
				return nil, err
			}
			st.Choices = append(st.Choices, rule)
		}
	}
	return st, nil
}
