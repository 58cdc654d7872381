package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/baton-faas/baton/internal/bench/arrival"
	"github.com/baton-faas/baton/internal/bench/stats"
	"github.com/baton-faas/baton/internal/errdefs"
)

// An open loop of cold starts: request i invokes function names[i] once,
// at the i-th time of a fixed-rate schedule, whether or not earlier
// requests answered. Senders are goroutines spawned before the run starts;
// a dispatcher hands each due request to a free one. What is measured is
// ctrl.Invoke alone (from the sender's call to its return); how late the
// senders picked requests up is reported beside it, so that a run whose
// load generator fell behind is visible as such.

// job is one scheduled request.
type job struct {
	i        int
	intended time.Time
}

// outcome is what one request saw.
type outcome struct {
	latency time.Duration // ctrl.Invoke, call to return
	lag     time.Duration // pickup by a sender after the intended time
	// failure is empty on success: a cold start that returned the echo.
	failure string
}

// loadResult summarises a run at one rate.
type loadResult struct {
	rate     float64
	duration time.Duration
	sent     int
	ok       int
	failures map[string]int
	// latMs are the successful requests' ctrl.Invoke latencies (ms),
	// sorted; allMs every request's.
	latMs, allMs []float64
	lagMs        []float64
	// achieved is completed cold starts per second over the schedule's
	// length plus the time the last request took to answer.
	achieved float64
	wall     time.Duration
	// load is the host's load average when the run began.
	load string
}

// invokeFunc invokes one function once and says why it was not a good
// cold start ("" when it was).
type invokeFunc func(ctx context.Context, name string) string

// runOpenLoop runs rate*duration requests, one per name, on senders
// pre-spawned goroutines.
func runOpenLoop(ctx context.Context, rate float64, duration time.Duration, names []string, senders int, invoke invokeFunc) (loadResult, error) {
	n := int(rate * duration.Seconds())
	if n > len(names) {
		return loadResult{}, fmt.Errorf("%d requests need %d functions, %d are deployed", n, n, len(names))
	}
	gen, err := arrival.New(arrival.Fixed, rate, 1)
	if err != nil {
		return loadResult{}, err
	}
	senders = max(1, min(senders, n))
	jobs := make(chan job, n) // the dispatcher never blocks on a busy sender pool
	outs := make([]outcome, n)
	var wg sync.WaitGroup
	ready := make(chan struct{})
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-ready
			for j := range jobs {
				picked := time.Now()
				res := invoke(ctx, names[j.i])
				outs[j.i] = outcome{latency: time.Since(picked), lag: max(picked.Sub(j.intended), 0), failure: res}
			}
		}()
	}
	close(ready)
	start := time.Now().Add(10 * time.Millisecond) // senders are parked by then
	due := start
	for i := range n {
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		jobs <- job{i: i, intended: due}
		due = due.Add(gen.Next())
	}
	close(jobs)
	wg.Wait()
	wall := time.Since(start)

	res := loadResult{rate: rate, duration: duration, sent: n, failures: map[string]int{}, wall: wall}
	var last time.Time
	for i, o := range outs {
		res.allMs = append(res.allMs, ms(o.latency))
		res.lagMs = append(res.lagMs, ms(o.lag))
		if o.failure != "" {
			res.failures[o.failure]++
			continue
		}
		res.ok++
		res.latMs = append(res.latMs, ms(o.latency))
		// The schedule's i-th time plus what it took: when it answered.
		if end := start.Add(time.Duration(float64(i)/rate*float64(time.Second)) + o.lag + o.latency); end.After(last) {
			last = end
		}
	}
	sort.Float64s(res.latMs)
	sort.Float64s(res.allMs)
	sort.Float64s(res.lagMs)
	if res.ok > 0 {
		res.achieved = float64(res.ok) / last.Sub(start).Seconds()
	}
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// pct is the p-th percentile of sorted values (NaN-free: 0 when empty).
func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return stats.Percentile(sorted, p)
}

// failureKey names why a request failed, by the error's API code (the
// class and code clients see), so that failures group by cause.
func failureKey(err error) string {
	if err == nil {
		return ""
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return "client-deadline"
	}
	class, code := errdefs.Classify(err)
	return fmt.Sprintf("%s/%s", class, code)
}

// failureSummary renders failures as "code×n, ..." sorted by count.
func failureSummary(f map[string]int) string {
	if len(f) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return f[b] - f[a] })
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s×%d", k, f[k]))
	}
	return strings.Join(parts, ", ")
}
