// Package async is Baton's asynchronous invocation: events accepted into
// a JetStream stream (the global bus) before the caller hears 202, run at
// least once by the controller that owns their function, retried with
// backoff, and sent to a destination (another function or a dead-letter
// queue) when they succeed or finally fail. The state of every invocation
// lives in a KV bucket for a bounded time.
package async

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/requestid"
	"github.com/baton-faas/baton/internal/store/jsstore"
)

// Names in JetStream.
const (
	eventsStream   = "BATON_ASYNC"
	eventsPrefix   = "baton.async."
	dlqStream      = "BATON_DLQ"
	dlqPrefix      = "baton.dlq."
	statesBucket   = "baton_invocations"
	idempotencyKV  = "baton_idempotency"
	consumerPrefix = "async-"
)

// Headers of an event message.
const (
	hdrID       = "Baton-Invocation-Id"
	hdrFunction = "Baton-Function"
	hdrOrigin   = "Baton-Origin" // a DLQ entry's function
	hdrReason   = "Baton-Condition"
	// hdrStep marks a workflow step's event (its value is the step's
	// attempt): it runs once, keeps its whole result and goes to no
	// destination; the workflow's Retry decides what happens next.
	hdrStep = "Baton-Workflow-Step"
	// hdrCustom carries a step's client-context fields (JSON).
	hdrCustom = "Baton-Client-Custom"
	// A function's call of another (Queue.Call): the caller's
	// application, and "true" when the result may be a reference.
	hdrCallerApp = "Baton-Caller-App"
	hdrByRef     = "Baton-By-Ref"
)

// Options configure the queue.
type Options struct {
	// DedupWindow is how long an idempotency key maps to its first
	// invocation (default 10 minutes).
	DedupWindow time.Duration
	// Retention is how long an invocation's state and result are kept
	// after its last change (default 24 hours).
	Retention time.Duration
	// MaxResultBytes bounds a result kept in the state (default 256 KiB);
	// a larger one is reported as truncated.
	MaxResultBytes int
	Logger         *slog.Logger
}

// Queue is the durable side: accept, look up, dead-letter.
type Queue struct {
	js     jetstream.JetStream
	events jetstream.Stream
	dlq    jetstream.Stream
	states jetstream.KeyValue
	idem   jetstream.KeyValue
	opts   Options
	log    *slog.Logger
}

// ErrUnknown: no state of that invocation (never accepted, or older than
// the retention).
var ErrUnknown = errdefs.New(errdefs.NotFound, "invocation_not_found", "no such asynchronous invocation")

// errIdempotencyChurn: a key kept expiring between being found and read
// (only with a dedup window far shorter than a round trip); retrying is
// safe.
var errIdempotencyChurn = errdefs.New(errdefs.Unavailable, "idempotency_key_churn", "idempotency key churning; retry")

// Open creates or opens the stream, buckets and dead-letter stream.
func Open(ctx context.Context, nc *nats.Conn, o Options) (*Queue, error) {
	if o.DedupWindow <= 0 {
		o.DedupWindow = 10 * time.Minute
	}
	if o.Retention <= 0 {
		o.Retention = 24 * time.Hour
	}
	if o.MaxResultBytes <= 0 {
		o.MaxResultBytes = 256 << 10
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("async: %w", err)
	}
	q := &Queue{js: js, opts: o, log: o.Logger}
	// Work-queue retention: an event leaves the stream when its outcome
	// is settled (acknowledged); one consumer per function.
	q.events, err = jsstore.EnsureStream(ctx, js, o.Logger, "async events stream", jetstream.StreamConfig{
		Name: eventsStream, Subjects: []string{eventsPrefix + ">"}, Storage: jetstream.FileStorage,
		Retention: jetstream.WorkQueuePolicy, Duplicates: 2 * time.Minute,
		// Events older than the longest maxEventAge expire anyway.
		MaxAge: 7 * time.Hour, Description: "Baton asynchronous invocations waiting to run",
	})
	if err != nil {
		return nil, err
	}
	q.dlq, err = jsstore.EnsureStream(ctx, js, o.Logger, "dead-letter stream", jetstream.StreamConfig{
		Name: dlqStream, Subjects: []string{dlqPrefix + ">"}, Storage: jetstream.FileStorage,
		MaxAge: 14 * 24 * time.Hour, Description: "Baton dead-lettered asynchronous invocations",
	})
	if err != nil {
		return nil, err
	}
	q.states, err = jsstore.EnsureKV(ctx, js, o.Logger, "invocations bucket", jetstream.KeyValueConfig{
		Bucket: statesBucket, History: 1, TTL: o.Retention, Storage: jetstream.FileStorage,
		Description: "Baton asynchronous invocations: state, attempts, result",
	})
	if err != nil {
		return nil, err
	}
	q.idem, err = jsstore.EnsureKV(ctx, js, o.Logger, "idempotency bucket", jetstream.KeyValueConfig{
		Bucket: idempotencyKV, History: 1, TTL: o.DedupWindow, Storage: jetstream.FileStorage,
		Description: "Baton idempotency keys of asynchronous invocations",
	})
	if err != nil {
		return nil, err
	}
	return q, nil
}

