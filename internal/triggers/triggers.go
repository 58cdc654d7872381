// Package triggers turns schedules and NATS messages into asynchronous
// invocations. A trigger is stored in JetStream KV; the controller that
// owns the trigger's function fires it. Every firing is an async
// invocation with an idempotency key derived from the tick (or the
// message's stream sequence), so that two controllers that both fire
// during a hand-over, or a controller that restarts, store one event.
//
// Schedules (fire.go): ticks later than a grace are not fired late but
// reported as missed, with when (State.MissedTicks). NATS triggers
// (forward.go) take messages from a stream through a durable consumer, on
// Baton's NATS or on an external server (external.go) that the trigger
// reaches with its own connection and credentials.
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
	// maxMissedRuns bounds the runs of missed ticks a state keeps (the
	// latest); Missed counts them all.
	maxMissedRuns = 10
	// forwardDurable is the durable consumer on a stream Baton made for a
	// trigger (the name predates external sources, and a work-queue stream
	// takes one unfiltered consumer, so it stays).
	forwardDurable = "forward"
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
	// NATSSubject: every message published on it (on the cluster's NATS,
	// or on NATS when set) becomes an invocation.
	NATSSubject string `json:"natsSubject,omitempty"`
	// NATS is the external server of a NATS trigger; nil: Baton's own.
	NATS    *External `json:"nats,omitempty"`
	Created time.Time `json:"created"`
}

// Stream is the stream a NATS trigger consumes: Baton's own for it, or the
// one the user named on an external server.
func (t Trigger) Stream() string {
	if t.NATS != nil && t.NATS.Stream != "" {
		return t.NATS.Stream
	}
	return streamPrefix + streamName(t.ID)
}

// Consumer is the trigger's durable consumer on Stream.
func (t Trigger) Consumer() string {
	if t.NATS != nil && t.NATS.Stream != "" {
		// One stream of the user's may feed several triggers.
		return "baton-trigger-" + streamName(t.ID)
	}
	return forwardDurable
}

// State is what a trigger has done.
type State struct {
	// LastTick is the last tick fired or missed (schedules).
	LastTick time.Time `json:"lastTick,omitzero"`
	Fired    int64     `json:"fired"`
	// Missed counts ticks that passed while no controller could fire them;
	// MissedTicks are the latest runs of them (at most maxMissedRuns,
	// oldest first).
	Missed      int64       `json:"missed"`
	LastMissed  time.Time   `json:"lastMissed,omitzero"`
	MissedTicks []MissedRun `json:"missedTicks,omitempty"`
	LastError   string      `json:"lastError,omitempty"`
}

// MissedRun is consecutive ticks of a schedule that were missed: an
// outage, as seen by the schedule.
type MissedRun struct {
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
	Count int64     `json:"count"`
	// Noticed is when a controller counted them missed.
	Noticed time.Time `json:"noticed"`
}

// Errors of the trigger API.
var (
	ErrInvalid  = errdefs.New(errdefs.Invalid, "invalid_trigger", "invalid trigger")
	ErrNotFound = errdefs.New(errdefs.NotFound, "trigger_not_found", "no such trigger")
	ErrConflict = errdefs.New(errdefs.Conflict, "trigger_conflict", "the subject overlaps another trigger's")
)

// Queue is where firings go: async.Queue.
type Queue interface {
	Enqueue(ctx context.Context, fn string, payload []byte, key string) (async.Accepted, error)
	// Claimed says whether an idempotency key was used (within the dedup
	// window), without using it.
	Claimed(ctx context.Context, fn, key string) (string, bool, error)
}

// Store keeps triggers and fires the ones whose functions this
// controller owns.
type Store struct {
	js     jetstream.JetStream
	defs   jetstream.KeyValue
	states jetstream.KeyValue
	queue  Queue
	owns   func(function string) bool
	log    *slog.Logger

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex // guards the maps below; a leaf
	triggers map[string]Trigger
	next     map[string]time.Time          // schedule trigger id → its next tick, once known
	forwards map[string]context.CancelFunc // NATS trigger id → its running forwarder
	noted    map[string]string             // NATS trigger id → the last error written to its state
}

