package asl

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestChoiceRules(t *testing.T) {
	in := decode(t, `{"s": "banana", "n": 10, "b": true, "nil": null, "t": "2026-12-06T10:00:00Z", "t2": "2026-12-07T00:00:00+01:00",
	  "lim": 20, "file": "report*.csv", "name": "report-2026.csv"}`)
	for _, tc := range []struct {
		rule string
		want bool
	}{
		{`{"Variable": "$.s", "StringEquals": "banana"}`, true},
		{`{"Variable": "$.s", "StringLessThan": "cherry"}`, true},
		{`{"Variable": "$.s", "StringGreaterThanEquals": "banana"}`, true},
		{`{"Variable": "$.name", "StringMatches": "report-*.csv"}`, true},
		{`{"Variable": "$.file", "StringMatches": "report\\*.csv"}`, true},
		{`{"Variable": "$.name", "StringMatches": "report\\*.csv"}`, false},
		{`{"Variable": "$.n", "NumericGreaterThan": 5}`, true},
		{`{"Variable": "$.n", "NumericLessThanPath": "$.lim"}`, true},
		{`{"Variable": "$.n", "NumericEqualsPath": "$.missing"}`, false},
		{`{"Variable": "$.s", "NumericEquals": 10}`, false},
		{`{"Variable": "$.b", "BooleanEquals": true}`, true},
		{`{"Variable": "$.t", "TimestampLessThanPath": "$.t2"}`, true},
		{`{"Variable": "$.t", "TimestampEquals": "2026-12-06T11:00:00+01:00"}`, true},
		{`{"Variable": "$.nil", "IsNull": true}`, true},
		{`{"Variable": "$.missing", "IsPresent": false}`, true},
		{`{"Variable": "$.missing", "StringEquals": "x"}`, false},
		{`{"Variable": "$.n", "IsNumeric": true}`, true},
		{`{"Variable": "$.t", "IsTimestamp": true}`, true},
		{`{"Variable": "$.s", "IsTimestamp": true}`, false},
		{`{"And": [{"Variable": "$.n", "NumericEquals": 10}, {"Variable": "$.b", "BooleanEquals": true}]}`, true},
		{`{"Or": [{"Variable": "$.n", "NumericEquals": 11}, {"Not": {"Variable": "$.b", "BooleanEquals": false}}]}`, true},
		{`{"Not": {"Variable": "$.s", "StringEquals": "banana"}}`, false},
	} {
		r, err := decodeRule(json.RawMessage(tc.rule), "test", false)
		if err != nil {
			t.Fatalf("%s: %v", tc.rule, err)
		}
		if got, err := r.Matches(in); err != nil || got != tc.want {
			t.Errorf("%s: %v, %v; want %v", tc.rule, got, err, tc.want)
		}
	}
}

func TestChooseFallsToDefaultOrFails(t *testing.T) {
	def, err := Parse([]byte(`{"StartAt": "C", "States": {
	  "C": {"Type": "Choice", "Choices": [{"Variable": "$.n", "NumericGreaterThan": 1, "Next": "Big"}], "Default": "Small"},
	  "D": {"Type": "Choice", "Choices": [{"Variable": "$.n", "NumericGreaterThan": 1, "Next": "Big"}]},
	  "Big": {"Type": "Pass", "Next": "D"}, "Small": {"Type": "Succeed"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if next, err := def.States["C"].Choose(decode(t, `{"n": 5}`)); err != nil || next != "Big" {
		t.Errorf("n=5: %q, %v", next, err)
	}
	if next, err := def.States["C"].Choose(decode(t, `{"n": 0}`)); err != nil || next != "Small" {
		t.Errorf("n=0: %q, %v", next, err)
	}
	if _, err := def.States["D"].Choose(decode(t, `{"n": 0}`)); !errors.Is(err, ErrNoChoiceMatched) {
		t.Errorf("no match without Default: %v", err)
	}
}
