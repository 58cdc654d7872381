package runtimes_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/node/runtimeapi"
	"github.com/baton-faas/baton/internal/workerapi"
)

// tableInvoker answers baton.invoke calls from a fixed table of callees.
type tableInvoker struct{}

func (tableInvoker) Invoke(_ context.Context, fn string, payload []byte) (runtimeapi.InvokeResult, error) {
	switch fn {
	case "echo":
		return runtimeapi.InvokeResult{Payload: payload}, nil
	case "raw":
		return runtimeapi.InvokeResult{Payload: []byte{0, 255, 7}}, nil
	case "fails":
		return runtimeapi.InvokeResult{Error: &workerapi.FunctionError{Type: "ValueError", Message: "no"}}, nil
	}
	return runtimeapi.InvokeResult{}, fmt.Errorf("function %q: %w", fn, errdefs.New(errdefs.NotFound, "function_not_found", "function not found"))
}

// The invoke modules, run by the real runtime clients against a real
// Runtime API endpoint: payloads of each kind, decoded results, and
// errors raised with their kind.
func TestInvokeModules(t *testing.T) {
	want := `{"echo":{"a":[1,null,true]},"str":"h\u00e9llo","bytes":{"raw":1},"raw":[0,255,7],"big":true,` +
		`"fails":[200,"ValueError",true],"missing":[404,"function_not_found",false],"badName":[400,"invalid_name",false]}`
	for _, c := range []struct{ interp, sub string }{{"python3", "python"}, {"node", "node"}} {
		t.Run(c.interp, func(t *testing.T) {
			s, addr := serveEndpoint(t, runtimeapi.Options{Invoke: tableInvoker{}})
			got := runFunction(t, s, addr, c.interp, c.sub, "invokefn.handler")
			var g, w any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatalf("response %s: %v", got, err)
			}
			_ = json.Unmarshal([]byte(want), &w)
			gj, _ := json.Marshal(g)
			wj, _ := json.Marshal(w)
			if string(gj) != string(wj) {
				t.Errorf("response\n got %s\nwant %s", gj, wj)
			}
		})
	}
}
