// Package membership tracks the nodes of a Baton cluster (controllers and
// workers) in a JetStream KV bucket: every node writes its own entry and
// refreshes it on a heartbeat; observers watch the bucket and see joins,
// updates and leaves in one order, the bucket's.
//
// Liveness is decided by the NATS server, not by any node: the bucket has a
// MaxAge (its TTL), so an entry that is not refreshed within the TTL is
// removed by the server, which leaves a delete marker (the bucket's
// LimitMarkerTTL) that every watcher receives as the node's leave. A dead
// node needs to do nothing for that to happen, and every observer sees the
// same leave at the same point of the bucket's history, so two controllers
// never disagree about who is alive for longer than their watch lag.
//
// Why a bucket TTL and not per-key TTLs or timestamps compared by
// observers: per-key TTLs (KeyTTL on Create) are whole seconds with a
// one-second minimum on the pinned nats-server and are set only on Create,
// while a heartbeat is an Update; bucket MaxAge takes any duration from
// 100 ms, is reset by every write of a key (the bucket keeps one value per
// key), and since nats-server 2.11 its expiries reach watchers as markers.
// Comparing heartbeat timestamps in each observer would need every
// observer's clock and its own cleanup, and observers could disagree. The
// server checks ages at most every 250 ms, so a dead node is seen gone
// between TTL and TTL + 250 ms after its last heartbeat.
//
// The bucket is file-backed although its entries live seconds: a memory
// bucket would vanish with a restart of the whole NATS cluster, and every
// heartbeat after it would fail for want of a bucket. JetStream does not
// fsync each write, so a heartbeat costs no disk flush.
package membership

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/store/jsstore"
	"github.com/baton-faas/baton/internal/workerapi"
)

// Bucket is the KV bucket that holds one entry per live node.
const Bucket = "baton_nodes"

const (
	// DefaultInterval is how often a node refreshes its entry.
	DefaultInterval = time.Second
	// DefaultTTL is how long an entry lives without a refresh: three
	// heartbeats, so that one late or lost heartbeat (a GC pause, a NATS
	// leader election) does not declare a live node dead.
	DefaultTTL = 3 * DefaultInterval
	// markerTTL is how long the server keeps the marker of an expired
	// entry; watchers that lag by less than this still see the leave. The
	// server's minimum is one second.
	markerTTL = time.Minute
)

// Role is what a node does in the cluster.
type Role string

// Roles. `baton server` is one node with both.
const (
	RoleController Role = "controller"
	RoleWorker     Role = "worker"
)

// State is a node's own account of its readiness.
type State string

// States.
const (
	// StateReady: the node takes work.
	StateReady State = "ready"
	// StateDraining: the node is shutting down; place nothing new on it.
	StateDraining State = "draining"
)

// Load is what a node reports about its use on every heartbeat. Workers fill
// all of it; a controller may leave it zero.
type Load struct {
	Capacity  workerapi.Resources `json:"capacity"`
	Reserved  workerapi.Resources `json:"reserved"`
	Instances int                 `json:"instances"`
	Sandboxes int                 `json:"sandboxes"`
}

// Node is one node's entry.
type Node struct {
	ID      string `json:"id"`
	Roles   []Role `json:"roles"`
	Address string `json:"address"`
	State   State  `json:"state"`
	Load    Load   `json:"load"`
	// Started is when this run of the node's process began.
	Started time.Time `json:"started"`
	// Heartbeat is when the node wrote this entry, by its own clock.
	Heartbeat time.Time `json:"heartbeat"`
	// Incarnation is random per run of the node's process: a node that
	// restarted (and lost what it ran) is a new incarnation under the same
	// id, which watchers report as a leave and a join.
	Incarnation string `json:"incarnation"`
	// Revision is the entry's revision in the bucket (not stored in it).
	Revision uint64 `json:"-"`
}

// Has says whether the node has role r.
func (n Node) Has(r Role) bool { return slices.Contains(n.Roles, r) }

// ErrIDInUse: another running process registered the same node id.
var ErrIDInUse = errdefs.New(errdefs.Conflict, "node_id_in_use", "node id is in use by another process")

// Config configures the bucket.
type Config struct {
	// TTL is how long an entry lives without a heartbeat (default
	// DefaultTTL). It is the bucket's: the first node to create the bucket
	// sets it, and later nodes use the bucket's value.
	TTL time.Duration
	// Replicas is the bucket's replication factor (1 for one NATS server,
	// 3 for a three-node cluster).
	Replicas int
}

// Members is the membership bucket: read it, watch it, join it.
type Members struct {
	kv  jetstream.KeyValue
	nc  *nats.Conn // liveness probes
	ttl time.Duration
}

// Open creates the membership bucket or opens the existing one.
func Open(ctx context.Context, js jetstream.JetStream, c Config) (*Members, error) {
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.TTL < 100*time.Millisecond {
		return nil, fmt.Errorf("membership TTL %s is below the 100ms JetStream allows", c.TTL)
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	// The bucket's TTL is the cluster's: whoever created it first set it.
	kv, st, err := jsstore.OpenKV(ctx, js, jetstream.KeyValueConfig{
		Bucket: Bucket, Description: "Baton cluster members: one entry per live node, expiring without heartbeats",
		History: 1, TTL: c.TTL, LimitMarkerTTL: markerTTL, Storage: jetstream.FileStorage, Replicas: c.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}
	if st.TTL() <= 0 || st.LimitMarkerTTL() <= 0 {
		return nil, fmt.Errorf("membership bucket %s has no TTL or no expiry markers (TTL %s, markers %s): delete it and let Baton create it",
			Bucket, st.TTL(), st.LimitMarkerTTL())
	}
	return &Members{kv: kv, nc: js.Conn(), ttl: st.TTL()}, nil
}

// TTL is how long an entry lives without a heartbeat.
func (m *Members) TTL() time.Duration { return m.ttl }

// Nodes returns the live nodes, sorted by id.
func (m *Members) Nodes(ctx context.Context) ([]Node, error) {
	w, err := m.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	defer w.Stop()
	var out []Node
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("list nodes: watch ended")
			}
			if e == nil {
				sortNodes(out)
				return out, nil
			}
			if n, err := decode(e); err == nil {
				out = append(out, n)
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("list nodes: %w", ctx.Err())
		}
	}
}

// Get returns one live node; a node that is not live is an error wrapping
// jetstream.ErrKeyNotFound.
func (m *Members) Get(ctx context.Context, id string) (Node, error) {
	e, err := m.kv.Get(ctx, id)
	if err != nil {
		return Node{}, fmt.Errorf("get node %s: %w", id, err)
	}
	return decode(e)
}

func decode(e jetstream.KeyValueEntry) (Node, error) {
	var n Node
	if err := json.Unmarshal(e.Value(), &n); err != nil {
		return Node{}, fmt.Errorf("decode node %s: %w", e.Key(), err)
	}
	if n.ID != e.Key() {
		return Node{}, fmt.Errorf("node entry %s names id %q", e.Key(), n.ID)
	}
	n.Revision = e.Revision()
	return n, nil
}

func sortNodes(ns []Node) {
	slices.SortFunc(ns, func(a, b Node) int { return strings.Compare(a.ID, b.ID) })
}
