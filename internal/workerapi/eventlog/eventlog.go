// Package eventlog is a worker's event stream: a bounded ring of the
// latest events, numbered, that any number of readers follow at their own
// pace. A writer never waits for a reader; a reader that fell behind the
// ring, or asks to resume after a sequence number this log never issued
// (the worker restarted), gets a Resync event first and goes on from the
// oldest event kept.
package eventlog

import (
	"context"
	"sync"

	"github.com/baton-faas/baton/internal/workerapi"
)

// DefaultSize is how many events a log keeps when New is given no size.
const DefaultSize = 4096

// Log is a worker's event log. Its lock is a leaf: callers may append
// while holding their own locks.
type Log struct {
	worker string

	mu     sync.Mutex
	ring   []workerapi.Event
	next   uint64        // Seq of the next event; the first is 1
	wake   chan struct{} // closed and replaced by every append
	closed bool
	done   chan struct{} // closed by Close: streams end
	// streams counts the goroutines feeding readers; Close waits for them.
	streams sync.WaitGroup
}

// New returns a log of worker's events keeping the latest size events.
func New(worker string, size int) *Log {
	if size <= 0 {
		size = DefaultSize
	}
	return &Log{worker: worker, ring: make([]workerapi.Event, size), next: 1,
		wake: make(chan struct{}), done: make(chan struct{})}
}

// Append numbers ev, stamps it with the worker's id and keeps it,
// dropping the oldest event when the ring is full.
func (l *Log) Append(ev workerapi.Event) workerapi.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	ev.Seq = l.next
	ev.Worker = l.worker
	l.ring[ev.Seq%uint64(len(l.ring))] = ev
	l.next++
	close(l.wake)
	l.wake = make(chan struct{})
	return ev
}

// oldest is the Seq of the oldest event kept (l.next when none is).
func (l *Log) oldest() uint64 {
	if n := uint64(len(l.ring)); l.next > n {
		return l.next - n
	}
	return 1
}

// Stream follows the log from the event after after (0: from the next
// event on). The channel is closed when ctx ends or the log is closed.
func (l *Log) Stream(ctx context.Context, after uint64) (<-chan workerapi.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, workerapi.ErrWorkerUnavailable
	}
	pos := after + 1
	resync := false
	switch {
	case after == 0:
		pos = l.next
	case after >= l.next:
		// A Seq this log never issued: the reader followed an earlier
		// incarnation of the worker.
		pos, resync = l.next, true
	}
	ch := make(chan workerapi.Event)
	l.streams.Add(1)
	go l.feed(ctx, ch, pos, resync)
	return ch, nil
}

// feed sends the events from pos on to ch.
func (l *Log) feed(ctx context.Context, ch chan<- workerapi.Event, pos uint64, resync bool) {
	defer l.streams.Done()
	defer close(ch)
	for {
		l.mu.Lock()
		if oldest := l.oldest(); pos < oldest {
			pos, resync = oldest, true
		}
		var ev workerapi.Event
		have := false
		switch {
		case resync:
			// Resuming after the Resync's Seq continues at pos.
			ev, have = workerapi.Event{Seq: pos - 1, Kind: workerapi.Resync, Worker: l.worker}, true
		case pos < l.next:
			ev, have = l.ring[pos%uint64(len(l.ring))], true
		}
		wake := l.wake
		l.mu.Unlock()
		if !have {
			select {
			case <-wake:
				continue
			case <-ctx.Done():
				return
			case <-l.done:
				return
			}
		}
		select {
		case ch <- ev:
			if resync {
				resync = false
			} else {
				pos++
			}
		case <-ctx.Done():
			return
		case <-l.done:
			return
		}
	}
}

// Close ends every stream and waits until their goroutines are gone.
func (l *Log) Close() {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.done)
	}
	l.mu.Unlock()
	l.streams.Wait()
}
