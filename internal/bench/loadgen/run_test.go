package loadgen

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/bench/report"
)

// fakeTarget answers after delay and counts concurrent calls.
type fakeTarget struct {
	delay    time.Duration
	inflight atomic.Int64
	peak     atomic.Int64
	calls    atomic.Int64
	mu       sync.Mutex
	sendAt   []time.Time
}

func (f *fakeTarget) Send(ctx context.Context, _ []byte) Response {
	n := f.inflight.Add(1)
	for {
		p := f.peak.Load()
		if n <= p || f.peak.CompareAndSwap(p, n) {
			break
		}
	}
	f.mu.Lock()
	f.sendAt = append(f.sendAt, time.Now())
	f.mu.Unlock()
	f.calls.Add(1)
	time.Sleep(f.delay)
	f.inflight.Add(-1)
	return Response{Status: 200, ExecMs: 1}
}

func TestClosedLoopRequestsAndConcurrency(t *testing.T) {
	tg := &fakeTarget{delay: 2 * time.Millisecond}
	r := &Runner{Target: tg, Plan: Plan{Mode: Closed, Concurrency: 4, Requests: 40}}
	res, err := r.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Samples) != 40 || tg.calls.Load() != 40 {
		t.Fatalf("%d samples, %d calls; want 40", len(res.Samples), tg.calls.Load())
	}
	if tg.peak.Load() != 4 {
		t.Fatalf("peak concurrency %d, want 4", tg.peak.Load())
	}
	for _, s := range res.Samples {
		if s.LatencyNs < (2 * time.Millisecond).Nanoseconds() {
			t.Fatalf("latency %v below the target's delay", time.Duration(s.LatencyNs))
		}
	}
}

func TestWarmupIsDiscarded(t *testing.T) {
	tg := &fakeTarget{}
	r := &Runner{Target: tg, Plan: Plan{Mode: Warm, Concurrency: 2, Requests: 10, Warmup: 7}}
	res, err := r.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Samples) != 10 || tg.calls.Load() != 17 {
		t.Fatalf("%d samples after %d calls, want 10 after 17", len(res.Samples), tg.calls.Load())
	}
}

func TestOpenLoopKeepsScheduleWhileTargetIsSlow(t *testing.T) {
	// 200 req/s with fixed gaps against a 50 ms target: an open loop must
	// not wait for answers, so ~10 requests overlap.
	tg := &fakeTarget{delay: 50 * time.Millisecond}
	r := &Runner{Target: tg, Plan: Plan{Mode: Open, Rate: 200, Arrival: "fixed", Requests: 60}}
	res, err := r.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Samples) != 60 {
		t.Fatalf("%d samples", len(res.Samples))
	}
	if p := tg.peak.Load(); p < 5 {
		t.Fatalf("peak in flight %d: the open loop waited for answers", p)
	}
	// Not earlier than the schedule. (That the loop did not wait for
	// answers is the peak above: a busy host can only delay sends, which
	// lowers no peak below what the schedule forces.)
	span := tg.sendAt[len(tg.sendAt)-1].Sub(tg.sendAt[0])
	if span < 250*time.Millisecond {
		t.Fatalf("60 requests at 200/s spanned %v, want at least 295 ms", span)
	}
}

func TestCoordinatedOmissionIsReported(t *testing.T) {
	// One slot and a 20 ms target at 200 req/s: sending must fall behind,
	// the lag must be recorded and the latency include it.
	tg := &fakeTarget{delay: 20 * time.Millisecond}
	r := &Runner{Target: tg, Plan: Plan{Mode: Open, Rate: 200, Arrival: "fixed", Requests: 20, MaxInFlight: 1}}
	res, err := r.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sum := Summarize(res.Samples, res.Start, res.End)
	if sum.Schedule.LateRequests < 15 {
		t.Fatalf("only %d late requests reported", sum.Schedule.LateRequests)
	}
	// The last request was due at 95 ms but could only start after 19
	// earlier ones of 20 ms each: its latency from the intended time must
	// show that wait.
	if sum.LatencyMs.Max < 250 {
		t.Fatalf("max latency %.1f ms hides the client's lag", sum.LatencyMs.Max)
	}
}

func TestBurstStartsTogether(t *testing.T) {
	tg := &fakeTarget{delay: 30 * time.Millisecond}
	r := &Runner{Target: tg, Plan: Plan{Mode: Burst, BurstSize: 10, BurstGap: 100 * time.Millisecond, Requests: 20}}
	res, err := r.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Samples) != 20 || tg.peak.Load() != 10 {
		t.Fatalf("%d samples, peak %d; want 20 and 10", len(res.Samples), tg.peak.Load())
	}
	starts := map[int64]int{}
	for _, s := range res.Samples {
		starts[s.StartNs]++
	}
	if len(starts) != 2 {
		t.Fatalf("intended start times %v, want two bursts", starts)
	}
}

