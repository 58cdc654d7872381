package asl

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestInputAndOutputProcessing(t *testing.T) {
	def, err := Parse([]byte(`{"StartAt": "T", "States": {
	  "T": {"Type": "Task", "Resource": "f", "InputPath": "$.order", "Parameters": {"id.$": "$.id", "run.$": "$$.Execution.Id"},
	        "ResultSelector": {"total.$": "$.sum"}, "ResultPath": "$.priced", "OutputPath": "$.priced", "Next": "U"},
	  "U": {"Type": "Task", "Resource": "f", "InputPath": null, "ResultPath": null, "Next": "V"},
	  "V": {"Type": "Pass", "OutputPath": null, "End": true}}}`))
	if err != nil {
		t.Fatal(err)
	}
	in := decode(t, `{"order": {"id": 7, "lines": 3}, "customer": "ada"}`)
	ctx := decode(t, `{"Execution": {"Id": "e1"}}`)
	st := def.States["T"]
	eff, err := st.EffectiveInput(in, ctx)
	if err != nil || !reflect.DeepEqual(eff, decode(t, `{"id": 7, "run": "e1"}`)) {
		t.Fatalf("effective input %v, %v", eff, err)
	}
	out, err := st.Output(in, decode(t, `{"sum": 42, "noise": true}`), ctx)
	if err != nil || !reflect.DeepEqual(out, decode(t, `{"total": 42}`)) {
		t.Fatalf("output %v, %v", out, err)
	}
	u := def.States["U"]
	if eff, _ := u.EffectiveInput(in, ctx); !reflect.DeepEqual(eff, map[string]any{}) {
		t.Errorf("InputPath null: %v", eff)
	}
	if out, _ := u.Output(in, "ignored", ctx); !reflect.DeepEqual(out, in) {
		t.Errorf("ResultPath null: %v", out)
	}
	if out, _ := def.States["V"].Output(in, in, ctx); !reflect.DeepEqual(out, map[string]any{}) {
		t.Errorf("OutputPath null: %v", out)
	}
	// Without ResultPath the result replaces the input.
	plain := &State{Type: "Task"}
	if out, _ := plain.Output(in, "r", ctx); out != "r" {
		t.Errorf("default ResultPath: %v", out)
	}
	c := Catcher{ErrorEquals: []string{ErrorAll}, Next: "x", ResultPath: json.RawMessage(`"$.error"`)}
	out, err = c.CatchOutput(in, "Boom", "it broke")
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := Get(out, "$.error.Error"); e != "Boom" {
		t.Errorf("catch output %v", out)
	}
	if _, err := st.EffectiveInput(decode(t, `{"nothing": 1}`), ctx); err == nil {
		t.Error("an InputPath that matches nothing was accepted")
	}
}
