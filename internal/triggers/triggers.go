// Package triggers turns schedules and NATS messages into asynchronous
// invocations. A trigger is stored in JetStream KV; the controller that
// owns the trigger's function fires it. Every firing is an async
// invocation with an idempotency key derived from the tick (or the
// message's stream sequence), so that two controllers that both fire
// during a hand-over, or a controller that restarts, store one event.
package triggers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/async"
	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/requestid"
	"github.com/baton-faas/baton/internal/store/jsstore"
	"github.com/baton-faas/baton/internal/triggers/schedule"
)

const (
	triggersBucket = "baton_triggers"
	stateBucket    = "baton_trigger_state"
	streamPrefix   = "BATON_TRIGGER_"
	// grace is how late a tick may fire; older ones were missed (an
	// outage) and are reported instead.
	grace = 5 * time.Second
	// errCodeSubjectOverlap is nats-server's JSStreamSubjectOverlapErr.
	errCodeSubjectOverlap jetstream.ErrorCode = 10065
)

// Kinds of trigger.
const (
	KindSchedule = "schedule"
	KindNATS     = "nats"
)

// Trigger is a stored trigger.
type Trigger struct {
	ID       string `json:"id"`
	Function string `json:"function"`
	Kind     string `json:"kind"`
	// Schedule is a rate(...) or cron(...) expression; Event the fixed
	// event each tick sends.
	Schedule string          `json:"schedule,omitempty"`
	Event    json.RawMessage `json:"event,omitempty"`
	// NATSSubject: every message published on it (on the cluster's NATS)
	// becomes an invocation.
	NATSSubject string    `json:"natsSubject,omitempty"`
	Created     time.Time `json:"created"`
}

// State is what a trigger has done.
type State struct {
	// LastTick is the last tick fired or missed (schedules).
	LastTick time.Time `json:"lastTick,omitzero"`
	Fired    int64     `json:"fired"`
	// Missed counts ticks that passed while no controller could fire them.
	Missed     int64     `json:"missed"`
	LastMissed time.Time `json:"lastMissed,omitzero"`
	LastError  string    `json:"lastError,omitempty"`
}

// Errors of the trigger API.
var (
	ErrInvalid  = errdefs.New(errdefs.Invalid, "invalid_trigger", "invalid trigger")
	ErrNotFound = errdefs.New(errdefs.NotFound, "trigger_not_found", "no such trigger")
	ErrConflict = errdefs.New(errdefs.Conflict, "trigger_conflict", "the subject overlaps another trigger's")
)

// Store keeps triggers and fires the ones whose functions this
// controller owns.
type Store struct {
	js     jetstream.JetStream
	defs   jetstream.KeyValue
	states jetstream.KeyValue
	queue  *async.Queue
	owns   func(function string) bool
	log    *slog.Logger

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex // guards the maps below; a leaf
	triggers map[string]Trigger
	next     map[string]time.Time          // schedule trigger id → its next tick, once known
	forwards map[string]context.CancelFunc // NATS trigger id → its running forwarder
}

// Open opens the trigger buckets and starts firing until Close. owns says
// whether this controller owns a function now.
func Open(ctx context.Context, nc *nats.Conn, queue *async.Queue, owns func(string) bool, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	s := &Store{js: js, queue: queue, owns: owns, log: log, triggers: map[string]Trigger{}, next: map[string]time.Time{}, forwards: map[string]context.CancelFunc{}}
	if s.defs, err = jsstore.EnsureKV(ctx, js, log, "triggers bucket", jetstream.KeyValueConfig{
		Bucket: triggersBucket, History: 1, Storage: jetstream.FileStorage, Description: "Baton triggers",
	}); err != nil {
		return nil, err
	}
	if s.states, err = jsstore.EnsureKV(ctx, js, log, "trigger state bucket", jetstream.KeyValueConfig{
		Bucket: stateBucket, History: 1, Storage: jetstream.FileStorage, Description: "Baton triggers' last ticks and counts",
	}); err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.run(runCtx)
	}()
	return s, nil
}

