package async

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/workerapi"
)

// Runner is what the dispatcher needs of the controller.
type Runner interface {
	// Serving returns the function when this controller runs its events
	// now (it owns it); exists is false when it is not deployed at all.
	Serving(name string) (fn function.Function, serving, exists bool)
	// Backlogged says that the function's synchronous queue is long:
	// asynchronous events wait rather than add to it.
	Backlogged(name string, asyncSlots int) bool
	// Run invokes the function synchronously.
	Run(ctx context.Context, ev Event) Result
}

// Event is one run of an event as the Runner gets it.
type Event struct {
	Function string
	ID       string
	Payload  []byte
	// Attempt (1-based) is passed to the function.
	Attempt int
	// Custom is added to the function's client context (a workflow
	// step's execution and state).
	Custom map[string]string
	// CallerApp and ByRef come with a function's call of another
	// (Queue.Call): the caller's application, and whether a large
	// result may come back as a direct-transfer reference.
	CallerApp string
	ByRef     bool
}

// Result is a synchronous run's outcome: Err is nil for a success or a
// function error (FunctionError set).
type Result struct {
	Payload []byte
	// PayloadRef: Payload is a direct-transfer reference's marker, which
	// the caller resolves (only for an Event with ByRef).
	PayloadRef    bool
	FunctionError *workerapi.FunctionError
	Err           error
	Worker        string // where it ran, if it did
}

// Throttled reports an error under which the event did not run at all
// (the function's queue was full, no capacity, ownership moving): it is
// not an attempt and is tried again shortly.
func Throttled(err error) bool {
	class, code := errdefs.Classify(err)
	return class == errdefs.Overloaded || code == "ownership_moved" || code == "no_owner" || code == "shutting_down" ||
		code == "no_capacity" || code == "no_instance"
}

// DispatchOptions tune the dispatcher.
type DispatchOptions struct {
	// RetryBase is the wait before the first retry; each further one
	// waits twice as long, with ±25 % jitter, up to 5 minutes (default
	// 1 s).
	RetryBase time.Duration
	// Scan is how often every function's backlog is looked at, for
	// events whose notification was missed (default 5 s).
	Scan     time.Duration
	Observer Observer
	Logger   *slog.Logger
}

// Observer is told the backlog per function and how deliveries end.
type Observer interface {
	ObserveAsyncDepth(function string, depth int)
	// ObserveAsyncOldest is the age of the oldest waiting event (zero
	// when none waits).
	ObserveAsyncOldest(function string, age time.Duration)
	ObserveAsyncOutcome(function, outcome string)
}

// Outcomes of a delivery, besides the final states.
const (
	outcomeRetried   = "retried"
	outcomeThrottled = "throttled"
)

func (d *Dispatcher) outcome(fn, outcome string) {
	if d.opts.Observer != nil {
		d.opts.Observer.ObserveAsyncOutcome(fn, outcome)
	}
}

// Dispatcher runs the events of the functions this controller serves.
type Dispatcher struct {
	q    *Queue
	run  Runner
	opts DispatchOptions
	log  *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex // guards loops; a leaf
	loops map[string]bool
}

