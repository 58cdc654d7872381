package loadgen

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/baton-faas/baton/internal/bench/arrival"
	"github.com/baton-faas/baton/internal/bench/report"
)

// Mode is a load model.
type Mode string

// Load models.
const (
	// Closed: Concurrency clients, each sends its next request when the
	// previous one answered.
	Closed Mode = "closed"
	// Open: requests start on a schedule (Rate, Arrival) whether or not
	// earlier ones answered.
	Open Mode = "open"
	// Burst: BurstSize requests start together every BurstGap.
	Burst Mode = "burst"
	// Cold: one request at a time, each to a function just scaled to zero.
	Cold Mode = "cold"
	// Warm: a closed loop after a warm-up whose requests are discarded.
	Warm Mode = "warm"
	// Trace: requests start at the times of Plan.Schedule, each to its own
	// target (trace replay). Not a --mode of bench, so ParseMode refuses it.
	Trace Mode = "trace"
)

// Scheduled is one request of a Trace plan.
type Scheduled struct {
	// At is the intended start, from the start of the run.
	At time.Duration
	// Target receives the request; nil means the Runner's Target.
	Target Target
	// Function names the target in the sample (Plan.Function when empty).
	Function string
	Payload  []byte
	// RequestedMs is the execution time the request asks for, recorded in
	// the sample.
	RequestedMs float64
}

// ParseMode validates a mode name.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Closed, Open, Burst, Cold, Warm:
		return m, nil
	}
	return "", fmt.Errorf("unknown mode %q (want closed, open, burst, cold or warm)", s)
}

// Plan describes a run.
type Plan struct {
	Mode        Mode
	Concurrency int
	Rate        float64
	Arrival     arrival.Kind
	Seed        uint64
	BurstSize   int
	BurstGap    time.Duration
	// Stop after Duration or Requests measured requests, whichever first
	// (zero means no limit of that kind; one of them must be set).
	Duration time.Duration
	Requests int
	// Warmup requests are sent (closed loop) and discarded first.
	Warmup int
	// Ready, if set, reports whether the platform has brought up the
	// instances the measurement needs (warm mode): the warm-up goes on
	// past Warmup requests until it has, so that no measured request
	// waits for a cold start. detail says what is still missing.
	Ready func(ctx context.Context) (ready bool, detail string, err error)
	// ReadyTimeout bounds the wait for Ready (default 2 minutes).
	ReadyTimeout time.Duration
	// MaxInFlight caps outstanding requests in open and burst modes; when
	// reached, sending falls behind schedule and that lag is reported.
	MaxInFlight int
	// Payload returns the body of request i.
	Payload func(i int) []byte
	// ScaleToZero makes the target function drop all instances and returns
	// once it has none (cold mode).
	ScaleToZero func(ctx context.Context) error
	// Function names the target in samples.
	Function string
	// Schedule lists the requests of a Trace plan, sorted by At.
	Schedule []Scheduled
	// Observe, if set, may amend the sample of request i from its
	// response before it is recorded (trace replay reads the execution
	// time the function reported from the body).
	Observe func(i int, resp Response, s *report.Sample)
}

// Validate checks a plan and fills defaults.
func (p *Plan) Validate() error {
	if p.Mode == Trace {
		if len(p.Schedule) == 0 {
			return errors.New("trace plan has no scheduled request")
		}
		if !slices.IsSortedFunc(p.Schedule, func(a, b Scheduled) int { return cmp.Compare(a.At, b.At) }) {
			return errors.New("trace plan's schedule is not sorted by time")
		}
		// The schedule bounds the run; a Requests limit would cut it.
		p.Requests = len(p.Schedule)
	} else if p.Duration <= 0 && p.Requests <= 0 {
		return errors.New("set --duration or --requests")
	}
	if p.Concurrency <= 0 {
		p.Concurrency = 1
	}
	if p.MaxInFlight <= 0 {
		p.MaxInFlight = 10000
	}
	if p.Payload == nil {
		p.Payload = func(int) []byte { return []byte("{}") }
	}
	switch p.Mode {
	case Open:
		if p.Rate <= 0 {
			return errors.New("open loop needs --rate > 0 (requests per second)")
		}
		if p.Arrival == "" {
			p.Arrival = "exponential"
		}
	case Burst:
		if p.BurstSize <= 0 || p.BurstGap <= 0 {
			return errors.New("burst mode needs --burst > 0 and --burst-gap > 0")
		}
	case Cold:
		if p.ScaleToZero == nil {
			return errors.New("cold mode needs a way to scale the function to zero")
		}
	case Warm:
		if p.Warmup <= 0 {
			p.Warmup = max(20, 2*p.Concurrency)
		}
		if p.ReadyTimeout <= 0 {
			p.ReadyTimeout = 2 * time.Minute
		}
	case Closed, Trace:
	default:
		return fmt.Errorf("unknown mode %q", p.Mode)
	}
	return nil
}

