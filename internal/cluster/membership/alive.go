package membership

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Liveness probes: proof that a node's process is gone, long before its
// entry's TTL runs out. Every member answers on a subject of its own over
// its NATS connection. A NATS server drops a connection's subscriptions
// the moment the connection closes (the kernel of a killed process closes
// its socket), so a probe that finds no responder proves the node is no
// longer connected to NATS; a node that is disconnected stops acting on
// what it holds (see ownership). A node cut off by the network gives no
// such proof (the probe times out) and expires with the TTL as before.

// probeTimeout bounds a probe that gets an answer or nothing at all.
const probeTimeout = 500 * time.Millisecond

func aliveSubject(id string) string { return "baton.members.alive." + id }

// answerProbes subscribes this member to its probe subject, and makes
// sure the server has the subscription before the entry is written: a
// probe must never find a registered node without a responder.
func (m *Members) answerProbes(id, incarnation string) (*nats.Subscription, error) {
	sub, err := m.nc.Subscribe(aliveSubject(id), func(msg *nats.Msg) { _ = msg.Respond([]byte(incarnation)) })
	if err != nil {
		return nil, fmt.Errorf("answer liveness probes: %w", err)
	}
	if err := m.nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("answer liveness probes: %w", err)
	}
	return sub, nil
}

// Expel removes a node's entry when the node is provably gone: no
// process answers its probe. It reports whether it removed the entry;
// a node that answers, does not answer in time, or heartbeats meanwhile
// stays. Watchers see the node leave at once.
func (m *Members) Expel(ctx context.Context, id string) (bool, error) {
	e, err := m.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("expel %s: %w", id, err)
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	_, err = m.nc.RequestWithContext(pctx, aliveSubject(id), nil)
	cancel()
	if !errors.Is(err, nats.ErrNoResponders) {
		return false, nil // it answered, or we cannot tell
	}
	err = m.kv.Delete(ctx, id, jetstream.LastRevision(e.Revision()))
	switch {
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil // it wrote meanwhile (it is back), or it expired
	case err != nil:
		return false, fmt.Errorf("expel %s: %w", id, err)
	}
	return true, nil
}
