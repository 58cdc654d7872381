package asl

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

func decode(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestGetAndSet(t *testing.T) {
	in := decode(t, `{"order": {"items": [{"sku": "a"}, {"sku": "b"}], "odd key": 1}, "n": 2}`)
	for path, want := range map[string]any{
		"$": in, "$.n": 2.0, "$.order.items[1].sku": "b", "$.order['odd key']": 1.0,
	} {
		got, err := Get(in, path)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Get(%s) = %v, %v; want %v", path, got, err, want)
		}
	}
	for _, path := range []string{"$.missing", "$.order.items[5]", "$.n.deeper", "$.order.items.sku"} {
		if _, err := Get(in, path); !errors.Is(err, ErrPath) {
			t.Errorf("Get(%s): %v, want ErrPath", path, err)
		}
	}
	if _, err := Get(in, "$..sku"); err == nil {
		t.Error("a recursive descent path was accepted")
	}
	out, err := Set(in, "$.result.status", "ok")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := Get(out, "$.result.status"); got != "ok" {
		t.Fatalf("after Set: %v", out)
	}
	if _, err := Get(in, "$.result"); err == nil {
		t.Fatal("Set modified its input")
	}
	if out, _ := Set(in, "$", "whole"); out != "whole" {
		t.Fatalf("Set($) = %v", out)
	}
	if _, err := Set(in, "$.n.x", 1); !errors.Is(err, ErrPath) {
		t.Fatalf("Set into a number: %v", err)
	}
}

func TestResolveParametersAndIntrinsics(t *testing.T) {
	in := decode(t, `{"id": 7, "name": "Ada", "doc": "{\"a\":[1,2]}", "tags": ["x"]}`)
	ctx := decode(t, `{"Execution": {"Id": "exec-1"}, "Map": {"Item": {"Value": 3}}}`)
	tmpl := json.RawMessage(`{
	  "fixed": {"keep": true},
	  "id.$": "$.id",
	  "exec.$": "$$.Execution.Id",
	  "greeting.$": "States.Format('hello {}, order {} (it\\'s {})', $.name, $.id, 'fine')",
	  "braces.$": "States.Format('\\{\\} {}', $.id)",
	  "parsed.$": "States.StringToJson($.doc)",
	  "text.$": "States.JsonToString($.tags)",
	  "list.$": "States.Array($.id, 'two', States.Array(3))",
	  "nested": {"item.$": "$$.Map.Item.Value"}
	}`)
	got, err := Resolve(tmpl, in, ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := decode(t, `{"fixed": {"keep": true}, "id": 7, "exec": "exec-1", "greeting": "hello Ada, order 7 (it's fine)", "braces": "{} 7",
	  "parsed": {"a": [1, 2]}, "text": "[\"x\"]", "list": [7, "two", [3]], "nested": {"item": 3}}`)
	if !reflect.DeepEqual(got, want) {
		gj, _ := json.Marshal(got)
		t.Fatalf("Resolve = %s", gj)
	}
	for _, bad := range []string{
		`{"x.$": "$.missing"}`, `{"x.$": "States.Format('{} {}', $.id)"}`, `{"x.$": "States.StringToJson($.id)"}`,
		`{"x.$": "States.Hash($.id)"}`, `{"x.$": "States.Format('unclosed)"}`,
	} {
		if _, err := Resolve(json.RawMessage(bad), in, ctx); err == nil {
			t.Errorf("Resolve(%s) succeeded", bad)
		}
	}
}