// Progress is a live view of a run.
type Progress struct {
	Elapsed  time.Duration
	Sent     int64
	Done     int64
	Errors   int64
	InFlight int64
	// Behind is how late the latest scheduled request was sent.
	Behind time.Duration
	// Late counts the requests sent late (see Late).
	Late int64
}

// LateThreshold is how late a send may be before it counts as behind
// schedule: the open loop's pacer keeps its own timer jitter well below it,
// so what exceeds it is the client failing to keep up.
const LateThreshold = 100 * time.Microsecond

// Late reports whether a request sent lag after its intended time counts
// as sent late: the one definition used by progress and summaries.
func Late(lag time.Duration) bool { return lag > LateThreshold }

// Result is what a run recorded.
type Result struct {
	Samples []report.Sample
	// Bodies holds response bodies when the plan asked to keep them
	// (chains read per-hop timings from them); indexed like Samples.
	Bodies [][]byte
	Start  time.Time
	End    time.Time
}

// Runner executes a plan against a target.
type Runner struct {
	Target     Target
	Plan       Plan
	KeepBodies bool
	// OnProgress is called about twice a second while the run lasts.
	OnProgress func(Progress)

	start    time.Time
	mu       sync.Mutex
	samples  []report.Sample
	bodies   [][]byte
	sent     atomic.Int64
	done     atomic.Int64
	errs     atomic.Int64
	inflight atomic.Int64
	behind   atomic.Int64
	late     atomic.Int64
}

// Run executes the plan. A cancelled ctx ends the run early; what was
// recorded until then is returned.
func (r *Runner) Run(ctx context.Context) (Result, error) {
	if err := r.Plan.Validate(); err != nil {
		return Result{}, err
	}
	if r.Plan.Warmup > 0 {
		if err := r.warmup(ctx); err != nil {
			return Result{}, err
		}
	}
	r.start = time.Now()
	stopProgress := r.reportProgress()
	var err error
	switch r.Plan.Mode {
	case Closed, Warm:
		err = r.closed(ctx)
	case Open:
		err = r.open(ctx)
	case Burst:
		err = r.burst(ctx)
	case Cold:
		err = r.cold(ctx)
	case Trace:
		err = r.trace(ctx)
	}
	stopProgress()
	return Result{Samples: r.samples, Bodies: r.bodies, Start: r.start, End: time.Now()}, err
}

// readyPoll is how often the warm-up asks whether the instances are up.
const readyPoll = 50 * time.Millisecond