// Dispatch starts running events until Close.
func (q *Queue) Dispatch(r Runner, o DispatchOptions) (*Dispatcher, error) {
	if o.RetryBase <= 0 {
		o.RetryBase = time.Second
	}
	if o.Scan <= 0 {
		o.Scan = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dispatcher{q: q, run: r, opts: o, log: o.Logger, ctx: ctx, cancel: cancel, loops: map[string]bool{}}
	// Every accepted event is also a notification (core NATS sees the
	// stream's messages): the owner starts its function's loop at once.
	sub, err := q.js.Conn().Subscribe(eventsPrefix+">", func(m *nats.Msg) { d.Kick(strings.TrimPrefix(m.Subject, eventsPrefix)) })
	if err != nil {
		cancel()
		return nil, fmt.Errorf("async: follow new events: %w", err)
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer func() { _ = sub.Unsubscribe() }()
		d.scan()
	}()
	return d, nil
}

// Stop stops taking events; those running go on (see Close).
func (d *Dispatcher) Stop() { d.cancel() }

// Close stops taking events and waits for the ones running (they are
// acknowledged or, if cut short, delivered again later).
func (d *Dispatcher) Close() {
	d.cancel()
	d.wg.Wait()
}

// Kick starts the function's loop if this controller serves it.
func (d *Dispatcher) Kick(name string) {
	if _, serving, _ := d.run.Serving(name); !serving {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.loops[name] || d.ctx.Err() != nil {
		return
	}
	d.loops[name] = true
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.loop(name)
	}()
}

// scan kicks every function with events waiting, now and then, and
// reports the backlog of the functions this controller serves.
func (d *Dispatcher) scan() {
	reported := map[string]bool{} // functions whose backlog was last reported non-zero
	for {
		ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
		depth, err := d.q.Depth(ctx)
		if err != nil && d.ctx.Err() == nil {
			d.log.Warn("async: read the backlog", "err", err)
		}
		for name, n := range depth {
			if n > 0 {
				d.Kick(name)
			}
			if _, serving, _ := d.run.Serving(name); !serving || n == 0 {
				delete(depth, name) // reported as drained below, if it was not
				continue
			}
			d.observe(ctx, name, n)
			reported[name] = true
		}
		cancel()
		if err == nil {
			// A drained function has no subject left; one served elsewhere
			// now is reported by its owner.
			for name := range reported {
				if _, ok := depth[name]; !ok {
					d.observe(d.ctx, name, 0)
					delete(reported, name)
				}
			}
		}
		select {
		case <-d.ctx.Done():
			return
		case <-time.After(d.opts.Scan):
		}
	}
}

// observe reports a function's backlog: its depth and, when it has one,
// the age of its oldest event.
func (d *Dispatcher) observe(ctx context.Context, name string, depth uint64) {
	if d.opts.Observer == nil {
		return
	}
	d.opts.Observer.ObserveAsyncDepth(name, int(depth))
	var age time.Duration
	if depth > 0 {
		accepted, ok, err := d.q.Oldest(ctx, name)
		if err != nil {
			d.log.Warn("async: read the oldest event", "function", name, "err", err)
			return
		}
		if ok {
			age = max(time.Since(accepted), 0)
		}
	}
	d.opts.Observer.ObserveAsyncOldest(name, age)
}

// loop fetches and runs one function's events while it has some and this
// controller serves it.
func (d *Dispatcher) loop(name string) {
	defer func() {
		d.mu.Lock()
		delete(d.loops, name)
		d.mu.Unlock()
	}()
	var running sync.WaitGroup
	defer running.Wait()
	fn, serving, _ := d.run.Serving(name)
	if !serving {
		return
	}
	// One permit per event running here: the function's async
	// concurrency. (The consumer's MaxAckPending is larger: events waiting
	// for a retry hold an acknowledgement, not a permit.)
	permits := make(chan struct{}, fn.Spec.AsyncConcurrency())
	idle := 0
	var cons jetstream.Consumer
	for d.ctx.Err() == nil {
		fn, serving, _ = d.run.Serving(name)
		if !serving {
			return
		}
		if d.run.Backlogged(name, cap(permits)) {
			select {
			case <-d.ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if cons == nil {
			var err error
			if cons, err = d.consumer(fn); err != nil {
				d.log.Warn("async: consumer", "function", name, "err", err)
				select {
				case <-d.ctx.Done():
				case <-time.After(time.Second):
				}
				continue
			}
		}
		// Wait for a free permit, then take every free one.
		select {
		case <-d.ctx.Done():
			return
		case permits <- struct{}{}:
		}
		free := 1
	take:
		for free < cap(permits) {
			select {
			case permits <- struct{}{}:
				free++
			default:
				break take
			}
		}
		batch, err := cons.Fetch(free, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			for range free {
				<-permits
			}
			d.log.Warn("async: fetch", "function", name, "err", err)
			cons = nil // made again: it may have been removed
			continue
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			running.Add(1)
			go func() {
				defer running.Done()
				defer func() { <-permits }()
				d.handle(msg)
			}()
		}
		for range free - got {
			<-permits
		}
		if got > 0 {
			idle = 0
		} else if idle++; idle >= 3 && len(permits) == 0 {
			// Nothing for a few seconds: the loop ends; the next event's
			// notification (or the scan) starts it again.
			return
		}
	}
}

// consumer creates or updates the function's durable consumer: explicit
// acknowledgement, at most the async concurrency outstanding, and
// redelivery ackWait after the last sign of life of the controller
// running an event (keepAlive renews it while the event runs), so that
// the events of a controller that died run again within seconds.
func (d *Dispatcher) consumer(fn function.Function) (jetstream.Consumer, error) {
	ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
	defer cancel()
	return d.q.events.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: consumerPrefix + fn.Name, FilterSubject: subject(fn.Name),
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait,
		MaxAckPending: maxAckPending(fn.Spec.AsyncConcurrency()), MaxDeliver: -1, InactiveThreshold: time.Hour,
	})
}

// maxAckPending bounds the events handed out but not settled: those
// running (at most the concurrency) and those waiting for a retry.
func maxAckPending(concurrency int) int { return min(concurrency*4+64, 10000) }

// handle runs one delivery of an event.
func (d *Dispatcher) handle(msg jetstream.Msg) {
	ctx := context.WithoutCancel(d.ctx) // an event that started runs to its end
	id, name := msg.Headers().Get(hdrID), msg.Headers().Get(hdrFunction)
	meta, err := msg.Metadata()
	if err != nil || id == "" || name == "" {
		d.log.Error("async: a malformed event is dropped", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	step, _ := strconv.Atoi(msg.Headers().Get(hdrStep))
	ev := Event{Function: name, ID: id, Payload: msg.Data(), CallerApp: msg.Headers().Get(hdrCallerApp),
		ByRef: msg.Headers().Get(hdrByRef) == "true"}
	if raw := msg.Headers().Get(hdrCustom); raw != "" {
		_ = json.Unmarshal([]byte(raw), &ev.Custom)
	}
	fn, serving, exists := d.run.Serving(name)
	inv, err := d.q.Get(ctx, id)
	switch {
	case errors.Is(err, ErrUnknown):
		// Accepted, and its first state not written (or expired).
		inv = Invocation{ID: id, Function: name, State: StateQueued, Created: meta.Timestamp.UTC(), Step: step > 0}
	case err != nil:
		// Without its attempts the retry policy cannot be applied: the
		// event waits until the store answers.
		d.log.Warn("async: read an invocation's state; the event waits", "id", id, "err", err)
		_ = msg.NakWithDelay(jitter(time.Second))
		return
	}
	inv.Step = inv.Step || step > 0
	if Final(inv.State) {
		// Settled by a controller that died before it acknowledged the
		// event (its outcome and destination are stored): not run again.
		_ = msg.DoubleAck(ctx)
		return
	}
	if inv.Pending != nil {
		// Decided, the destination not yet reached: deliver, do not run.
		d.settle(ctx, msg, inv)
		return
	}
	now := time.Now().UTC()
	// An attempt that started and never ended was cut short by a crash.
	for i := range inv.Attempts {
		if inv.Attempts[i].End.IsZero() {
			inv.Attempts[i].End, inv.Attempts[i].Interrupted = now, true
			inv.Attempts[i].Error = "the attempt was interrupted (its controller or worker was lost)"
		}
	}
	switch {
	case !exists:
		inv.Reason = "the function was deleted"
		d.finish(ctx, msg, inv, fn, StateFailed, conditionRetriesExhausted, msg.Data(), Result{})
		return
	case !serving:
		_ = msg.Nak() // another controller owns it now
		return
	case time.Since(meta.Timestamp) > fn.Spec.MaxEventAge():
		inv.Reason = fmt.Sprintf("the event waited longer than maxEventAgeSeconds (%d)", int(fn.Spec.MaxEventAge().Seconds()))
		d.finish(ctx, msg, inv, fn, StateExpired, conditionEventAgeExceeded, msg.Data(), Result{})
		return
	case step > 0 && completedAttempts(inv) > 0:
		inv.Reason = "the step ran"
		d.finish(ctx, msg, inv, fn, StateFailed, conditionRetriesExhausted, msg.Data(), Result{})
		return
	case step == 0 && len(inv.Attempts) > fn.Spec.RetryAttempts():
		inv.Reason = "retries exhausted"
		d.finish(ctx, msg, inv, fn, StateFailed, conditionRetriesExhausted, msg.Data(), Result{})
		return
	}
	attempt := Attempt{Number: len(inv.Attempts) + 1, Start: now}
	inv.Attempts = append(inv.Attempts, attempt)
	inv.State, inv.Updated = StateRunning, now
	if !inv.Step {
		// A step's or call's waiter needs only its end, and a step cut
		// short runs again without this record of its start (it never
		// completed): one replicated write less on the bus's path.
		d.save(ctx, inv)
	}

	stop := keepAlive(msg)
	ev.Attempt = attempt.Number
	if step > 0 {
		ev.Attempt = step
	}
	res := d.run.Run(ctx, ev)
	// Throttled, it did not run: not an attempt. It keeps its permit and
	// tries again shortly (the function is saturated anyway), until
	// this controller stops serving the function.
	for wait := 50 * time.Millisecond; res.Err != nil && Throttled(res.Err); wait = min(2*wait, 2*time.Second) {
		d.outcome(name, outcomeThrottled)
		if _, serving, _ := d.run.Serving(name); !serving || d.ctx.Err() != nil {
			stop()
			inv.Attempts = inv.Attempts[:len(inv.Attempts)-1]
			inv.State, inv.Updated = StateQueued, time.Now().UTC()
			d.save(ctx, inv)
			_ = msg.Nak()
			return
		}
		time.Sleep(jitter(wait))
		res = d.run.Run(ctx, ev)
	}
	stop()
	last := &inv.Attempts[len(inv.Attempts)-1]
	last.End, last.Worker = time.Now().UTC(), res.Worker
	switch {
	case res.Err != nil:
		class, code := errdefs.Classify(res.Err)
		last.Error, last.ErrorType, last.ErrorClass, last.Platform = res.Err.Error(), code, string(class), true
	case res.FunctionError != nil:
		last.Error, last.ErrorType = res.FunctionError.Message, res.FunctionError.Type
	default:
		d.finish(ctx, msg, inv, fn, StateSucceeded, conditionSuccess, msg.Data(), res)
		return
	}
	if step == 0 && last.Number <= fn.Spec.RetryAttempts() {
		inv.State, inv.Updated = StateQueued, time.Now().UTC()
		d.save(ctx, inv)
		d.outcome(name, outcomeRetried)
		_ = msg.NakWithDelay(d.backoff(last.Number))
		return
	}
	inv.Reason = "retries exhausted"
	d.finish(ctx, msg, inv, fn, StateFailed, conditionRetriesExhausted, msg.Data(), res)
}

// finish settles an event. With a destination, the outcome is first
// stored as pending (so that a redelivery delivers it instead of running
// the event again), then delivered, then stored as final; the event
// leaves the stream last. A crash in between delivers it again, and the
// destination may get it twice (at least once; a function destination
// drops the repeat by its idempotency key, a dead-letter queue within its
// duplicate window).
func (d *Dispatcher) finish(ctx context.Context, msg jetstream.Msg, inv Invocation, fn function.Function, state, condition string, event []byte, res Result) {
	inv.State, inv.Updated = state, time.Now().UTC()
	if state == StateSucceeded {
		inv.Result, inv.ResultTruncated, inv.ResultRef = res.Payload, false, res.PayloadRef
		if inv.Step && len(inv.Result) > maxStepResultBytes {
			// A step's output goes on whole or not at all.
			inv.State, inv.Result = StateFailed, nil
			inv.Reason = fmt.Sprintf("the step's output (%d bytes) is larger than the global bus carries (%d bytes)", len(res.Payload), maxStepResultBytes)
		} else if !inv.Step && len(inv.Result) > d.q.opts.MaxResultBytes {
			inv.Result, inv.ResultTruncated = inv.Result[:d.q.opts.MaxResultBytes], true
		}
	}
	dest := ""
	if fn.Spec.Async != nil && !inv.Step {
		dest = fn.Spec.Async.OnFailure
		if state == StateSucceeded {
			dest = fn.Spec.Async.OnSuccess
		}
	}
	if dest == "" {
		d.store(ctx, msg, inv)
		return
	}
	inv.Pending = &Pending{State: state, Condition: condition, Destination: dest,
		Record: destinationRecord(inv, condition, event, res)}
	inv.State = StateRunning
	d.save(ctx, inv)
	d.settle(ctx, msg, inv)
}

// maxStepResultBytes bounds a step's output on the global bus (a KV
// value of the invocation's state holds it).
const maxStepResultBytes = 768 << 10

// completedAttempts counts the attempts that ended (not cut short).
func completedAttempts(inv Invocation) int {
	n := 0
	for _, a := range inv.Attempts {
		if !a.Interrupted {
			n++
		}
	}
	return n
}

// settle delivers a pending outcome, then stores the final state and
// acknowledges the event.
func (d *Dispatcher) settle(ctx context.Context, msg jetstream.Msg, inv Invocation) {
	p := inv.Pending
	if err := d.deliver(ctx, p.Destination, inv, p.Condition, p.Record); err != nil {
		d.log.Warn("async: destination refused; delivered again later", "id", inv.ID, "destination", p.Destination, "err", err)
		_ = msg.NakWithDelay(jitter(5 * time.Second))
		return
	}
	inv.State, inv.Destination, inv.Pending, inv.Updated = p.State, p.Destination, nil, time.Now().UTC()
	if kind, _, _ := function.ParseDestination(p.Destination); kind == function.DestinationDLQ && p.State != StateSucceeded {
		inv.State = StateDeadLettered
	}
	d.store(ctx, msg, inv)
}

// store stores a settled invocation's state, then acknowledges the event.
// A state that cannot be stored is tried again for a while; acknowledged
// without it, the event would leave its invocation unsettled for good, so
// it is delivered again instead (and finds its outcome pending, or its
// last attempt unfinished, and goes on by the policy).
func (d *Dispatcher) store(ctx context.Context, msg jetstream.Msg, inv Invocation) {
	if err := d.saveFinal(ctx, msg, inv); err != nil {
		d.log.Warn("async: store a settled invocation's state; the event is delivered again", "id", inv.ID, "state", inv.State, "err", err)
		_ = msg.NakWithDelay(jitter(time.Second))
		return
	}
	if inv.Step {
		d.q.announceDone(inv) // before the acknowledgement's round trip
	}
	d.outcome(inv.Function, inv.State)
	d.ack(ctx, msg, inv.ID)
}

func (d *Dispatcher) ack(ctx context.Context, msg jetstream.Msg, id string) {
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := msg.DoubleAck(actx); err != nil {
		d.log.Warn("async: acknowledge a settled event; it may run again", "id", id, "err", err)
	}
}

// Record is what a destination receives (AWS Lambda's destination record).
type Record struct {
	Version         string          `json:"version"`
	Timestamp       time.Time       `json:"timestamp"`
	RequestContext  RecordContext   `json:"requestContext"`
	RequestPayload  json.RawMessage `json:"requestPayload"`
	ResponseContext RecordResponse  `json:"responseContext"`
	ResponsePayload json.RawMessage `json:"responsePayload,omitempty"`
}

// RecordContext names the invocation.
type RecordContext struct {
	RequestID              string `json:"requestId"`
	Function               string `json:"functionArn"`
	Condition              string `json:"condition"`
	ApproximateInvokeCount int    `json:"approximateInvokeCount"`
}

// RecordResponse says how the last attempt ended.
type RecordResponse struct {
	StatusCode      int    `json:"statusCode"`
	ExecutedVersion string `json:"executedVersion"`
	FunctionError   string `json:"functionError,omitempty"`
}

// destinationRecord is the record a destination receives for the
// outcome of inv.
func destinationRecord(inv Invocation, condition string, event []byte, res Result) json.RawMessage {
	rec := Record{Version: "1.0", Timestamp: time.Now().UTC(),
		RequestContext: RecordContext{RequestID: inv.ID, Function: function.ARN(inv.Function, 0), Condition: condition,
			ApproximateInvokeCount: len(inv.Attempts)},
		RequestPayload:  rawJSON(event),
		ResponseContext: RecordResponse{StatusCode: 200, ExecutedVersion: "$LATEST"},
	}
	switch {
	case res.FunctionError != nil:
		rec.ResponseContext.FunctionError = "Unhandled"
		rec.ResponsePayload, _ = json.Marshal(res.FunctionError)
	case res.Err != nil:
		rec.ResponseContext.StatusCode = 500
		rec.ResponsePayload, _ = json.Marshal(map[string]string{"errorType": "Baton." + codeOf(res.Err), "errorMessage": res.Err.Error()})
	case condition == conditionSuccess:
		rec.ResponsePayload = rawJSON(res.Payload)
	}
	body, err := json.Marshal(rec)
	if err != nil {
		// Every part is JSON already (rawJSON quotes what is not).
		panic(fmt.Sprintf("async: encode a destination record: %v", err))
	}
	return body
}

// deliver hands a destination record to dest.
func (d *Dispatcher) deliver(ctx context.Context, dest string, inv Invocation, condition string, body []byte) error {
	kind, name, err := function.ParseDestination(dest)
	if err != nil {
		return err
	}
	if kind == function.DestinationFunction {
		_, err := d.q.Enqueue(ctx, name, body, "dest-"+inv.ID+"-"+condition)
		return err
	}
	msg := nats.NewMsg(dlqPrefix + name)
	msg.Data = body
	msg.Header.Set(hdrID, inv.ID)
	msg.Header.Set(hdrOrigin, inv.Function)
	msg.Header.Set(hdrReason, condition)
	_, err = d.q.js.PublishMsg(ctx, msg, jetstream.WithMsgID("dlq-"+inv.ID))
	return err
}

// saveFinal stores a settled invocation's state, trying again for a while
// (the event held meanwhile) when the bucket does not answer, as during a
// NATS leader election.
func (d *Dispatcher) saveFinal(ctx context.Context, msg jetstream.Msg, inv Invocation) error {
	var err error
	for wait, deadline := 100*time.Millisecond, time.Now().Add(saveFinalFor); ; wait = min(2*wait, 2*time.Second) {
		if err = d.q.put(ctx, inv); err == nil || time.Now().After(deadline) {
			return err
		}
		_ = msg.InProgress()
		time.Sleep(jitter(wait))
	}
}

// saveFinalFor bounds how long a settled state's write is tried again.
const saveFinalFor = 30 * time.Second

func (d *Dispatcher) save(ctx context.Context, inv Invocation) {
	if err := d.q.put(ctx, inv); err != nil {
		d.log.Warn("async: save an invocation's state", "id", inv.ID, "state", inv.State, "err", err)
	}
}

// backoff is the wait before retry n (1-based): RetryBase × 2^(n-1) with
// ±25 % jitter, at most 5 minutes.
func (d *Dispatcher) backoff(n int) time.Duration {
	wait := d.opts.RetryBase << min(n-1, 16)
	return jitter(min(wait, 5*time.Minute))
}

func jitter(d time.Duration) time.Duration {
	return d*3/4 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// ackWait is how long an event is held for a controller without a sign
// of life before JetStream delivers it again.
const ackWait = 15 * time.Second

// keepAlive tells JetStream the event is still being worked on (every
// third of ackWait), so that a long run is not delivered again elsewhere.
func keepAlive(msg jetstream.Msg) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(ackWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func rawJSON(b []byte) json.RawMessage {
	if json.Valid(b) {
		return b
	}
	s, _ := json.Marshal(string(b))
	return s
}

func codeOf(err error) string {
	_, code := errdefs.Classify(err)
	if code == "" {
		return "Error"
	}
	return code
}