func TestColdModeScalesToZeroBeforeEachRequest(t *testing.T) {
	tg := &fakeTarget{}
	var scaled atomic.Int64
	r := &Runner{Target: tg, Plan: Plan{Mode: Cold, Requests: 5, ScaleToZero: func(context.Context) error {
		if scaled.Load() != tg.calls.Load() {
			t.Error("scale-to-zero not called before every request")
		}
		scaled.Add(1)
		return nil
	}}}
	if _, err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if tg.calls.Load() != 5 {
		t.Fatalf("%d calls", tg.calls.Load())
	}
}

func TestDurationBound(t *testing.T) {
	tg := &fakeTarget{delay: time.Millisecond}
	r := &Runner{Target: tg, Plan: Plan{Mode: Closed, Duration: 100 * time.Millisecond}}
	type result struct {
		res Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := r.Run(context.Background())
		done <- result{res, err}
	}()
	var got result
	select {
	case got = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("a 100 ms run has not ended after 30 s")
	}
	if got.err != nil {
		t.Fatal(got.err)
	}
	// Nothing but the duration stops a closed loop without a request
	// count: that it ended is the bound working.
	if len(got.res.Samples) == 0 {
		t.Fatal("no sample")
	}
}

// namedTarget answers with its name in the body.
type namedTarget struct {
	name  string
	calls atomic.Int64
}

func (n *namedTarget) Send(_ context.Context, payload []byte) Response {
	n.calls.Add(1)
	return Response{Status: 200, Body: append([]byte(n.name+":"), payload...)}
}

func TestTraceSendsEachScheduledRequestToItsTarget(t *testing.T) {
	a, b := &namedTarget{name: "a"}, &namedTarget{name: "b"}
	sched := []Scheduled{
		{At: 0, Target: a, Function: "fa", Payload: []byte("1"), RequestedMs: 5},
		{At: 20 * time.Millisecond, Target: b, Function: "fb", Payload: []byte("2"), RequestedMs: 6},
		{At: 20 * time.Millisecond, Target: a, Function: "fa", Payload: []byte("3"), RequestedMs: 7},
		{At: 40 * time.Millisecond, Target: b, Function: "fb", Payload: []byte("4"), RequestedMs: 8},
	}
	var observed atomic.Int64
	var progress []Progress
	r := &Runner{
		Plan: Plan{Mode: Trace, Schedule: sched, Observe: func(i int, resp Response, s *report.Sample) {
			observed.Add(1)
			// The body proves request i went to its target with its payload.
			want := string(sched[i].Payload)
			if got := string(resp.Body); got != map[Target]string{a: "a", b: "b"}[sched[i].Target]+":"+want {
				s.Error = "request " + want + " answered " + got
			}
		}},
		OnProgress: func(p Progress) { progress = append(progress, p) },
	}
	res, err := r.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Samples) != 4 || a.calls.Load() != 2 || b.calls.Load() != 2 || observed.Load() != 4 {
		t.Fatalf("%d samples, calls a %d b %d, observed %d", len(res.Samples), a.calls.Load(), b.calls.Load(), observed.Load())
	}
	for _, s := range res.Samples {
		if s.Error != "" {
			t.Fatal(s.Error)
		}
		at := time.Duration(s.StartNs - res.Start.UnixNano())
		i := slices.IndexFunc(sched, func(x Scheduled) bool { return x.RequestedMs == s.RequestedMs })
		if i < 0 || s.Function != sched[i].Function || at != sched[i].At {
			t.Fatalf("sample %+v (intended at %v) matches no scheduled request", s, at)
		}
	}
	if last := progress[len(progress)-1]; last.Done != 4 || last.Sent != 4 {
		t.Fatalf("last progress %+v", last)
	}
}

func TestTraceLagIsTheOneDefinition(t *testing.T) {
	// One slot and a slow target: the second request cannot start on time.
	// Its lag is counted late in progress and in the summary alike.
	tg := &fakeTarget{delay: 50 * time.Millisecond}
	var last Progress
	r := &Runner{Target: tg, Plan: Plan{Mode: Trace, MaxInFlight: 1,
		Schedule: []Scheduled{{At: 0}, {At: time.Millisecond}}}, OnProgress: func(p Progress) { last = p }}
	res, err := r.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sum := Summarize(res.Samples, res.Start, res.End)
	if last.Late == 0 || int(last.Late) != sum.Schedule.LateRequests {
		t.Fatalf("progress counts %d late, summary %d", last.Late, sum.Schedule.LateRequests)
	}
}

func TestPlanValidation(t *testing.T) {
	bad := []Plan{
		{Mode: Closed},
		{Mode: Open, Requests: 1},
		{Mode: Burst, Requests: 1, BurstSize: 1},
		{Mode: Cold, Requests: 1},
		{Mode: "zigzag", Requests: 1},
		{Mode: Trace},
		{Mode: Trace, Schedule: []Scheduled{{At: time.Second}, {At: 0}}},
	}
	for _, p := range bad {
		if err := p.Validate(); err == nil {
			t.Errorf("plan %+v accepted", p)
		}
	}
}

