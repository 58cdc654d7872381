package asl

import (
	"encoding/json"
	"fmt"
)

// pathField reads an InputPath/OutputPath/ResultPath: absent means "$",
// null means none (the caller decides what none is).
func pathField(raw json.RawMessage) (path string, isNull bool) {
	if len(raw) == 0 {
		return "$", false
	}
	if string(raw) == "null" {
		return "", true
	}
	_ = json.Unmarshal(raw, &path) // checked at Parse
	return path, false
}

// EffectiveInput is what a state works on: InputPath applied to the
// state's input (null: an empty object), then Parameters (or a Map's
// per-item Parameters, which the caller passes as context) resolved.
func (st *State) EffectiveInput(input, context any) (any, error) {
	v := input
	if p, isNull := pathField(st.InputPath); isNull {
		v = map[string]any{}
	} else if p != "$" {
		var err error
		if v, err = Get(input, p); err != nil {
			return nil, fmt.Errorf("InputPath: %w", err)
		}
	}
	if len(st.Parameters) > 0 && st.Type != "Map" {
		r, err := Resolve(st.Parameters, v, context)
		if err != nil {
			return nil, fmt.Errorf("Parameters: %w", err)
		}
		v = r
	}
	return v, nil
}

// Output is the state's output: ResultSelector applied to the result,
// placed into the state's raw input at ResultPath (null: the input
// passes through), then OutputPath (null: an empty object).
func (st *State) Output(input, result, context any) (any, error) {
	if len(st.ResultSelector) > 0 {
		r, err := Resolve(st.ResultSelector, result, context)
		if err != nil {
			return nil, fmt.Errorf("ResultSelector: %w", err)
		}
		result = r
	}
	return placeResult(st.ResultPath, st.OutputPath, input, result)
}

// CatchOutput is the output a Catch passes to its Next: the error
// object placed at the catcher's ResultPath (absent: replaces the input).
func (c Catcher) CatchOutput(input any, errorName, cause string) (any, error) {
	return placeResult(c.ResultPath, nil, input, map[string]any{"Error": errorName, "Cause": cause})
}

func placeResult(resultPath, outputPath json.RawMessage, input, result any) (any, error) {
	out := input
	if p, isNull := pathField(resultPath); !isNull {
		var err error
		if out, err = Set(input, p, result); err != nil {
			return nil, fmt.Errorf("ResultPath: %w", err)
		}
	}
	if p, isNull := pathField(outputPath); isNull {
		return map[string]any{}, nil
	} else if p != "$" {
		v, err := Get(out, p)
		if err != nil {
			return nil, fmt.Errorf("OutputPath: %w", err)
		}
		return v, nil
	}
	return out, nil
}
