package asl

import (
	"errors"
	"strings"
	"testing"
)

const orders = `{
  "Comment": "an order",
  "StartAt": "Validate",
  "States": {
    "Validate": {"Type": "Task", "Resource": "validate", "TimeoutSeconds": 5,
      "Retry": [{"ErrorEquals": ["States.Timeout"], "IntervalSeconds": 1, "MaxAttempts": 2, "BackoffRate": 2.0, "MaxDelaySeconds": 10},
                {"ErrorEquals": ["States.ALL"]}],
      "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Failed", "ResultPath": "$.error"}],
      "ResultPath": "$.validation", "Next": "Route"},
    "Route": {"Type": "Choice", "Choices": [
        {"And": [{"Variable": "$.total", "NumericGreaterThan": 100}, {"Not": {"Variable": "$.vip", "BooleanEquals": true}}], "Next": "Review"},
        {"Variable": "$.country", "StringEqualsPath": "$.home", "Next": "Ship"}],
      "Default": "Ship"},
    "Review": {"Type": "Wait", "SecondsPath": "$.delay", "Next": "Ship"},
    "Ship": {"Type": "Parallel", "Branches": [
        {"StartAt": "Label", "States": {"Label": {"Type": "Task", "Resource": "function:label", "End": true}}},
        {"StartAt": "Notify", "States": {"Notify": {"Type": "Pass", "Result": {"ok": true}, "End": true}}}],
      "Next": "Items"},
    "Items": {"Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 4,
      "ItemProcessor": {"StartAt": "Pack", "States": {"Pack": {"Type": "Task", "Resource": "arn:aws:lambda:eu-west-1:123456789012:function:pack", "End": true}}},
      "Parameters": {"item.$": "$$.Map.Item.Value", "label.$": "States.Format('order {}', $.id)"},
      "Next": "Done"},
    "Done": {"Type": "Succeed"},
    "Failed": {"Type": "Fail", "Error": "OrderFailed", "Cause": "see the error"}
  }
}`

func TestParseAcceptsEveryStateType(t *testing.T) {
	def, err := Parse([]byte(orders))
	if err != nil {
		t.Fatal(err)
	}
	if def.StartAt != "Validate" || len(def.States) != 7 {
		t.Fatalf("parsed %+v", def)
	}
	route := def.States["Route"]
	if len(route.Choices) != 2 || len(route.Choices[0].And) != 2 || route.Choices[0].And[1].Not.Operator != "BooleanEquals" ||
		route.Choices[1].Operator != "StringEqualsPath" {
		t.Fatalf("choices %+v", route.Choices)
	}
	if fn, _ := FunctionOf(def.States["Items"].ItemProcessor.States["Pack"].Resource); fn != "pack" {
		t.Fatalf("Map's function %q", fn)
	}
}

func TestParseYAML(t *testing.T) {
	def, err := Parse([]byte("StartAt: Hello\nStates:\n  Hello:\n    Type: Task\n    Resource: hello\n    End: true\n"))
	if err != nil || def.States["Hello"].Resource != "hello" {
		t.Fatalf("%+v, %v", def, err)
	}
}

// Every refusal names the state and the field at fault.
func TestParseRefusesWithTheStateAndFieldNamed(t *testing.T) {
	edit := func(old, new string) string {
		if !strings.Contains(orders, old) {
			t.Fatalf("test edit %q does not apply", old)
		}
		return strings.Replace(orders, old, new, 1)
	}
	for _, tc := range []struct{ def, want string }{
		{``, "empty"},
		{`{"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "f", "End": true, "Heartbeat": 3}}}`, `state "A" (Task): field "Heartbeat"`},
		{`{"StartAt": "A", "States": {"A": {"Type": "Activity", "End": true}}}`, `state "A": Type "Activity"`},
		{`{"StartAt": "B", "States": {"A": {"Type": "Succeed"}}}`, `StartAt "B"`},
		{`{"StartAt": "A", "States": {"A": {"Type": "Succeed"}, "B": {"Type": "Succeed"}}}`, `state "B": is not reachable`},
		{`{"StartAt": "A", "States": {"A": {"Type": "Pass"}}}`, `state "A": exactly one of Next and End`},
		{`{"StartAt": "A", "States": {"A": {"Type": "Task", "End": true}}}`, `state "A": Resource is missing`},
		{`{"StartAt": "A", "States": {"A": {"Type": "Wait", "End": true}}}`, `state "A": exactly one of Seconds`},
		{`{"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "Z"}}}`, `state "A": Next "Z" names no state`},
		{`{"StartAt": "A", "Version": "1.0", "Extra": 1, "States": {"A": {"Type": "Succeed"}}}`, `field "Extra"`},
		{edit(`"IntervalSeconds": 1`, `"IntervalSeconds": 0`), `state "Validate": Retry[0]: IntervalSeconds`},
		{edit(`"BackoffRate": 2.0`, `"BackoffRate": 0.5`), `state "Validate": Retry[0]: BackoffRate`},
		{edit(`{"ErrorEquals": ["States.ALL"]}],`, `{"ErrorEquals": ["States.ALL", "Boom"]}],`), `state "Validate": Retry[1]: States.ALL`},
		{edit(`"MaxAttempts": 2,`, `"MaxAttempts": 2, "Jitter": "FULL",`), `state "Validate"`},
		{edit(`"ResultPath": "$.validation"`, `"ResultPath": "validation"`), `state "Validate": ResultPath`},
		{edit(`"ResultPath": "$.validation"`, `"ResultPath": "$..validation"`), `state "Validate": ResultPath`},
		{edit(`"label.$": "States.Format('order {}', $.id)"`, `"label.$": "$.id[x]"`), `state "Items": Parameters: "label.$"`},
		{edit(`"Parameters": {"item.$"`, `"ItemSelector": {}, "Parameters": {"item.$"`), `state "Items": set ItemSelector or Parameters`},
		{edit(`"NumericGreaterThan": 100`, `"NumericGreaterThan": "100"`), `state "Route": Choices[0].And[0]: NumericGreaterThan needs a number`},
		{edit(`"StringEqualsPath": "$.home"`, `"StringSimilar": "x"`), `state "Route": Choices[1]: comparison operator "StringSimilar"`},
		{edit(`"Default": "Ship"`, `"Default": "Nowhere"`), `state "Route": Default "Nowhere"`},
		{edit(`"Resource": "function:label"`, `"Resource": "function:"`), `state "Ship" branch 0: state "Label": Resource`},
		{edit(`"ItemsPath": "$.items"`, `"ItemsPath": "items"`), `state "Items": ItemsPath`},
		{edit(`States.Format('order {}', $.id)`, `States.Hash($.id)`), `state "Items": Parameters: "label.$": intrinsic function "States.Hash"`},
		{edit(`"Resource": "arn:aws:lambda:eu-west-1:123456789012:function:pack", "End": true`, `"Resource": "pack"`), `state "Items" ItemProcessor: state "Pack": exactly one of Next and End`},
	} {
		_, err := Parse([]byte(tc.def))
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error containing %q, got %v\n(definition %.80s)", tc.want, err, tc.def)
		}
	}
}