// Close stops firing and waits.
func (s *Store) Close() {
	s.cancel()
	s.wg.Wait()
}

// Add validates and stores a trigger.
func (s *Store) Add(ctx context.Context, t Trigger) (Trigger, error) {
	if err := function.ValidateName(t.Function); err != nil {
		return Trigger{}, err
	}
	t.ID, t.Created = requestid.New(), time.Now().UTC()
	switch {
	case t.Schedule != "" && t.NATSSubject != "":
		return Trigger{}, fmt.Errorf("%w: give a schedule or a NATS subject, not both", ErrInvalid)
	case t.Schedule != "":
		t.Kind = KindSchedule
		if _, err := schedule.ParseAt(t.Schedule, t.Created); err != nil {
			return Trigger{}, err
		}
		if len(t.Event) == 0 {
			t.Event = json.RawMessage(`{}`)
		}
		if !json.Valid(t.Event) {
			return Trigger{}, fmt.Errorf("%w: the event must be valid JSON", ErrInvalid)
		}
	case t.NATSSubject != "":
		t.Kind = KindNATS
		if err := validSubject(t.NATSSubject); err != nil {
			return Trigger{}, err
		}
		if len(t.Event) > 0 {
			return Trigger{}, fmt.Errorf("%w: a NATS trigger's event is each message; --event applies to schedules", ErrInvalid)
		}
		if _, err := s.ensureStream(ctx, t); err != nil {
			return Trigger{}, err
		}
	default:
		return Trigger{}, fmt.Errorf("%w: give a schedule (rate(...) or cron(...)) or a NATS subject", ErrInvalid)
	}
	data, err := json.Marshal(t)
	if err != nil {
		return Trigger{}, err
	}
	// The first tick is the first after creation.
	if err := s.putState(ctx, t.ID, State{LastTick: t.Created}); err != nil {
		return Trigger{}, err
	}
	if _, err := s.defs.Create(ctx, t.ID, data); err != nil {
		return Trigger{}, jsstore.Unanswered(err)
	}
	s.remember(t)
	return t, nil
}

// validSubject accepts a NATS subject (wildcards allowed) outside Baton's
// own.
func validSubject(subj string) error {
	if len(subj) > 255 || strings.ContainsAny(subj, " \t\r\n") || strings.HasPrefix(subj, ".") || strings.HasSuffix(subj, ".") || strings.Contains(subj, "..") {
		return fmt.Errorf("%w: NATS subject %q is not a valid subject", ErrInvalid, subj)
	}
	for i, tok := range strings.Split(subj, ".") {
		if tok == ">" && i != strings.Count(subj, ".") {
			return fmt.Errorf("%w: NATS subject %q: > must be the last token", ErrInvalid, subj)
		}
		if strings.ContainsAny(tok, "*>") && len(tok) > 1 {
			return fmt.Errorf("%w: NATS subject %q: wildcards must be whole tokens", ErrInvalid, subj)
		}
	}
	first := strings.SplitN(subj, ".", 2)[0]
	if first == "baton" || first == "$JS" || first == "$KV" || first == "$O" || first == "$SYS" || first == "_INBOX" || first == ">" || first == "*" {
		return fmt.Errorf("%w: NATS subject %q would capture Baton's or NATS's own subjects", ErrInvalid, subj)
	}
	return nil
}

// ensureStream makes the stream that keeps a NATS trigger's messages until
// they became invocations.
func (s *Store) ensureStream(ctx context.Context, t Trigger) (jetstream.Stream, error) {
	st, err := jsstore.EnsureStream(ctx, s.js, s.log, "trigger stream", jetstream.StreamConfig{
		Name: streamPrefix + streamName(t.ID), Subjects: []string{t.NATSSubject}, Storage: jetstream.FileStorage,
		Retention: jetstream.WorkQueuePolicy, MaxAge: 7 * 24 * time.Hour,
		Description: "Baton trigger " + t.ID + " of function " + t.Function,
	})
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeSubjectOverlap {
			return nil, fmt.Errorf("%w: %s", ErrConflict, t.NATSSubject)
		}
		return nil, err
	}
	return st, nil
}