// Open opens the trigger buckets and starts firing until Close. owns says
// whether this controller owns a function now.
func Open(ctx context.Context, nc *nats.Conn, queue Queue, owns func(string) bool, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	s := &Store{js: js, queue: queue, owns: owns, log: log, triggers: map[string]Trigger{}, next: map[string]time.Time{}, forwards: map[string]context.CancelFunc{}, noted: map[string]string{}}
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

// Add validates and stores a trigger. A NATS trigger's stream and
// consumer are made first (on an external server: after connecting with
// its credentials), so that a source that cannot work is refused now; a
// refused trigger leaves nothing behind, here or there.
func (s *Store) Add(ctx context.Context, t Trigger) (Trigger, error) {
	if err := function.ValidateName(t.Function); err != nil {
		return Trigger{}, err
	}
	t.ID, t.Created = requestid.New(), time.Now().UTC()
	undo := func() {}
	switch {
	case t.Schedule != "" && t.NATSSubject != "":
		return Trigger{}, fmt.Errorf("%w: give a schedule or a NATS subject, not both", ErrInvalid)
	case t.Schedule != "":
		t.Kind = KindSchedule
		if t.NATS != nil {
			return Trigger{}, fmt.Errorf("%w: a NATS server applies to NATS subjects, not to schedules", ErrInvalid)
		}
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
		if err := validSubject(t.NATSSubject, t.NATS != nil); err != nil {
			return Trigger{}, err
		}
		if len(t.Event) > 0 {
			return Trigger{}, fmt.Errorf("%w: a NATS trigger's event is each message; --event applies to schedules", ErrInvalid)
		}
		if t.NATS != nil {
			if err := t.NATS.normalize(); err != nil {
				return Trigger{}, err
			}
			// Bounded: a server that is there but whose JetStream never
			// answers must not hold the request.
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			var err error
			undo, err = s.prepareExternal(pctx, t)
			cancel()
			if err != nil {
				return Trigger{}, err
			}
			break
		}
		if _, err := s.ensureStream(ctx, s.js, t); err != nil {
			return Trigger{}, err
		}
		undo = func() { s.deleteStream(s.js, t) }
	default:
		if t.NATS != nil {
			return Trigger{}, fmt.Errorf("%w: a NATS server needs a NATS subject", ErrInvalid)
		}
		return Trigger{}, fmt.Errorf("%w: give a schedule (rate(...) or cron(...)) or a NATS subject", ErrInvalid)
	}
	stored, err := s.store(ctx, t)
	if err != nil {
		undo()
		return Trigger{}, err
	}
	s.remember(stored)
	return stored, nil
}

// store writes a new trigger's state, then the trigger.
func (s *Store) store(ctx context.Context, t Trigger) (Trigger, error) {
	data, err := json.Marshal(t)
	if err != nil {
		return Trigger{}, err
	}
	// The first tick is the first after creation.
	if err := s.putState(ctx, t.ID, State{LastTick: t.Created}); err != nil {
		return Trigger{}, err
	}
	if _, err := s.defs.Create(ctx, t.ID, data); err != nil {
		_ = s.states.Delete(ctx, t.ID)
		return Trigger{}, jsstore.Unanswered(err)
	}
	return t, nil
}

// validSubject accepts a NATS subject (wildcards allowed) outside NATS's
// own and, on Baton's NATS, outside Baton's.
func validSubject(subj string, external bool) error {
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
	if first == "baton" && !external {
		return fmt.Errorf("%w: NATS subject %q would capture Baton's own subjects", ErrInvalid, subj)
	}
	if first == "$JS" || first == "$KV" || first == "$O" || first == "$SYS" || first == "_INBOX" || first == ">" || first == "*" {
		return fmt.Errorf("%w: NATS subject %q would capture NATS's own subjects", ErrInvalid, subj)
	}
	return nil
}

// ensureStream makes the stream that keeps a NATS trigger's messages until
// they became invocations (Baton's own stream for the trigger, on js).
func (s *Store) ensureStream(ctx context.Context, js jetstream.JetStream, t Trigger) (jetstream.Stream, error) {
	desc := "Baton trigger " + t.ID + " of function " + t.Function
	st, err := jsstore.EnsureStream(ctx, js, s.log, "trigger stream", jetstream.StreamConfig{
		Name: t.Stream(), Subjects: []string{t.NATSSubject}, Storage: jetstream.FileStorage,
		Retention: jetstream.WorkQueuePolicy, MaxAge: 7 * 24 * time.Hour, Description: desc,
	})
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeSubjectOverlap {
			if t.NATS == nil {
				return nil, fmt.Errorf("%w: %s", ErrConflict, t.NATSSubject)
			}
			// On someone else's server the subject is likely captured by
			// a stream of theirs: say which, and how to use it.
			hint := ""
			if name, err := js.StreamNameBySubject(ctx, t.NATSSubject); err == nil && name != "" {
				hint = fmt.Sprintf(": stream %s captures it; name it (--nats-stream %s) to consume from it", name, name)
			}
			return nil, fmt.Errorf("%w: %s overlaps the subjects of a stream on NATS at %s%s",
				ErrConflict, t.NATSSubject, t.NATS.servers(), hint)
		}
		return nil, err
	}
	return st, nil
}

// deleteStream deletes the stream Baton made for a trigger, best effort.
func (s *Store) deleteStream(js jetstream.JetStream, t Trigger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, t.Stream()); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		s.log.Warn("remove a trigger's stream", "trigger", t.ID, "stream", t.Stream(), "err", err)
	}
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
		var err error
		if states[i], _, err = s.state(ctx, t.ID); err != nil {
			return nil, nil, err
		}
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
	// Stop forwarding here before the source goes; another controller
	// stops at its next reload.
	s.forget(id)
	switch {
	case t.Kind != KindNATS:
	case t.NATS == nil:
		s.deleteStream(s.js, t)
	default:
		s.cleanupExternal(ctx, t)
	}
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
	delete(s.noted, id)
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
			delete(s.next, id)
			delete(s.noted, id)
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

// state reads a trigger's state; a trigger without one (removed a moment
// ago) has the zero state and revision 0.
func (s *Store) state(ctx context.Context, id string) (State, uint64, error) {
	e, err := s.states.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return State{}, 0, nil
	}
	if err != nil {
		return State{}, 0, jsstore.Unanswered(err)
	}
	var st State
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return State{}, 0, fmt.Errorf("trigger %s: state: %w", id, err)
	}
	return st, e.Revision(), nil
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
