package membership_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/cluster/clustertest"
	"github.com/baton-faas/baton/internal/cluster/membership"
	"github.com/baton-faas/baton/internal/store/natsd"
	"github.com/baton-faas/baton/internal/workerapi"
)

// Short heartbeats keep the tests quick; the design is for 1 s.
const (
	interval = 100 * time.Millisecond
	// Six heartbeats: a busy machine may delay a few without a node
	// being declared dead.
	ttl = 600 * time.Millisecond
)

// open opens the bucket on a connection of its own.
func open(t *testing.T, s *natsd.Server) *membership.Members {
	t.Helper()
	_, js := clustertest.Connect(t, s)
	m, err := membership.Open(clustertest.Context(t), js, membership.Config{TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func join(t *testing.T, m *membership.Members, id string, roles ...membership.Role) *membership.Member {
	t.Helper()
	mb, err := m.Join(clustertest.Context(t), membership.Self{ID: id, Roles: roles, Address: id + ":7000", Interval: interval})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mb.Close)
	return mb
}

func watch(t *testing.T, m *membership.Members) *membership.Watch {
	t.Helper()
	w, err := m.Watch(clustertest.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return w
}

// await reads events until one matches, failing after the deadline.
func await(t *testing.T, w *membership.Watch, what string, match func(membership.Event) bool) membership.Event {
	t.Helper()
	timeout := time.After(clustertest.Deadline)
	for {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				t.Fatalf("watch ended (%v) while waiting for %s", w.Err(), what)
			}
			if match(ev) {
				return ev
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func is(kind membership.EventKind, id string) func(membership.Event) bool {
	return func(ev membership.Event) bool { return ev.Kind == kind && ev.Node.ID == id }
}

func ids(ns []membership.Node) string {
	var s []string
	for _, n := range ns {
		s = append(s, n.ID)
	}
	return strings.Join(s, ",")
}

func TestJoinHeartbeatAndLeave(t *testing.T) {
	s := clustertest.Server(t)
	m := open(t, s)
	var instances atomic.Int64
	w := watch(t, m)
	mb, err := m.Join(clustertest.Context(t), membership.Self{
		ID: "w1", Roles: []membership.Role{membership.RoleWorker}, Address: "10.0.0.1:7000", Interval: interval,
		Load: func(context.Context) membership.Load {
			return membership.Load{Capacity: workerapi.Resources{MemoryMB: 4096, MilliCPUs: 2000},
				Reserved: workerapi.Resources{MemoryMB: 128}, Instances: int(instances.Load()), Sandboxes: 1}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	ev := await(t, w, "w1 to join", is(membership.Joined, "w1"))
	if !ev.Node.Has(membership.RoleWorker) || ev.Node.Has(membership.RoleController) || ev.Node.Address != "10.0.0.1:7000" ||
		ev.Node.State != membership.StateReady || ev.Node.Load.Capacity.MemoryMB != 4096 || ev.Node.Started.IsZero() {
		t.Fatalf("joined entry = %+v", ev.Node)
	}
	first := ev.Node.Heartbeat
	instances.Store(3)
	mb.SetState(membership.StateDraining)
	ev = await(t, w, "a heartbeat with the new load and state", func(ev membership.Event) bool {
		return is(membership.Updated, "w1")(ev) && ev.Node.Load.Instances == 3 && ev.Node.State == membership.StateDraining
	})
	if !ev.Node.Heartbeat.After(first) || ev.Node.Incarnation == "" {
		t.Fatalf("heartbeat entry = %+v, first heartbeat at %s", ev.Node, first)
	}
	nodes, err := m.Nodes(clustertest.Context(t))
	if err != nil || ids(nodes) != "w1" {
		t.Fatalf("List = %v, %v", ids(nodes), err)
	}
	if err := mb.Leave(clustertest.Context(t)); err != nil {
		t.Fatal(err)
	}
	await(t, w, "w1 to leave", is(membership.Left, "w1"))
	nodes, err = m.Nodes(clustertest.Context(t))
	if err != nil || len(nodes) != 0 {
		t.Fatalf("List after leave = %v, %v", ids(nodes), err)
	}
}

// A node whose connection is gone cannot heartbeat nor say goodbye: the
// server expires its entry and watchers see it leave.
func TestDeadNodeIsDetectedWithoutItsHelp(t *testing.T) {
	s := clustertest.Server(t)
	m := open(t, s)
	nc, js := clustertest.Connect(t, s)
	victim, err := membership.Open(clustertest.Context(t), js, membership.Config{TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	join(t, m, "w1", membership.RoleWorker)
	join(t, victim, "w2", membership.RoleWorker)
	w := watch(t, m)
	if got := ids(w.Snapshot()); got != "w1,w2" {
		t.Fatalf("snapshot = %s, want w1,w2", got)
	}
	await(t, w, "a heartbeat of w2", is(membership.Updated, "w2"))
	cut := time.Now()
	nc.Close()
	await(t, w, "w2 to be declared dead", is(membership.Left, "w2"))
	t.Logf("dead node seen gone %s after its connection was cut (TTL %s, heartbeat %s)", time.Since(cut).Round(time.Millisecond), ttl, interval)
	nodes, err := m.Nodes(clustertest.Context(t))
	if err != nil || slices.ContainsFunc(nodes, func(n membership.Node) bool { return n.ID == "w2" }) {
		t.Fatalf("Nodes = %v, %v; want no w2", ids(nodes), err)
	}
	// A watch started now does not see the dead node at all.
	if got := ids(watch(t, m).Snapshot()); strings.Contains(got, "w2") {
		t.Fatalf("new snapshot = %s, want no w2", got)
	}
}

// A node that stalls past the TTL (a long pause, a partition) is declared
// dead; when it runs again it registers again under the same id, which
// watchers see as a join.
func TestStalledNodeRejoins(t *testing.T) {
	s := clustertest.Server(t)
	m := open(t, s)
	w := watch(t, m)
	var stall sync.Mutex
	mb, err := m.Join(clustertest.Context(t), membership.Self{
		ID: "w1", Roles: []membership.Role{membership.RoleWorker}, Interval: interval,
		// The heartbeat calls Load first: holding the lock stalls it.
		Load: func(context.Context) membership.Load { stall.Lock(); defer stall.Unlock(); return membership.Load{} },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	joined := await(t, w, "w1 to join", is(membership.Joined, "w1"))
	stall.Lock()
	left := await(t, w, "the stalled w1 to be declared dead", is(membership.Left, "w1"))
	stall.Unlock()
	again := await(t, w, "w1 to join again", is(membership.Joined, "w1"))
	if again.Node.Incarnation != joined.Node.Incarnation || again.Node.Revision <= left.Node.Revision {
		t.Fatalf("rejoined entry %+v after %+v", again.Node, left.Node)
	}
	await(t, w, "w1 to heartbeat again", is(membership.Updated, "w1"))
	if mb.Err() != nil {
		t.Fatalf("member stopped: %v", mb.Err())
	}
}

// A restarted node (new process, same id) takes over its old entry before
// it expires; watchers see the old incarnation leave and the new one join.
func TestRestartWithinTTLIsLeaveAndJoin(t *testing.T) {
	s := clustertest.Server(t)
	m := open(t, s)
	w := watch(t, m)
	old := join(t, m, "w1", membership.RoleWorker)
	first := await(t, w, "w1 to join", is(membership.Joined, "w1"))
	old.Close() // crashed: no leave
	restarted := join(t, m, "w1", membership.RoleWorker)
	left := await(t, w, "the old w1 to leave", is(membership.Left, "w1"))
	joined := await(t, w, "the new w1 to join", is(membership.Joined, "w1"))
	if left.Node.Incarnation != first.Node.Incarnation || joined.Node.Incarnation != restarted.Node().Incarnation ||
		joined.Node.Incarnation == first.Node.Incarnation {
		t.Fatalf("incarnations: first %s, left %s, joined %s", first.Node.Incarnation, left.Node.Incarnation, joined.Node.Incarnation)
	}
}

// Two live processes with one id: the older one finds its entry taken and
// stops instead of fighting over it.
func TestDuplicateIDStopsTheOlderProcess(t *testing.T) {
	s := clustertest.Server(t)
	m := open(t, s)
	a := join(t, m, "w1", membership.RoleWorker)
	b := join(t, m, "w1", membership.RoleWorker)
	select {
	case <-a.Done():
	case <-time.After(clustertest.Deadline):
		t.Fatal("the older process kept heart-beating")
	}
	if !errors.Is(a.Err(), membership.ErrIDInUse) {
		t.Fatalf("older process stopped with %v, want ErrIDInUse", a.Err())
	}
	w := watch(t, m)
	await(t, w, "the newer process to heartbeat", is(membership.Updated, "w1"))
	if b.Err() != nil {
		t.Fatalf("newer process stopped: %v", b.Err())
	}
}

func TestWatchSnapshotThenEvents(t *testing.T) {
	s := clustertest.Server(t)
	m := open(t, s)
	join(t, m, "c1", membership.RoleController)
	join(t, m, "w1", membership.RoleWorker)
	w := watch(t, m)
	snap := w.Snapshot()
	if ids(snap) != "c1,w1" || !snap[0].Has(membership.RoleController) || snap[0].Revision == 0 {
		t.Fatalf("snapshot = %+v", snap)
	}
	join(t, m, "w2", membership.RoleWorker)
	// Nodes of the snapshot only update; the new node joins.
	seen := map[string]membership.EventKind{}
	await(t, w, "w2 to join", func(ev membership.Event) bool {
		if _, ok := seen[ev.Node.ID]; !ok {
			seen[ev.Node.ID] = ev.Kind
		}
		return is(membership.Joined, "w2")(ev)
	})
	for id, k := range seen {
		if id != "w2" && k != membership.Updated {
			t.Errorf("%s: first event %s, want updated (it is in the snapshot)", id, k)
		}
	}
}

func TestWatchEndsWhenItsConnectionCloses(t *testing.T) {
	s := clustertest.Server(t)
	nc, js := clustertest.Connect(t, s)
	m, err := membership.Open(clustertest.Context(t), js, membership.Config{TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	w := watch(t, m)
	nc.Close()
	select {
	case _, ok := <-w.Events():
		for ok {
			_, ok = <-w.Events()
		}
	case <-time.After(clustertest.Deadline):
		t.Fatal("events still open after the connection closed")
	}
	if w.Err() == nil {
		t.Fatal("Err is nil after the watch ended on its own")
	}
}

func TestJoinRefusesBadSettings(t *testing.T) {
	s := clustertest.Server(t)
	m := open(t, s)
	ctx := clustertest.Context(t)
	for name, self := range map[string]membership.Self{
		"no id":          {Roles: []membership.Role{membership.RoleWorker}},
		"bad id":         {ID: "a.b", Roles: []membership.Role{membership.RoleWorker}},
		"no role":        {ID: "w1"},
		"interval > ttl": {ID: "w1", Roles: []membership.Role{membership.RoleWorker}, Interval: ttl},
	} {
		if mb, err := m.Join(ctx, self); err == nil {
			mb.Close()
			t.Errorf("%s: Join succeeded", name)
		}
	}
}

// The bucket's TTL is the cluster's: a node configured otherwise uses it.
func TestOpenUsesTheExistingBucketsTTL(t *testing.T) {
	s := clustertest.Server(t)
	m := open(t, s)
	_, js := clustertest.Connect(t, s)
	other, err := membership.Open(clustertest.Context(t), js, membership.Config{TTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if other.TTL() != m.TTL() || m.TTL() != ttl {
		t.Fatalf("TTLs %s and %s, want both %s", other.TTL(), m.TTL(), ttl)
	}
	if _, err := membership.Open(clustertest.Context(t), js, membership.Config{TTL: time.Millisecond}); err == nil {
		t.Fatal("a 1ms TTL was accepted")
	}
}

func TestGetMissingNode(t *testing.T) {
	s := clustertest.Server(t)
	m := open(t, s)
	if _, err := m.Get(context.Background(), "nope"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("Get = %v, want ErrKeyNotFound", err)
	}
}

func TestLoadOrCreateID(t *testing.T) {
	dir := t.TempDir()
	id, err := membership.LoadOrCreateID(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := membership.ValidateID(id); err != nil {
		t.Fatalf("generated id %q: %v", id, err)
	}
	again, err := membership.LoadOrCreateID(dir)
	if err != nil || again != id {
		t.Fatalf("second load = %q, %v; want %q", again, err, id)
	}
	other, err := membership.LoadOrCreateID(t.TempDir())
	if err != nil || other == id {
		t.Fatalf("another data dir got %q, %v", other, err)
	}
	if err := os.WriteFile(filepath.Join(dir, membership.IDFileName), []byte("no/slashes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := membership.LoadOrCreateID(dir); err == nil || !strings.Contains(err.Error(), "no/slashes") {
		t.Fatalf("corrupt id file: err = %v", err)
	}
}