// Attach opens the stream and buckets a controller created (Open),
// changing none of their settings: for a worker, which enqueues calls
// and awaits them but must not reset the limits the controllers' flags
// set. It fails while no controller has created them yet.
func Attach(ctx context.Context, nc *nats.Conn, log *slog.Logger) (*Queue, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("async: %w", err)
	}
	q := &Queue{js: js, log: log}
	notYet := func(what string, err error) error {
		if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) {
			return errdefs.New(errdefs.Unavailable, "async_unavailable",
				fmt.Sprintf("the asynchronous queue's %s does not exist yet: no controller has started", what))
		}
		return fmt.Errorf("open the asynchronous queue's %s: %w", what, jsstore.Unanswered(err))
	}
	if q.events, err = js.Stream(ctx, eventsStream); err != nil {
		return nil, notYet("events stream", err)
	}
	if q.dlq, err = js.Stream(ctx, dlqStream); err != nil {
		return nil, notYet("dead-letter stream", err)
	}
	if q.states, err = js.KeyValue(ctx, statesBucket); err != nil {
		return nil, notYet("invocations bucket", err)
	}
	if q.idem, err = js.KeyValue(ctx, idempotencyKV); err != nil {
		return nil, notYet("idempotency bucket", err)
	}
	return q, nil
}

func subject(fn string) string { return eventsPrefix + fn }

// Accepted is the outcome of Enqueue.
type Accepted struct {
	ID string
	// Duplicate: the idempotency key was seen within the window; ID is
	// the first invocation's and nothing new was stored.
	Duplicate bool
}

// Enqueue stores an event for fn and returns once JetStream acknowledged
// it (replicated in a cluster). With a key, a repeat within the dedup
// window returns the first invocation's id and stores nothing.
func (q *Queue) Enqueue(ctx context.Context, fn string, payload []byte, key string) (Accepted, error) {
	return q.enqueue(ctx, fn, payload, key, eventMeta{})
}

// EnqueueStep stores a workflow step's event for fn: the global bus of
// workflows. It runs on the controller that serves fn, once (an attempt
// cut short by a crash runs again), with attempt as the function's
// attempt; its outcome is awaited with Await. key makes a repeat of the
// same step attempt find the first event.
func (q *Queue) EnqueueStep(ctx context.Context, fn string, payload []byte, key string, s Step) (Accepted, error) {
	return q.enqueue(ctx, fn, payload, key, eventMeta{step: max(s.Attempt, 1), custom: s.Custom, byRef: s.ByRef})
}

// Step is a workflow step's event.
type Step struct {
	// Attempt is the step's attempt as its function sees it.
	Attempt int
	// Custom is added to the function's client context.
	Custom map[string]string
	// ByRef lets the function's worker keep a large output and answer
	// with a reference (Invocation.ResultRef), which the next step pulls.
	ByRef bool
}

// Call is a function's synchronous call of another through its Runtime
// API, when the caller's worker has no controller beside it.
type Call struct {
	// CallerApp is the calling function's application: a payload
	// reference of another application is resolved (inline) before the
	// callee gets it.
	CallerApp string
	// ByRef lets the callee's worker keep a large result and answer with
	// a reference (Invocation.ResultRef), which the caller pulls.
	ByRef bool
}

// Call stores a function's call of fn and waits for its end: it runs
// like a workflow step (once, on the controller that serves fn, again
// only if cut short by a crash; whole result, no destination). The wait
// is subscribed before the event exists, so the end announced by the
// dispatcher cannot be missed; the state is read now and then in case
// an announcement was lost.
func (q *Queue) Call(ctx context.Context, fn string, payload []byte, c Call) (Invocation, error) {
	id := requestid.New()
	sub, err := q.subscribeDone(ctx, id)
	if err != nil {
		return Invocation{}, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	// No first state: nobody looks a call up by id, and the dispatcher
	// writes one when it takes the event (one replicated write less).
	if err := q.publish(ctx, fn, id, payload, eventMeta{step: 1, callerApp: c.CallerApp, byRef: c.ByRef, noState: true}); err != nil {
		return Invocation{}, err
	}
	return q.awaitDone(ctx, sub, id)
}

// eventMeta is what an event's headers carry besides its id and function.
type eventMeta struct {
	step      int // > 0: a step's (or call's) attempt
	custom    map[string]string
	callerApp string
	byRef     bool
	noState   bool // publish stores no first state
}

func (q *Queue) enqueue(ctx context.Context, fn string, payload []byte, key string, meta eventMeta) (Accepted, error) {
	id := requestid.New()
	if key != "" {
		existing, fresh, err := q.claimKey(ctx, fn, key, id)
		if err != nil {
			return Accepted{}, err
		}
		if !fresh {
			// The first submission may have died between claiming the
			// key and storing its event: storing it again under the same
			// id is harmless (the stream drops a duplicate id).
			_, err := q.states.Get(ctx, existing)
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
				if err := q.publish(ctx, fn, existing, payload, meta); err != nil {
					return Accepted{}, err
				}
			case err != nil:
				// Unknown whether the event is stored: the caller tries
				// again rather than take an id that may never run.
				return Accepted{}, fmt.Errorf("look up the first submission of the key: %w", jsstore.Unanswered(err))
			}
			return Accepted{ID: existing, Duplicate: true}, nil
		}
	}
	if err := q.publish(ctx, fn, id, payload, meta); err != nil {
		return Accepted{}, err
	}
	return Accepted{ID: id}, nil
}

