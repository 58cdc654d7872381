package benchmarks

import (
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptrace"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/test/harness"
)

const (
	burstRequests = 200
	burstMaxScale = 20
	burstSleepMs  = 200
	burstReps     = 5
)

// burstReq is one request of a burst; offsets are from the burst's start.
type burstReq struct {
	result
	sent, done time.Duration
}

type burstStats struct {
	ok, failed, cold, distinct, newConns int
	// readyN: estimated time the burstMaxScale-th instance became ready
	// (send offset + Server-Timing wait of its cold request).
	// servedN: completion of the first response from the
	// burstMaxScale-th distinct instance. last: the last response.
	firstReady, readyN, servedN, last float64
	lat                               []float64
	firstErr                          string
}

// BenchmarkScaleFromZeroBurst fires burstRequests concurrent requests at a
// Python function that sleeps burstSleepMs, has maxScale burstMaxScale and
// is at zero instances, and measures how fast Baton reaches maxScale, how
// many requests fail and the latency of the burst. Baseline in the same
// repetition: the same burst again right after, on the burstMaxScale
// instances the first burst left warm. The floor for both is
// ceil(burstRequests/burstMaxScale) * burstSleepMs.
//
// Connections are opened before the burst (kept alive), so the burst
// measures Baton and not TCP handshakes; new-conns counts the requests
// that still needed one.
func BenchmarkScaleFromZeroBurst(b *testing.B) {
	load := loadAvg()
	realPython(b)
	s := harness.Start(b, harness.Options{})
	const name = "burst-python"
	code := zipDir(b, filepath.Join("testdata", "python"))
	spec := function.Spec{Runtime: function.RuntimePython, Handler: "app.handler",
		MaxScale: burstMaxScale, IdleTimeoutSeconds: 3600, TimeoutSeconds: 60}
	url := invokeURL(s, name)
	body := []byte(`{"sleep_ms":` + strconv.Itoa(burstSleepMs) + `}`)
	hc := newHTTPClient(burstRequests)

	spec.Env = map[string]string{"BENCH_REPETITION": "warm-up"}
	deploy(b, s, name, spec, code)
	mustPost(b, hc, url, warmPayload) // extracts the archive
	openConnections(hc, s.URL+"/healthz", burstRequests)

	var coldRuns, warmRuns []burstStats
	for rep := range b.N * burstReps {
		spec.Env = map[string]string{"BENCH_REPETITION": strconv.Itoa(rep)}
		deploy(b, s, name, spec, code)
		waitNoProcesses(b, s)
		openConnections(hc, s.URL+"/healthz", burstRequests)
		coldRuns = append(coldRuns, analyzeBurst(burst(hc, url, body, burstRequests)))
		warmRuns = append(warmRuns, analyzeBurst(burst(hc, url, body, burstRequests)))
	}
	remove(b, s, name)

	suppressNsOp(b)
	floor := math.Ceil(float64(burstRequests)/float64(burstMaxScale)) * burstSleepMs
	var perRep []string
	var coldLat, warmLat, servedN, readyN, coldLast, warmLast []float64
	failed, minDistinct, newConns, nCold, warmCold := 0, burstRequests, 0, 0, 0
	for i := range coldRuns {
		for _, x := range []struct {
			kind string
			st   burstStats
		}{{"cold", coldRuns[i]}, {"warm", warmRuns[i]}} {
			st := x.st
			failed += st.failed
			newConns += st.newConns
			if st.failed > 0 {
				b.Errorf("repetition %d (%s): %d failed requests, first: %s", i, x.kind, st.failed, st.firstErr)
			}
		}
		c := coldRuns[i]
		perRep = append(perRep, f1(c.servedN))
		nCold += c.cold
		warmCold += warmRuns[i].cold
		coldLat = append(coldLat, c.lat...)
		warmLat = append(warmLat, warmRuns[i].lat...)
		servedN = append(servedN, c.servedN)
		readyN = append(readyN, c.readyN)
		coldLast = append(coldLast, c.last)
		warmLast = append(warmLast, warmRuns[i].last)
		minDistinct = min(minDistinct, c.distinct)
		if c.distinct < burstMaxScale {
			b.Errorf("repetition %d: only %d distinct instances served the burst (maxScale %d)", i, c.distinct, burstMaxScale)
		}
	}
	cl, wl := summarize(coldLat), summarize(warmLat)
	sv, rd, cLast, wLast := summarize(servedN), summarize(readyN), summarize(coldLast), summarize(warmLast)
	cl.report(b, "cold-")
	wl.report(b, "warm-")
	b.ReportMetric(sv.P50, "served20-p50-ms")
	b.ReportMetric(sv.Max, "served20-max-ms")
	b.ReportMetric(rd.P50, "ready20-p50-ms")
	b.ReportMetric(cLast.P50, "cold-total-p50-ms")
	b.ReportMetric(wLast.P50, "warm-total-p50-ms")
	b.ReportMetric(float64(failed), "failed")
	b.ReportMetric(float64(minDistinct), "distinct-min")
	b.ReportMetric(float64(newConns), "new-conns")
	fr := make([]float64, len(coldRuns))
	for i, c := range coldRuns {
		fr[i] = c.firstReady
	}
	b.Logf("burst of %d requests, handler sleeps %d ms, maxScale %d, %d repetitions; floor for a whole burst %.0f ms; "+
		"failed %d, fewest instances %d, cold starts %d (in warm bursts %d), new connections %d; 20th instance served per repetition [%s]; %s at start; "+
		"ms from the burst's start, pooled:%s",
		burstRequests, burstSleepMs, burstMaxScale, len(coldRuns), floor, failed, minDistinct, nCold, warmCold, newConns,
		strings.Join(perRep, " "), load, table(
			[]string{"measure", "n", "p50", "p90", "p99", "max"},
			[][]string{
				append([]string{"cold burst: request latency"}, cl.cells()...),
				append([]string{"warm burst: request latency"}, wl.cells()...),
				append([]string{"cold: 1st instance ready"}, summarize(fr).cells()...),
				append([]string{"cold: 20th instance ready"}, rd.cells()...),
				append([]string{"cold: 20th instance served"}, sv.cells()...),
				append([]string{"cold: whole burst done"}, cLast.cells()...),
				append([]string{"warm: whole burst done"}, wLast.cells()...),
			}))
}

