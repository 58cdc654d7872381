package membership_test

import (
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/cluster/clustertest"
	"github.com/baton-faas/baton/internal/cluster/membership"
)

// A node whose NATS connection is gone (its process was killed) is
// expelled at once by a probe; a live one is not, whatever it is asked.
func TestExpelOnlyNodesWithoutConnection(t *testing.T) {
	s := clustertest.Server(t)
	observer := open(t, s)
	// The probed node has a long TTL: only Expel can remove it in time.
	nc, js := clustertest.Connect(t, s)
	victimSide, err := membership.Open(clustertest.Context(t), js, membership.Config{TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	join(t, victimSide, "victim", membership.RoleController)
	w := watch(t, observer)

	gone, err := observer.Expel(clustertest.Context(t), "victim")
	if err != nil || gone {
		t.Fatalf("expel of a live node: %v, %v; want it kept", gone, err)
	}
	if gone, err := observer.Expel(clustertest.Context(t), "nobody"); err != nil || gone {
		t.Fatalf("expel of an unknown node: %v, %v", gone, err)
	}

	nc.Close() // as a kill -9 does to the process's connection
	began := time.Now()
	gone, err = observer.Expel(clustertest.Context(t), "victim")
	if err != nil || !gone {
		t.Fatalf("expel of a node without a connection: %v, %v; want it removed", gone, err)
	}
	ev := await(t, w, "the victim to leave", func(ev membership.Event) bool {
		return ev.Kind == membership.Left && ev.Node.ID == "victim"
	})
	t.Logf("left %s after the expel began (TTL %s): %+v", time.Since(began), ttl, ev.Kind)
}
