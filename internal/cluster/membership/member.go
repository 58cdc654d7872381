package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Self describes the node that joins.
type Self struct {
	// ID is the node's stable id (LoadOrCreateID).
	ID    string
	Roles []Role
	// Address is where other nodes reach this one (its advertised address).
	Address string
	// Interval between heartbeats (default DefaultInterval). It must leave
	// room for at least two heartbeats within the bucket's TTL.
	Interval time.Duration
	// Load, when set, is called on every heartbeat, with a context that
	// ends within the interval, and must return quickly: it runs on the
	// heartbeat's goroutine.
	Load   func(context.Context) Load
	Logger *slog.Logger
}

// Member is this node's registration: it heartbeats until Leave or Close.
type Member struct {
	members  *Members
	interval time.Duration
	load     func(context.Context) Load
	log      *slog.Logger

	mu   sync.Mutex // guards node
	node Node       // what the next heartbeat writes (Revision: the last written)

	probes *nats.Subscription // answers liveness probes until the heartbeats stop

	cancel context.CancelFunc
	done   chan struct{}
	err    error // set before done closes
}

// Join registers the node and starts its heartbeats; ctx bounds the first
// registration only. An entry under the same id left by an earlier run of
// this node (a restart within the TTL) is taken over; that run's watchers
// see a leave and a join, because the incarnation changed.
func (m *Members) Join(ctx context.Context, s Self) (*Member, error) {
	if err := ValidateID(s.ID); err != nil {
		return nil, err
	}
	if len(s.Roles) == 0 {
		return nil, fmt.Errorf("node %s: no role", s.ID)
	}
	if s.Interval == 0 {
		s.Interval = DefaultInterval
	}
	if s.Interval <= 0 || 2*s.Interval > m.ttl {
		return nil, fmt.Errorf("heartbeat interval %s does not fit twice in the membership TTL %s", s.Interval, m.ttl)
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	now := time.Now()
	mb := &Member{
		members: m, interval: s.Interval, load: s.Load,
		log:  s.Logger.With("component", "membership", "node", s.ID),
		node: Node{ID: s.ID, Roles: slices.Clone(s.Roles), Address: s.Address, State: StateReady, Started: now, Incarnation: randomHex(8)},
		done: make(chan struct{}),
	}
	probes, err := m.answerProbes(s.ID, mb.node.Incarnation)
	if err != nil {
		return nil, err
	}
	mb.probes = probes
	if err := mb.register(ctx); err != nil {
		_ = probes.Unsubscribe()
		return nil, err
	}
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	mb.cancel = cancel
	go mb.run(loopCtx)
	return mb, nil
}

// Node returns the entry as last written.
func (mb *Member) Node() Node {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	n := mb.node
	n.Roles = slices.Clone(n.Roles)
	return n
}

// Interval is the time between heartbeats.
func (mb *Member) Interval() time.Duration { return mb.interval }

// SetState changes the state the next heartbeat writes.
func (mb *Member) SetState(s State) {
	mb.mu.Lock()
	mb.node.State = s
	mb.mu.Unlock()
}

// Done is closed when the heartbeats stopped: after Leave or Close, or
// because another process took over this node's id (Err says so).
func (mb *Member) Done() <-chan struct{} { return mb.done }

// Err is why the heartbeats stopped on their own (ErrIDInUse), nil while
// they run and after Leave or Close.
func (mb *Member) Err() error {
	select {
	case <-mb.done:
		return mb.err
	default:
		return nil
	}
}

// Close stops the heartbeats and leaves the entry to expire.
func (mb *Member) Close() {
	mb.cancel()
	<-mb.done
}

// Leave stops the heartbeats and removes the entry, so that watchers see
// the node leave at once instead of after the TTL.
func (mb *Member) Leave(ctx context.Context) error {
	mb.Close()
	if mb.err != nil {
		return nil // the entry is someone else's now
	}
	n := mb.Node()
	err := mb.members.kv.Delete(ctx, n.ID, jetstream.LastRevision(n.Revision))
	if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("leave: remove node %s: %w", n.ID, err)
	}
	return nil
}

