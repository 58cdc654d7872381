package triggers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// forward makes sure a NATS trigger's messages are being turned into
// invocations here.
func (s *Store) forward(ctx context.Context, t Trigger) {
	s.mu.Lock()
	if _, running := s.forwards[t.ID]; running {
		s.mu.Unlock()
		return
	}
	fctx, stop := context.WithCancel(ctx)
	s.forwards[t.ID] = stop
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			stop()
			s.mu.Lock()
			delete(s.forwards, t.ID)
			s.mu.Unlock()
		}()
		s.forwardLoop(fctx, t)
	}()
}

// natsEvent is the event a message becomes.
type natsEvent struct {
	Subject string          `json:"subject"`
	Data    json.RawMessage `json:"data"`
}

// forwardLoop forwards while this controller owns the function, starting
// over (with a backoff) when the source fails: an external server that
// is down when Baton starts, a stream or consumer deleted under it.
func (s *Store) forwardLoop(ctx context.Context, t Trigger) {
	const maxWait = 30 * time.Second
	wait := time.Second
	for first := true; ctx.Err() == nil && s.owns(t.Function); first = false {
		// A source that failed may be a removed trigger's (another
		// controller removed it): making its stream again would leave it
		// behind.
		if !first && !s.exists(ctx, t.ID) {
			return
		}
		began := time.Now()
		err := s.forwardFrom(ctx, t)
		if err == nil || ctx.Err() != nil {
			return
		}
		s.log.Warn("trigger: NATS source", "trigger", t.ID, "function", t.Function, "err", err)
		s.noteError(ctx, t.ID, err.Error())
		if time.Since(began) > maxWait {
			wait = time.Second // it worked for a while: not the same failure
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, maxWait)
	}
}

// exists says whether a trigger is still stored (true when that cannot be
// read: the next try asks again).
func (s *Store) exists(ctx context.Context, id string) bool {
	_, err := s.defs.Get(ctx, id)
	return !errors.Is(err, jetstream.ErrKeyNotFound)
}