func TestSummarize(t *testing.T) {
	start := time.Unix(100, 0)
	samples := []report.Sample{
		{LatencyNs: 10e6, Status: 200, Cold: true, InitMs: 8, Instance: "a"},
		{LatencyNs: 1e6, Status: 200, Instance: "a"},
		{LatencyNs: 2e6, Status: 200, Instance: "b", LagNs: 5e6},
		{LatencyNs: 3e6, Status: 502, Error: "HTTP 502: boom"},
	}
	s := Summarize(samples, start, start.Add(2*time.Second))
	if s.Count != 4 || s.Errors != 1 || s.Instances != 2 || s.ColdLatencyMs.Count != 1 || s.InitMs.P50 != 8 {
		t.Fatalf("summary %+v", s)
	}
	if s.ColdFraction != 1.0/3 || s.ThroughputRPS != 1.5 || s.Schedule.LateRequests != 1 || s.Statuses["502"] != 1 {
		t.Fatalf("summary %+v", s)
	}
	if s.FirstError != "HTTP 502: boom" {
		t.Fatalf("first error %q", s.FirstError)
	}
}

func TestParseServerTiming(t *testing.T) {
	w, i, e := ParseServerTiming("wait;dur=1.5, init;dur=30.25, exec;dur=2")
	if w != 1.5 || i != 30.25 || e != 2 {
		t.Fatalf("got %v %v %v", w, i, e)
	}
	if w, i, e := ParseServerTiming(""); w != 0 || i != 0 || e != 0 {
		t.Fatal("empty header must give zeros")
	}
}

// Lateness is summarised from the lag recorded per request: p50, p99 and
// max, and the share later than the 0.1 ms threshold (exactly at it is
// on time).
func TestLatenessAccounting(t *testing.T) {
	start := time.Unix(100, 0)
	var samples []report.Sample
	for i := range 100 {
		lag := time.Duration(i) * 2 * time.Microsecond // 0 … 198 µs
		samples = append(samples, report.Sample{Status: 200, LatencyNs: 1e6, LagNs: lag.Nanoseconds()})
	}
	s := Summarize(samples, start, start.Add(time.Second))
	sc := s.Schedule
	if sc.LateThresholdMs != 0.1 {
		t.Fatalf("threshold %v ms, want 0.1", sc.LateThresholdMs)
	}
	// Lags above 100 µs: 102 … 198, i.e. i = 51 … 99.
	if sc.LateRequests != 49 || sc.LateFraction != 0.49 {
		t.Fatalf("%d late (%.2f), want 49 (0.49)", sc.LateRequests, sc.LateFraction)
	}
	if sc.P50LagMs != 0.098 || sc.P99LagMs != 0.196 || sc.MaxLagMs != 0.198 {
		t.Fatalf("lag p50 %v p99 %v max %v ms, want 0.098, 0.196, 0.198", sc.P50LagMs, sc.P99LagMs, sc.MaxLagMs)
	}
	if Late(LateThreshold) || !Late(LateThreshold+1) {
		t.Fatal("Late must count lags above the threshold only")
	}
}

// Warm mode goes on warming up until the platform reports the instances
// up, and only then measures.
func TestWarmModeWaitsForInstances(t *testing.T) {
	tg := &fakeTarget{}
	var asked atomic.Int64
	var callsWhenReady atomic.Int64
	ready := func(context.Context) (bool, string, error) {
		asked.Add(1)
		// The platform is "up" once it served 60 warm-up requests, many
		// more than the 5 of --warmup.
		if n := tg.calls.Load(); n >= 60 {
			callsWhenReady.CompareAndSwap(0, n)
			return true, "4 of 4 instances up", nil
		}
		return false, "1 of 4 instances up", nil
	}
	r := &Runner{Target: tg, Plan: Plan{Mode: Warm, Concurrency: 2, Requests: 10, Warmup: 5, Ready: ready}}
	res, err := r.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Samples) != 10 {
		t.Fatalf("%d samples, want 10", len(res.Samples))
	}
	if asked.Load() < 1 || callsWhenReady.Load() < 60 {
		t.Fatalf("ready asked %d times, first ready after %d calls", asked.Load(), callsWhenReady.Load())
	}
	// Every measured request came after the platform said it was ready:
	// the warm-up's requests all answered before the measurement began.
	if total := tg.calls.Load(); total < callsWhenReady.Load()+10 {
		t.Fatalf("%d calls in all, ready after %d: measured requests overlapped the warm-up", total, callsWhenReady.Load())
	}
	for _, s := range res.Samples {
		if s.StartNs < res.Start.UnixNano() {
			t.Fatal("a measured request started before the measurement")
		}
	}
}

func TestWarmModeGivesUpWithWhatIsMissing(t *testing.T) {
	tg := &fakeTarget{}
	ready := func(context.Context) (bool, string, error) { return false, "1 of 4 instances up, 0 starting", nil }
	r := &Runner{Target: tg, Plan: Plan{Mode: Warm, Concurrency: 1, Requests: 10, Warmup: 1, Ready: ready,
		ReadyTimeout: 100 * time.Millisecond}}
	_, err := r.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "1 of 4 instances up") {
		t.Fatalf("err %v, want one saying what is missing", err)
	}
}
