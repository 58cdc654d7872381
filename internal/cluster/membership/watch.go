package membership

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// EventKind says what happened to a node.
type EventKind int

// Event kinds.
const (
	// Joined: a node appeared (first start, restart, or return after it
	// was declared dead).
	Joined EventKind = iota + 1
	// Updated: a live node heart-beat; its load or state may have changed.
	Updated
	// Left: a node left, was declared dead (its entry expired), or
	// restarted (a new incarnation follows as Joined).
	Left
)

func (k EventKind) String() string {
	switch k {
	case Joined:
		return "joined"
	case Updated:
		return "updated"
	case Left:
		return "left"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is a change of the membership.
type Event struct {
	Kind EventKind
	// Node is the new entry; for Left, the last entry seen.
	Node Node
}

// Watch is a view of the membership that follows the bucket: an initial
// snapshot, then every change after it, in the bucket's order.
type Watch struct {
	snapshot []Node
	events   chan Event
	cancel   context.CancelFunc
	done     chan struct{}

	mu  sync.Mutex
	err error
}

// Watch starts a watch. Its snapshot is the membership as of one revision
// of the bucket, and its events are exactly the changes after that
// revision; a node that expired before the watch started is not in it.
// The watch ends when ctx ends, on Stop, or when the NATS connection
// closes (Events is closed then; Err says why).
func (m *Members) Watch(ctx context.Context) (*Watch, error) {
	ctx, cancel := context.WithCancel(ctx)
	kw, err := m.kv.WatchAll(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch nodes: %w", err)
	}
	known := map[string]Node{}
	for initial := true; initial; {
		select {
		case e, ok := <-kw.Updates():
			if !ok {
				cancel()
				return nil, errors.New("watch nodes: the watch ended before its snapshot")
			}
			if e == nil {
				initial = false
				break
			}
			if e.Operation() != jetstream.KeyValuePut {
				delete(known, e.Key())
			} else if n, err := decode(e); err == nil {
				known[n.ID] = n
			}
		case <-ctx.Done():
			_ = kw.Stop()
			cancel()
			return nil, fmt.Errorf("watch nodes: %w", ctx.Err())
		}
	}
	w := &Watch{events: make(chan Event, 64), cancel: cancel, done: make(chan struct{})}
	for _, n := range known {
		w.snapshot = append(w.snapshot, n)
	}
	sortNodes(w.snapshot)
	go w.follow(ctx, kw, known)
	return w, nil
}

// Snapshot is the membership when the watch started, sorted by id.
func (w *Watch) Snapshot() []Node { return w.snapshot }

// Events delivers the changes after the snapshot. The sender waits for
// the reader: a watch nobody reads holds back its own changes only.
func (w *Watch) Events() <-chan Event { return w.events }

// Stop ends the watch and waits for its goroutine.
func (w *Watch) Stop() {
	w.cancel()
	<-w.done
}

// Err says why the watch ended on its own; nil while it runs or after
// Stop.
func (w *Watch) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *Watch) follow(ctx context.Context, kw jetstream.KeyWatcher, known map[string]Node) {
	defer close(w.done)
	defer close(w.events)
	defer func() { _ = kw.Stop() }()
	send := func(ev Event) bool {
		select {
		case w.events <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case e, ok = <-kw.Updates():
		case <-ctx.Done():
			return
		}
		if !ok {
			if ctx.Err() == nil {
				w.mu.Lock()
				w.err = errors.New("membership watch ended: the NATS connection closed")
				w.mu.Unlock()
			}
			return
		}
		if e == nil {
			continue
		}
		for _, ev := range classify(known, e) {
			if !send(ev) {
				return
			}
		}
	}
}

// classify turns one bucket entry into events against what the watch
// knows, and updates it.
func classify(known map[string]Node, e jetstream.KeyValueEntry) []Event {
	old, had := known[e.Key()]
	if e.Operation() != jetstream.KeyValuePut {
		if !had {
			return nil
		}
		delete(known, e.Key())
		return []Event{{Kind: Left, Node: old}}
	}
	n, err := decode(e)
	if err != nil {
		// Not a node entry Baton wrote; nothing to report.
		return nil
	}
	known[n.ID] = n
	switch {
	case !had:
		return []Event{{Kind: Joined, Node: n}}
	case old.Incarnation != n.Incarnation:
		return []Event{{Kind: Left, Node: old}, {Kind: Joined, Node: n}}
	}
	return []Event{{Kind: Updated, Node: n}}
}