func streamName(id string) string { return strings.ReplaceAll(id, "-", "") }

// List returns the triggers (of one function, if named) with their state.
func (s *Store) List(ctx context.Context, fn string) ([]Trigger, []State, error) {
	if err := s.reload(ctx); err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	var out []Trigger
	for _, t := range s.triggers {
		if fn == "" || t.Function == fn {
			out = append(out, t)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Trigger) int { return a.Created.Compare(b.Created) })
	states := make([]State, len(out))
	for i, t := range out {
		states[i], _ = s.state(ctx, t.ID)
	}
	return out, states, nil
}

// Remove deletes a trigger (and a NATS trigger's stream).
func (s *Store) Remove(ctx context.Context, id string) error {
	if !requestid.Valid(id) {
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	e, err := s.defs.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if err != nil {
		return jsstore.Unanswered(err)
	}
	var t Trigger
	_ = json.Unmarshal(e.Value(), &t)
	if err := s.defs.Delete(ctx, id); err != nil {
		return jsstore.Unanswered(err)
	}
	_ = s.states.Delete(ctx, id)
	if t.Kind == KindNATS {
		if err := s.js.DeleteStream(ctx, streamPrefix+streamName(id)); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			s.log.Warn("remove a trigger's stream", "trigger", id, "err", err)
		}
	}
	s.forget(id)
	return nil
}

func (s *Store) remember(t Trigger) {
	s.mu.Lock()
	s.triggers[t.ID] = t
	s.mu.Unlock()
}

func (s *Store) forget(id string) {
	s.mu.Lock()
	delete(s.triggers, id)
	delete(s.next, id)
	if stop, ok := s.forwards[id]; ok {
		stop()
		delete(s.forwards, id)
	}
	s.mu.Unlock()
}

// reload reads every trigger (other controllers add and remove them).
func (s *Store) reload(ctx context.Context) error {
	lister, err := s.defs.ListKeys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return jsstore.Unanswered(err)
	}
	seen := map[string]Trigger{}
	if lister != nil {
		for key := range lister.Keys() {
			e, err := s.defs.Get(ctx, key)
			if err != nil {
				continue
			}
			var t Trigger
			if json.Unmarshal(e.Value(), &t) == nil {
				seen[t.ID] = t
			}
		}
	}
	s.mu.Lock()
	for id := range s.triggers {
		if _, ok := seen[id]; !ok {
			if stop, ok := s.forwards[id]; ok {
				stop()
				delete(s.forwards, id)
			}
		}
	}
	s.triggers = seen
	s.mu.Unlock()
	return nil
}

func (s *Store) state(ctx context.Context, id string) (State, uint64) {
	e, err := s.states.Get(ctx, id)
	if err != nil {
		return State{}, 0
	}
	var st State
	_ = json.Unmarshal(e.Value(), &st)
	return st, e.Revision()
}

func (s *Store) putState(ctx context.Context, id string, st State) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	_, err = s.states.Put(ctx, id, data)
	return jsstore.Unanswered(err)
}

// run fires schedules every 100 ms and rereads the triggers every 2 s.
func (s *Store) run(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var reloaded time.Time
	for {
		if time.Since(reloaded) > 2*time.Second {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := s.reload(rctx); err != nil && ctx.Err() == nil {
				s.log.Warn("triggers: reload", "err", err)
			}
			cancel()
			reloaded = time.Now()
		}
		s.mu.Lock()
		var mine []Trigger
		for _, t := range s.triggers {
			if s.owns(t.Function) {
				mine = append(mine, t)
			}
		}
		s.mu.Unlock()
		for _, t := range mine {
			switch t.Kind {
			case KindSchedule:
				s.fire(ctx, t)
			case KindNATS:
				s.forward(ctx, t)
			}
		}
		select {
		case <-ctx.Done():
			s.stopForwards()
			return
		case <-tick.C:
		}
	}
}

