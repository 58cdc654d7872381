package cli

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/internal/cluster/clustertest"
	"github.com/baton-faas/baton/internal/cluster/membership"
	"github.com/baton-faas/baton/internal/controlplane/httpapi"
	"github.com/baton-faas/baton/internal/workerapi"
)

// `baton nodes` through the real API on a real membership bucket.
func TestNodesCommand(t *testing.T) {
	s := clustertest.Server(t)
	_, js := clustertest.Connect(t, s)
	ctx := clustertest.Context(t)
	members, err := membership.Open(ctx, js, membership.Config{})
	if err != nil {
		t.Fatal(err)
	}
	self, err := members.Join(ctx, membership.Self{
		ID: "host-1", Roles: []membership.Role{membership.RoleController, membership.RoleWorker}, Address: "127.0.0.1:8080",
		Load: func(context.Context) membership.Load {
			return membership.Load{Capacity: workerapi.Resources{MemoryMB: 4096, MilliCPUs: 2000},
				Reserved: workerapi.Resources{MemoryMB: 512, MilliCPUs: 500}, Instances: 3, Sandboxes: 2}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	api := httptest.NewServer(httpapi.New(httpapi.Options{Metrics: http.NotFoundHandler(), Token: "tok", Nodes: members}))
	defer api.Close()

	out, _, err := runCLI(t, "nodes", "--server", api.URL, "--token", "tok")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ID") {
		t.Fatalf("table:\n%s", out)
	}
	for _, want := range []string{"host-1", "controller,worker", "127.0.0.1:8080", "ready", "512/4096 MB", "0.5/2.0", "s ago"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row %q lacks %q", lines[1], want)
		}
	}

	out, _, err = runCLI(t, "nodes", "--json", "--server", api.URL, "--token", "tok")
	if err != nil {
		t.Fatal(err)
	}
	var list apiv1.NodeList
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Nodes) != 1 {
		t.Fatalf("--json output %q: %v", out, err)
	}
	if n := list.Nodes[0]; n.ID != "host-1" || n.Instances != 3 || n.Sandboxes != 2 || n.LastHeartbeat.IsZero() || n.Started.IsZero() {
		t.Fatalf("node = %+v", n)
	}

	if _, _, err := runCLI(t, "nodes", "--server", api.URL, "--token", "wrong"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong token: err = %v", err)
	}
}

func TestNodesCommandWithoutMembership(t *testing.T) {
	api := httptest.NewServer(httpapi.New(httpapi.Options{Metrics: http.NotFoundHandler()}))
	defer api.Close()
	_, _, err := runCLI(t, "nodes", "--server", api.URL)
	if err == nil || !strings.Contains(err.Error(), apiv1.CodeNoMembership) {
		t.Fatalf("err = %v, want %s", err, apiv1.CodeNoMembership)
	}
}

func TestAgo(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		t    time.Time
		want string
	}{
		{time.Time{}, "-"},
		{now.Add(-1500 * time.Millisecond), "1.5s ago"},
		{now.Add(time.Second), "now"},
		{now.Add(-90 * time.Second), "1m30s ago"},
	} {
		if got := ago(now, tc.t); got != tc.want {
			t.Errorf("ago(%s) = %q, want %q", tc.t, got, tc.want)
		}
	}
}

// A negative keep window is refused by name.
func TestZygoteKeepMustNotBeNegative(t *testing.T) {
	if err := checkZygoteKeep(-time.Second); err == nil || !strings.Contains(err.Error(), "--zygote-keep") {
		t.Fatalf("-1s: %v, want an error naming --zygote-keep", err)
	}
	for _, d := range []time.Duration{0, time.Minute} {
		if err := checkZygoteKeep(d); err != nil {
			t.Fatalf("%s: %v", d, err)
		}
	}
}