// claimKey maps an idempotency key to id unless it maps to another
// invocation already; it returns the id the key maps to.
func (q *Queue) claimKey(ctx context.Context, fn, key, id string) (string, bool, error) {
	k := idemKey(fn, key)
	// The key can expire between a Create that finds it and the Get that
	// reads it: then it is free again and the next Create takes it. A few
	// rounds are plenty: each lost one means the key changed hands meanwhile.
	for range 3 {
		if _, err := q.idem.Create(ctx, k, []byte(id)); err == nil {
			return id, true, nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return "", false, fmt.Errorf("idempotency key: %w", jsstore.Unanswered(err))
		}
		e, err := q.idem.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return "", false, fmt.Errorf("idempotency key: %w", jsstore.Unanswered(err))
		}
		return string(e.Value()), false, nil
	}
	return "", false, fmt.Errorf("idempotency key %q of %s: it expired and was claimed again three times in a row: %w", key, fn, errIdempotencyChurn)
}

func idemKey(fn, key string) string {
	sum := sha256.Sum256([]byte(fn + "\x00" + key))
	return hex.EncodeToString(sum[:16])
}

// Claimed says whether an idempotency key of fn was used within the dedup
// window, and by which invocation, without claiming it: a trigger that
// restarts asks it of ticks it may have fired before it could note so.
func (q *Queue) Claimed(ctx context.Context, fn, key string) (string, bool, error) {
	e, err := q.idem.Get(ctx, idemKey(fn, key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("idempotency key: %w", jsstore.Unanswered(err))
	}
	return string(e.Value()), true, nil
}

// publish stores the event and its first state.
func (q *Queue) publish(ctx context.Context, fn, id string, payload []byte, meta eventMeta) error {
	msg := nats.NewMsg(subject(fn))
	msg.Data = payload
	msg.Header.Set(hdrID, id)
	msg.Header.Set(hdrFunction, fn)
	if meta.step > 0 {
		msg.Header.Set(hdrStep, strconv.Itoa(meta.step))
	}
	if meta.callerApp != "" {
		msg.Header.Set(hdrCallerApp, meta.callerApp)
	}
	if meta.byRef {
		msg.Header.Set(hdrByRef, "true")
	}
	if len(meta.custom) > 0 {
		raw, err := json.Marshal(meta.custom)
		if err != nil {
			return fmt.Errorf("encode the client context: %w", err)
		}
		msg.Header.Set(hdrCustom, string(raw))
	}
	if _, err := q.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id)); err != nil {
		return fmt.Errorf("store the event: %w", jsstore.Unanswered(err))
	}
	now := time.Now().UTC()
	st := Invocation{ID: id, Function: fn, State: StateQueued, Created: now, Updated: now, Step: meta.step > 0}
	if meta.noState {
		return nil
	}
	// Only if nothing is there: the dispatcher may have run the event
	// already, and its state must not go back to queued.
	if err := q.create(ctx, st); err != nil {
		// The event is stored and will run; its state is written then.
		q.log.Warn("async invocation accepted, its first state not written", "id", id, "err", err)
	}
	return nil
}

