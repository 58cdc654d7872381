package loadgen

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/bench/arrival"
	"github.com/baton-faas/baton/internal/bench/stats"
)

// timerPerRequest is the open loop as it was before the sender pool and
// the pacer, kept as the baseline of BenchmarkOpenLoop: a runtime timer
// per wait and a goroutine started per request, at most maxInFlight at
// once. It returns each request's lag (from its due time until it is
// handed to the target) and latency.
func timerPerRequest(target Target, rate float64, n, maxInFlight int) (lags, latencies []float64) {
	gen, _ := arrival.New(arrival.Exponential, rate, 1)
	var mu sync.Mutex
	var wg sync.WaitGroup
	slots := make(chan struct{}, maxInFlight)
	due := time.Now()
	for range n {
		if wait := time.Until(due); wait > 0 {
			t := time.NewTimer(wait)
			<-t.C
		}
		slots <- struct{}{}
		wg.Add(1)
		go func(due time.Time) {
			defer wg.Done()
			defer func() { <-slots }()
			lag := max(time.Since(due), 0)
			target.Send(context.Background(), []byte("{}"))
			lat := time.Since(due)
			mu.Lock()
			lags = append(lags, float64(lag)/1e6)
			latencies = append(latencies, float64(lat)/1e6)
			mu.Unlock()
		}(due)
		due = due.Add(gen.Next())
	}
	wg.Wait()
	return lags, latencies
}

// BenchmarkOpenLoop measures how well the open loop keeps its schedule
// against a plain HTTP server on loopback, at 200, 2,000 and 10,000
// requests per second (exponential arrivals), one second of load per
// iteration: the Runner (pre-started senders, pacer) against the
// timer-per-request loop it replaced, in the same run. Reported: the
// client's lateness (p50, p99 in µs, share later than 0.1 ms) and the
// requests' latency (p50, p99 in µs). Both keep at most 512 requests
// outstanding.
//
//	go test -run '^$' -bench OpenLoop -benchtime 3x ./internal/bench/loadgen/
func BenchmarkOpenLoop(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"execMs":0,"body":""}`)
	}))
	defer srv.Close()
	const maxInFlight = 512
	target := NewURLTarget(srv.URL+"/", 64)
	defer target.CloseIdle()
	report := func(b *testing.B, lags, latencies []float64) {
		l, d := stats.Describe(lags), stats.Describe(latencies)
		late := 0
		for _, x := range lags {
			if Late(time.Duration(x * 1e6)) {
				late++
			}
		}
		b.ReportMetric(l.P50*1e3, "lag-p50-µs")
		b.ReportMetric(l.P99*1e3, "lag-p99-µs")
		b.ReportMetric(100*float64(late)/float64(max(len(lags), 1)), "late-%")
		b.ReportMetric(d.P50*1e3, "lat-p50-µs")
		b.ReportMetric(d.P99*1e3, "lat-p99-µs")
	}
	for _, rate := range []float64{200, 2000, 10000} {
		n := int(rate) // one second of load
		b.Run(fmt.Sprintf("rate=%d/baseline=timer-per-request", int(rate)), func(b *testing.B) {
			var lags, latencies []float64
			for b.Loop() {
				l, d := timerPerRequest(target, rate, n, maxInFlight)
				lags, latencies = append(lags, l...), append(latencies, d...)
			}
			report(b, lags, latencies)
		})
		b.Run(fmt.Sprintf("rate=%d/runner", int(rate)), func(b *testing.B) {
			var lags, latencies []float64
			for b.Loop() {
				r := &Runner{Target: target, Plan: Plan{Mode: Open, Rate: rate, Arrival: arrival.Exponential, Seed: 1, Requests: n,
					MaxInFlight: maxInFlight}}
				res, err := r.Run(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				for _, s := range res.Samples {
					if s.Error != "" {
						b.Fatal(s.Error)
					}
					lags, latencies = append(lags, float64(s.LagNs)/1e6), append(latencies, float64(s.LatencyNs)/1e6)
				}
			}
			report(b, lags, latencies)
		})
	}
}