// forwardFrom turns the trigger's messages into invocations until ctx ends
// or this controller no longer owns the function (nil), or the source
// fails. A message is acknowledged only after Baton's queue stored its
// event (at least once); its idempotency key, from its stream sequence,
// keeps a redelivered message from becoming a second event.
func (s *Store) forwardFrom(ctx context.Context, t Trigger) error {
	js := s.js
	var nc *nats.Conn // an external source's own connection, closed here
	if t.NATS != nil {
		var err error
		if nc, err = t.NATS.dial(ctx, "baton trigger "+t.ID, true, s.log); err != nil {
			return err
		}
		defer nc.Close()
		if js, err = jetstream.New(nc); err != nil {
			return err
		}
	}
	stream, cons, err := s.openSource(ctx, js, t)
	if err != nil {
		return err
	}
	keyPrefix := "nats-" + t.ID
	if t.NATS != nil {
		// Another's server: a stream deleted and made again restarts its
		// sequences, which must not look like messages already forwarded.
		keyPrefix = fmt.Sprintf("nats-%s-%d", t.ID, stream.CachedInfo().Created.UnixNano())
	}
	s.noteError(ctx, t.ID, "")
	disconnected := false
	for ctx.Err() == nil && s.owns(t.Function) {
		batch, err := cons.Fetch(64, jetstream.FetchMaxWait(time.Second))
		if err == nil {
			s.forwardBatch(ctx, t, keyPrefix, batch.Messages())
			err = batch.Error()
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) ||
			errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, nats.ErrConnectionClosed) {
			return fmt.Errorf("consume %s/%s: %w", t.Stream(), t.Consumer(), err)
		}
		// An external server that went away shows in trigger ls while the
		// connection reconnects (fetches wait quietly meanwhile).
		if nc != nil && nc.IsConnected() == disconnected {
			disconnected = !disconnected
			msg := ""
			if disconnected {
				msg = fmt.Sprintf("NATS at %s: connection lost, reconnecting", t.NATS.servers())
			}
			s.noteError(ctx, t.ID, msg)
		}
		if err != nil {
			s.log.Debug("trigger: fetch", "trigger", t.ID, "err", err)
			select { // not a busy loop on a failing source
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

// forwardBatch forwards a fetch's messages. The count of those forwarded
// is written whenever no further message is at hand, before waiting for
// one: a burst costs one write, and the count is not left behind until
// the fetch expires (where a crash would lose it).
func (s *Store) forwardBatch(ctx context.Context, t Trigger, keyPrefix string, msgs <-chan jetstream.Msg) {
	var fired int64
	for {
		var m jetstream.Msg
		var ok bool
		select {
		case m, ok = <-msgs:
		default:
			if fired > 0 {
				s.addFired(ctx, t.ID, fired)
				fired = 0
			}
			m, ok = <-msgs
		}
		if !ok {
			break
		}
		if s.forwardMsg(ctx, t, keyPrefix, m) {
			fired++
		}
	}
	if fired > 0 {
		s.addFired(ctx, t.ID, fired)
	}
}

// forwardMsg turns one message into an invocation; it reports whether a
// new event was stored.
func (s *Store) forwardMsg(ctx context.Context, t Trigger, keyPrefix string, m jetstream.Msg) bool {
	meta, err := m.Metadata()
	if err != nil {
		_ = m.Term()
		return false
	}
	data := m.Data()
	if !json.Valid(data) {
		data, _ = json.Marshal(string(data))
	}
	ev, _ := json.Marshal(natsEvent{Subject: m.Subject(), Data: data})
	key := fmt.Sprintf("%s-%d", keyPrefix, meta.Sequence.Stream)
	acc, err := s.queue.Enqueue(ctx, t.Function, ev, key)
	switch {
	case errors.Is(err, nats.ErrMaxPayload):
		// It can never be stored: say so rather than retry forever.
		msg := fmt.Sprintf("message %d on %s is too large for an event (%d bytes): dropped", meta.Sequence.Stream, m.Subject(), len(ev))
		s.log.Warn("trigger: "+msg, "trigger", t.ID)
		s.noteError(ctx, t.ID, msg)
		_ = m.Term()
		return false
	case err != nil:
		s.log.Warn("trigger: forward a message", "trigger", t.ID, "err", err)
		_ = m.NakWithDelay(time.Second)
		return false
	}
	if err := m.DoubleAck(ctx); err != nil {
		// Redelivered after AckWait; its key makes it no second event.
		s.log.Debug("trigger: acknowledge a forwarded message", "trigger", t.ID, "err", err)
	}
	s.log.Debug("trigger: message forwarded", "trigger", t.ID, "seq", meta.Sequence.Stream, "key", key, "invocation", acc.ID, "duplicate", acc.Duplicate)
	return !acc.Duplicate
}

// addFired counts forwarded messages and clears the last error.
func (s *Store) addFired(ctx context.Context, id string, n int64) {
	for range 3 { // a concurrent change of the state (an error noted) wins; count again
		st, rev, err := s.state(ctx, id)
		if err != nil || rev == 0 {
			return
		}
		st.Fired += n
		st.LastError = ""
		err = s.updateState(ctx, id, st, rev)
		if err == nil {
			s.setNoted(id, "")
			return
		}
		s.log.Debug("trigger: count forwarded messages", "trigger", id, "err", err)
	}
}

// noteError records a NATS trigger's last error ("" clears it), writing
// only when it changed.
func (s *Store) noteError(ctx context.Context, id, msg string) {
	s.mu.Lock()
	last, known := s.noted[id]
	s.mu.Unlock()
	if known && last == msg {
		return
	}
	st, rev, err := s.state(ctx, id)
	if err != nil || rev == 0 {
		return
	}
	if st.LastError != msg {
		st.LastError = msg
		if s.updateState(ctx, id, st, rev) != nil {
			return
		}
	}
	s.setNoted(id, msg)
}

func (s *Store) setNoted(id, msg string) {
	s.mu.Lock()
	s.noted[id] = msg
	s.mu.Unlock()
}