// openConnections makes the client hold at least n idle kept-alive
// connections: it sends n concurrent requests until a round of them opens
// no new connection.
func openConnections(hc *http.Client, url string, n int) {
	for range 10 {
		var wg sync.WaitGroup
		var fresh atomic.Int32
		gate := make(chan struct{})
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
					ConnectStart: func(string, string) { fresh.Add(1) },
				})
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				if err != nil {
					return
				}
				<-gate
				if resp, err := hc.Do(req); err == nil {
					// Read to EOF, or the connection is not reused.
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}()
		}
		close(gate)
		wg.Wait()
		if fresh.Load() == 0 {
			return
		}
	}
}

// burst sends n requests at once, each from its own goroutine released by
// one gate.
func burst(hc *http.Client, url string, body []byte, n int) []burstReq {
	out := make([]burstReq, n)
	var ready, wg sync.WaitGroup
	gate := make(chan struct{})
	var start time.Time
	for i := range out {
		ready.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ready.Done()
			<-gate
			sent := time.Since(start)
			r := post(hc, url, body, true)
			out[i] = burstReq{result: r, sent: sent, done: time.Since(start)}
		}()
	}
	ready.Wait()
	start = time.Now()
	close(gate)
	wg.Wait()
	return out
}

func analyzeBurst(reqs []burstReq) burstStats {
	var st burstStats
	firstServed := map[string]float64{} // instance -> first completion
	readyAt := map[string]float64{}     // instance -> estimated ready time
	for _, r := range reqs {
		if r.Dialed {
			st.newConns++
		}
		done := msOf(r.done)
		st.last = max(st.last, done)
		if !r.ok() {
			st.failed++
			if st.firstErr == "" {
				st.firstErr = r.describe()
			}
			continue
		}
		st.ok++
		st.lat = append(st.lat, msOf(r.Latency))
		if t, ok := firstServed[r.Instance]; !ok || done < t {
			firstServed[r.Instance] = done
		}
		if r.Cold {
			st.cold++
			at := msOf(r.sent) + r.Wait
			if t, ok := readyAt[r.Instance]; !ok || at < t {
				readyAt[r.Instance] = at
			}
		}
	}
	st.distinct = len(firstServed)
	st.servedN = nthSmallest(firstServed, burstMaxScale)
	st.readyN = nthSmallest(readyAt, burstMaxScale)
	st.firstReady = nthSmallest(readyAt, 1)
	return st
}

// nthSmallest returns the n-th smallest value (1-based), NaN if there are
// fewer.
func nthSmallest(m map[string]float64, n int) float64 {
	if len(m) < n {
		return math.NaN()
	}
	v := make([]float64, 0, len(m))
	for _, x := range m {
		v = append(v, x)
	}
	slices.Sort(v)
	return v[n-1]
}