// Await returns an invocation's state once it is final (or ctx ends).
// It listens for the dispatcher's announcement of a step's or call's end
// (doneSubject), reading the state once first (it may have ended before)
// and now and then after (an announcement can be lost).
func (q *Queue) Await(ctx context.Context, id string) (Invocation, error) {
	sub, err := q.subscribeDone(ctx, id)
	if err != nil {
		return Invocation{}, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if inv, err := q.latest(ctx, id); err == nil && Final(inv.State) {
		return inv, nil
	}
	return q.awaitDone(ctx, sub, id)
}

// doneSubject is where the end of a step's or call's event is announced
// (core NATS, not stored; outside the events stream's subjects), so that
// its waiter needs no watch (a consumer) of its own on the states bucket.
func doneSubject(id string) string { return "baton.asyncdone." + id }

// maxDoneNotice bounds the state sent with an announcement; a larger one
// is announced empty and read from the bucket.
const maxDoneNotice = 64 << 10

func (q *Queue) subscribeDone(ctx context.Context, id string) (*nats.Subscription, error) {
	nc := q.js.Conn()
	sub, err := nc.SubscribeSync(doneSubject(id))
	if err != nil {
		return nil, fmt.Errorf("listen for the end of %s: %w", id, err)
	}
	// The server has the subscription once the flush returns (a flush
	// needs a deadline).
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := nc.FlushWithContext(fctx); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("listen for the end of %s: %w", id, jsstore.Unanswered(err))
	}
	return sub, nil
}

func (q *Queue) awaitDone(ctx context.Context, sub *nats.Subscription, id string) (Invocation, error) {
	for wait := time.Second; ; wait = min(2*wait, 10*time.Second) {
		wctx, cancel := context.WithTimeout(ctx, wait)
		msg, err := sub.NextMsgWithContext(wctx)
		cancel()
		if err == nil {
			var inv Invocation
			if len(msg.Data) > 0 && json.Unmarshal(msg.Data, &inv) == nil && inv.ID == id && Final(inv.State) {
				return inv, nil
			}
		}
		if ctx.Err() != nil {
			return Invocation{}, ctx.Err()
		}
		if inv, err := q.latest(ctx, id); err == nil && Final(inv.State) {
			return inv, nil
		}
	}
}

// announceDone tells a step's or call's waiter that it ended.
func (q *Queue) announceDone(inv Invocation) {
	var data []byte
	if b, err := json.Marshal(inv); err == nil && len(b) <= maxDoneNotice {
		data = b
	}
	if err := q.js.Conn().Publish(doneSubject(inv.ID), data); err != nil {
		q.log.Debug("async: announce the end of a step or call; its waiter reads the state", "id", inv.ID, "err", err)
	}
}

// latest reads a state from its bucket's leader (Get may be answered by
// a replica that has not applied the final write yet).
func (q *Queue) latest(ctx context.Context, id string) (Invocation, error) {
	e, err := jsstore.LatestGet(ctx, q.js, q.states, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Invocation{}, fmt.Errorf("%w: %q", ErrUnknown, id)
	}
	if err != nil {
		return Invocation{}, jsstore.Unanswered(err)
	}
	var inv Invocation
	if err := json.Unmarshal(e.Value(), &inv); err != nil {
		return Invocation{}, fmt.Errorf("decode invocation %s: %w", id, err)
	}
	return inv, nil
}

// Get returns an invocation's state.
func (q *Queue) Get(ctx context.Context, id string) (Invocation, error) {
	if !requestid.Valid(id) {
		return Invocation{}, fmt.Errorf("%w: %q", ErrUnknown, id)
	}
	e, err := q.states.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Invocation{}, fmt.Errorf("%w: %q", ErrUnknown, id)
	}
	if err != nil {
		return Invocation{}, jsstore.Unanswered(err)
	}
	var inv Invocation
	if err := json.Unmarshal(e.Value(), &inv); err != nil {
		return Invocation{}, fmt.Errorf("decode invocation %s: %w", id, err)
	}
	return inv, nil
}

func (q *Queue) create(ctx context.Context, inv Invocation) error {
	data, err := json.Marshal(inv)
	if err != nil {
		return err
	}
	_, err = q.states.Create(ctx, inv.ID, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil
	}
	return jsstore.Unanswered(err)
}

func (q *Queue) put(ctx context.Context, inv Invocation) error {
	data, err := json.Marshal(inv)
	if err != nil {
		return err
	}
	_, err = q.states.Put(ctx, inv.ID, data)
	return jsstore.Unanswered(err)
}

// Oldest returns when a function's oldest waiting event was accepted
// (events waiting for a retry keep their first acceptance time); ok is
// false when none waits.
func (q *Queue) Oldest(ctx context.Context, name string) (accepted time.Time, ok bool, err error) {
	msg, err := q.events.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subject(name)))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, jsstore.Unanswered(err)
	}
	return msg.Time, true, nil
}

// Depth is the number of events waiting (or running) per function.
func (q *Queue) Depth(ctx context.Context) (map[string]uint64, error) {
	info, err := q.events.Info(ctx, jetstream.WithSubjectFilter(eventsPrefix+">"))
	if err != nil {
		return nil, jsstore.Unanswered(err)
	}
	out := make(map[string]uint64, len(info.State.Subjects))
	for subj, n := range info.State.Subjects {
		out[subj[len(eventsPrefix):]] = n
	}
	return out, nil
}