func (mb *Member) run(ctx context.Context) {
	defer close(mb.done)
	defer func() { _ = mb.probes.Unsubscribe() }()
	t := time.NewTicker(mb.interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := mb.beat(ctx)
		switch {
		case errors.Is(err, ErrIDInUse):
			mb.log.Error("another process runs with this node id; this one stops heart-beating", "err", err)
			mb.err = err
			return
		case err != nil && ctx.Err() == nil:
			if !failing {
				mb.log.Warn("heartbeat failed; retrying", "err", err)
			}
			failing = true
		case err == nil && failing:
			mb.log.Info("heartbeats resumed")
			failing = false
		}
	}
}

// entry returns the node to write now, with fresh load and time.
func (mb *Member) entry(ctx context.Context) Node {
	var load Load
	if mb.load != nil {
		load = mb.load(ctx)
	}
	mb.mu.Lock()
	defer mb.mu.Unlock()
	mb.node.Load = load
	mb.node.Heartbeat = time.Now()
	return mb.node
}

func (mb *Member) setRevision(rev uint64) {
	mb.mu.Lock()
	mb.node.Revision = rev
	mb.mu.Unlock()
}

// beat writes the entry if it is still the one this node wrote last; any
// other outcome goes through resolve.
func (mb *Member) beat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, mb.interval)
	defer cancel()
	n := mb.entry(ctx)
	data, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("encode node: %w", err)
	}
	rev, err := mb.members.kv.Update(ctx, n.ID, data, n.Revision)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return mb.resolve(ctx, data)
	}
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	mb.setRevision(rev)
	return nil
}

// resolve handles a heartbeat that found the entry changed: it expired
// (the node was declared dead: register again, a join for everyone), or
// our last write landed but its answer was lost (continue from it), or
// another process wrote it (stop).
func (mb *Member) resolve(ctx context.Context, data []byte) error {
	n := mb.Node()
	e, err := mb.members.kv.Get(ctx, n.ID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		rev, err := mb.members.kv.Create(ctx, n.ID, data)
		if err != nil {
			return fmt.Errorf("register again: %w", err)
		}
		mb.setRevision(rev)
		mb.log.Warn("this node's entry had expired (it missed its heartbeats); registered again")
		return nil
	}
	if err != nil {
		return fmt.Errorf("heartbeat: read own entry: %w", err)
	}
	cur, err := decode(e)
	if err != nil || cur.Incarnation != n.Incarnation {
		return fmt.Errorf("node %s at %s (started %s): %w", n.ID, cur.Address, cur.Started.Format(time.RFC3339), ErrIDInUse)
	}
	rev, err := mb.members.kv.Update(ctx, n.ID, data, e.Revision())
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	mb.setRevision(rev)
	return nil
}

// register writes the first entry of this run.
func (mb *Member) register(ctx context.Context) error {
	n := mb.entry(ctx)
	data, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("encode node: %w", err)
	}
	var rev uint64
	// Two rounds: an entry found by Create may expire before Get reads it.
	for range 2 {
		rev, err = mb.members.kv.Create(ctx, n.ID, data)
		if !errors.Is(err, jetstream.ErrKeyExists) {
			break
		}
		// An earlier run's entry, not yet expired (or, if another process
		// really runs with this id, it finds out at its next heartbeat and
		// stops: the newest run wins).
		var e jetstream.KeyValueEntry
		if e, err = mb.members.kv.Get(ctx, n.ID); errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err == nil {
			mb.log.Info("taking over this node's entry from an earlier run", "previousRevision", e.Revision())
			rev, err = mb.members.kv.Update(ctx, n.ID, data, e.Revision())
		}
		break
	}
	if err != nil {
		return fmt.Errorf("register node %s: %w", n.ID, err)
	}
	mb.setRevision(rev)
	mb.log.Info("joined the cluster", "roles", n.Roles, "address", n.Address, "interval", mb.interval, "ttl", mb.members.ttl)
	return nil
}