func (s *Store) stopForwards() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, stop := range s.forwards {
		stop()
		delete(s.forwards, id)
	}
}

// fire sends the ticks of a schedule that are due. Each tick's event has
// the idempotency key trigger-ID-TICK: whoever fires it, it is stored once.
// Ticks older than grace were missed (no controller could fire them) and
// are counted as such.
func (s *Store) fire(ctx context.Context, t Trigger) {
	sched, err := schedule.ParseAt(t.Schedule, t.Created)
	if err != nil {
		return
	}
	s.mu.Lock()
	next, known := s.next[t.ID]
	s.mu.Unlock()
	if known && time.Now().Before(next) {
		return
	}
	st, rev := s.state(ctx, t.ID)
	if st.LastTick.IsZero() {
		st.LastTick = t.Created
	}
	now := time.Now()
	if next := sched.Next(st.LastTick); next.IsZero() || next.After(now) {
		s.mu.Lock()
		s.next[t.ID] = next
		if next.IsZero() {
			s.next[t.ID] = now.Add(time.Hour) // never again: look now and then
		}
		s.mu.Unlock()
		return
	}
	ticks := schedule.Ticks(sched, st.LastTick, now, 100000)
	for _, tick := range ticks {
		if now.Sub(tick) > grace {
			st.Missed++
			st.LastMissed = tick
			st.LastTick = tick
			continue
		}
		key := fmt.Sprintf("trigger-%s-%d", t.ID, tick.UnixNano())
		if _, err := s.queue.Enqueue(ctx, t.Function, t.Event, key); err != nil {
			st.LastError = err.Error()
			s.log.Warn("trigger: fire", "trigger", t.ID, "function", t.Function, "tick", tick, "err", err)
			break
		}
		st.Fired++
		st.LastTick, st.LastError = tick, ""
	}
	if st.Missed > 0 && len(ticks) > 0 && now.Sub(ticks[0]) > grace {
		s.log.Warn("trigger: ticks missed while no controller could fire them", "trigger", t.ID, "function", t.Function,
			"missedTotal", st.Missed, "lastMissed", st.LastMissed)
	}
	// Conditional: of two controllers firing during a hand-over, one
	// counts (the events themselves are deduplicated by key).
	if err := s.updateState(ctx, t.ID, st, rev); err != nil {
		s.log.Debug("trigger: save state", "trigger", t.ID, "err", err)
	}
	s.mu.Lock()
	s.next[t.ID] = sched.Next(st.LastTick)
	s.mu.Unlock()
}

func (s *Store) updateState(ctx context.Context, id string, st State, rev uint64) error {
	if rev == 0 {
		return s.putState(ctx, id, st)
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	_, err = s.states.Update(ctx, id, data, rev)
	return jsstore.Unanswered(err)
}

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

func (s *Store) forwardLoop(ctx context.Context, t Trigger) {
	stream, err := s.ensureStream(ctx, t)
	if err != nil {
		s.log.Warn("trigger: stream", "trigger", t.ID, "err", err)
		return
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: "forward", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxDeliver: -1,
	})
	if err != nil {
		s.log.Warn("trigger: consumer", "trigger", t.ID, "err", err)
		return
	}
	for ctx.Err() == nil && s.owns(t.Function) {
		batch, err := cons.Fetch(64, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			continue
		}
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				_ = m.Term()
				continue
			}
			data := m.Data()
			if !json.Valid(data) {
				data, _ = json.Marshal(string(data))
			}
			ev, _ := json.Marshal(natsEvent{Subject: m.Subject(), Data: data})
			key := fmt.Sprintf("nats-%s-%d", t.ID, meta.Sequence.Stream)
			if _, err := s.queue.Enqueue(ctx, t.Function, ev, key); err != nil {
				s.log.Warn("trigger: forward a message", "trigger", t.ID, "err", err)
				_ = m.NakWithDelay(time.Second)
				continue
			}
			_ = m.DoubleAck(ctx)
			st, _ := s.state(ctx, t.ID)
			st.Fired++
			_ = s.putState(ctx, t.ID, st)
		}
	}
}