// warmup sends Plan.Warmup requests in a closed loop and, if Plan.Ready
// is set, goes on until it reports the instances up. Its requests are
// not recorded, and all of them have answered when it returns.
func (r *Runner) warmup(ctx context.Context) error {
	var wg sync.WaitGroup
	var sent, failed, ok atomic.Int64
	var stop atomic.Bool
	for c := 0; c < r.Plan.Concurrency; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && !stop.Load() {
				if n := sent.Add(1); r.Plan.Ready == nil && n > int64(r.Plan.Warmup) {
					sent.Add(-1)
					return
				}
				if resp := r.Target.Send(ctx, r.Plan.Payload(-1)); resp.Err != nil {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	var err error
	if r.Plan.Ready != nil {
		err = r.awaitReady(ctx, &failed, &ok)
		stop.Store(true)
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if n := failed.Load(); n > 0 && ok.Load() == 0 {
		return fmt.Errorf("all %d warm-up requests failed", n)
	}
	return err
}

// awaitReady polls Plan.Ready while the warm-up clients send, until at
// least Plan.Warmup requests answered and the instances are up.
func (r *Runner) awaitReady(ctx context.Context, failed, ok *atomic.Int64) error {
	deadline := time.Now().Add(r.Plan.ReadyTimeout)
	t := time.NewTicker(readyPoll)
	defer t.Stop()
	detail := "not asked yet"
	for {
		if ok.Load() == 0 && failed.Load() >= int64(r.Plan.Warmup) {
			return nil // warmup says that every request failed
		}
		if ok.Load()+failed.Load() >= int64(r.Plan.Warmup) {
			ready, d, err := r.Plan.Ready(ctx)
			if err != nil {
				return fmt.Errorf("warm-up: ask whether the instances are up: %w", err)
			}
			if ready {
				return nil
			}
			detail = d
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("warm-up: the instances were not all up after %s of load (%s)", r.Plan.ReadyTimeout, detail)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// deadline returns the context that ends the measured phase by duration.
func (r *Runner) deadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if r.Plan.Duration > 0 {
		return context.WithDeadline(ctx, r.start.Add(r.Plan.Duration))
	}
	return context.WithCancel(ctx)
}

// claim reserves the next request index, or reports that the run is over.
func (r *Runner) claim(ctx context.Context) (int, bool) {
	if ctx.Err() != nil {
		return 0, false
	}
	n := r.sent.Add(1)
	if r.Plan.Requests > 0 && n > int64(r.Plan.Requests) {
		r.sent.Add(-1)
		return 0, false
	}
	return int(n - 1), true
}

// send performs request i intended to start at intended, recording lag
// and latency from the intended time. The lag is the time from the
// intended start until the request is handed to its target, never negative.
// The request itself is not bound to the run's deadline: a request that
// started is allowed to finish.
func (r *Runner) send(ctx context.Context, i int, intended time.Time) {
	target, function, payload, requested := r.Target, r.Plan.Function, []byte(nil), 0.0
	if r.Plan.Mode == Trace {
		sc := r.Plan.Schedule[i]
		if sc.Target != nil {
			target = sc.Target
		}
		if sc.Function != "" {
			function = sc.Function
		}
		payload, requested = sc.Payload, sc.RequestedMs
	} else {
		payload = r.Plan.Payload(i)
	}
	lag := max(time.Since(intended), 0)
	r.behind.Store(int64(lag))
	if Late(lag) {
		r.late.Add(1)
	}
	r.inflight.Add(1)
	resp := target.Send(context.WithoutCancel(ctx), payload)
	latency := time.Since(intended)
	r.inflight.Add(-1)
	s := report.Sample{
		Function: function, StartNs: intended.UnixNano(), LatencyNs: latency.Nanoseconds(),
		Status: resp.Status, Cold: resp.Cold, WaitMs: resp.WaitMs, InitMs: resp.InitMs, ExecMs: resp.ExecMs,
		Instance: resp.Instance, LagNs: lag.Nanoseconds(), RequestedMs: requested,
	}
	if resp.Err != nil {
		s.Error = resp.Err.Error()
	}
	if r.Plan.Observe != nil {
		r.Plan.Observe(i, resp, &s)
	}
	if s.Error != "" {
		r.errs.Add(1)
	}
	r.done.Add(1)
	r.mu.Lock()
	r.samples = append(r.samples, s)
	if r.KeepBodies {
		r.bodies = append(r.bodies, resp.Body)
	}
	r.mu.Unlock()
}

func (r *Runner) closed(ctx context.Context) error {
	dctx, cancel := r.deadline(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for c := 0; c < r.Plan.Concurrency; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i, ok := r.claim(dctx)
				if !ok {
					return
				}
				// In a closed loop the next request is due when the
				// previous one answered: intended == actual.
				r.send(dctx, i, time.Now())
			}
		}()
	}
	wg.Wait()
	return ignoreDeadline(ctx)
}

// schedule runs an open-loop schedule: at(k) gives the intended start of
// batch k (size requests each), or false when the schedule is over. The
// requests go to senders started before they are due (senderPool), and
// the pacer wakes this loop on time; how late each request still was when
// its sender took it is its lag.
func (r *Runner) schedule(ctx context.Context, size int, at func(k int) (time.Time, bool)) error {
	dctx, cancel := r.deadline(ctx)
	defer cancel()
	pool := newSenderPool(r.initialSenders(size), r.Plan.MaxInFlight, func(j job) { r.send(dctx, j.i, j.due) })
	// Senders finish the requests they took; the pool stops after them.
	defer pool.close()
	pace := newPacer()
	for k := 0; ; k++ {
		if r.Plan.Requests > 0 && r.sent.Load() >= int64(r.Plan.Requests) {
			return ignoreDeadline(ctx) // all sent: do not wait for a next batch
		}
		due, more := at(k)
		if !more {
			return ignoreDeadline(ctx)
		}
		if r.Plan.Duration > 0 && due.Sub(r.start) >= r.Plan.Duration {
			return ignoreDeadline(ctx)
		}
		if !pace.wait(dctx, due) {
			return ignoreDeadline(ctx)
		}
		for j := 0; j < size; j++ {
			i, ok := r.claim(dctx)
			if !ok {
				return ignoreDeadline(ctx)
			}
			// Waiting for an idle sender makes us late; the lag is recorded.
			if !pool.submit(dctx, job{i: i, due: due}) {
				r.sent.Add(-1) // claimed but never sent
				return ignoreDeadline(ctx)
			}
		}
	}
}

// initialSenders sizes the sender pool at the start: a whole batch (a
// burst) plus what a few milliseconds of the rate keep in flight against
// a fast target; the pool grows in the background beyond that.
func (r *Runner) initialSenders(batch int) int {
	return min(max(32, 2*batch, int(r.Plan.Rate/200)), r.Plan.MaxInFlight)
}

func (r *Runner) open(ctx context.Context) error {
	gen, err := arrival.New(r.Plan.Arrival, r.Plan.Rate, r.Plan.Seed)
	if err != nil {
		return err
	}
	next := r.start
	return r.schedule(ctx, 1, func(int) (time.Time, bool) {
		due := next
		next = next.Add(gen.Next())
		return due, true
	})
}

func (r *Runner) burst(ctx context.Context) error {
	return r.schedule(ctx, r.Plan.BurstSize, func(k int) (time.Time, bool) {
		return r.start.Add(time.Duration(k) * r.Plan.BurstGap), true
	})
}

// trace sends Plan.Schedule: one request per batch, so request index and
// schedule index agree.
func (r *Runner) trace(ctx context.Context) error {
	return r.schedule(ctx, 1, func(k int) (time.Time, bool) {
		if k >= len(r.Plan.Schedule) {
			return time.Time{}, false
		}
		return r.start.Add(r.Plan.Schedule[k].At), true
	})
}

// cold sends one request at a time, each after the function dropped all
// its instances; the time spent scaling to zero is not measured.
func (r *Runner) cold(ctx context.Context) error {
	dctx, cancel := r.deadline(ctx)
	defer cancel()
	for {
		if err := r.Plan.ScaleToZero(dctx); err != nil {
			if dctx.Err() != nil {
				return ignoreDeadline(ctx)
			}
			return fmt.Errorf("scale to zero: %w", err)
		}
		i, ok := r.claim(dctx)
		if !ok {
			return ignoreDeadline(ctx)
		}
		r.send(dctx, i, time.Now())
	}
}

// ignoreDeadline: the measured phase ending by duration is not an error;
// the caller's own cancellation is.
func ignoreDeadline(ctx context.Context) error {
	return ctx.Err()
}

func (r *Runner) reportProgress() func() {
	if r.OnProgress == nil {
		return func() {}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				r.OnProgress(r.progress())
				return
			case <-t.C:
				r.OnProgress(r.progress())
			}
		}
	}()
	return func() { close(stop); <-done }
}

func (r *Runner) progress() Progress {
	return Progress{
		Elapsed: time.Since(r.start), Sent: r.sent.Load(), Done: r.done.Load(), Errors: r.errs.Load(),
		InFlight: r.inflight.Load(), Behind: time.Duration(r.behind.Load()), Late: r.late.Load(),
	}
}
