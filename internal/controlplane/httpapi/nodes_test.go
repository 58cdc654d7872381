package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/internal/cluster/membership"
	"github.com/baton-faas/baton/internal/workerapi"
)

type fakeNodes struct {
	nodes []membership.Node
	err   error
}

func (f fakeNodes) Nodes(context.Context) ([]membership.Node, error) { return f.nodes, f.err }

func TestListNodes(t *testing.T) {
	beat := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	nodes := fakeNodes{nodes: []membership.Node{
		{ID: "c1", Roles: []membership.Role{membership.RoleController}, Address: "10.0.0.1:8080", State: membership.StateReady, Heartbeat: beat},
		{ID: "w1", Roles: []membership.Role{membership.RoleWorker}, Address: "10.0.0.2:7000", State: membership.StateDraining, Heartbeat: beat,
			Load: membership.Load{Capacity: workerapi.Resources{MemoryMB: 8192, MilliCPUs: 4000}, Reserved: workerapi.Resources{MemoryMB: 256},
				Instances: 2, Sandboxes: 1}},
	}}
	s := newTestServer(t, Options{Token: "s3cret", Nodes: nodes})
	if w := serve(s, http.MethodGet, "/v1/nodes", "", nil); w.Code != http.StatusUnauthorized {
		t.Fatalf("without the token: HTTP %d, want 401", w.Code)
	}
	w := serve(s, http.MethodGet, "/v1/nodes", "", map[string]string{"Authorization": "Bearer s3cret"})
	if w.Code != http.StatusOK {
		t.Fatalf("HTTP %d: %s", w.Code, w.Body)
	}
	var got apiv1.NodeList
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := apiv1.NodeList{Nodes: []apiv1.Node{
		{ID: "c1", Roles: []string{"controller"}, Address: "10.0.0.1:8080", State: "ready", LastHeartbeat: beat},
		{ID: "w1", Roles: []string{"worker"}, Address: "10.0.0.2:7000", State: "draining", LastHeartbeat: beat,
			Capacity: apiv1.Resources{MemoryMB: 8192, MilliCPUs: 4000}, Reserved: apiv1.Resources{MemoryMB: 256}, Instances: 2, Sandboxes: 1},
	}}
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if string(gotJSON) != string(wantJSON) {
		t.Fatalf("body\n%s\nwant\n%s", gotJSON, wantJSON)
	}
}

func TestListNodesErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		nodes  Nodes
		status int
		code   string
	}{
		{"no membership", nil, http.StatusNotImplemented, apiv1.CodeNoMembership},
		{"NATS unreachable", fakeNodes{err: errors.New("nats: timeout")}, http.StatusServiceUnavailable, apiv1.CodeMembershipUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := serve(newTestServer(t, Options{Nodes: tc.nodes}), http.MethodGet, "/v1/nodes", "", nil)
			if w.Code != tc.status {
				t.Fatalf("HTTP %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if e := decodeError(t, w); e.Code != tc.code {
				t.Fatalf("code %q, want %q", e.Code, tc.code)
			}
		})
	}
}
