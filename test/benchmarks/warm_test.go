package benchmarks

import (
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/test/harness"
)

const (
	// warmRounds rounds of warmRoundDur per target and concurrency; the
	// targets take turns so that machine noise spreads over all of them.
	warmRounds   = 4
	warmRoundDur = time.Second
)

var warmPayload = []byte(`{"n":1}`)

type warmTarget struct {
	name string
	url  string
	hc   *http.Client
}

// BenchmarkWarmInvoke measures warm invocation latency and closed-loop
// throughput of a no-op Python function through POST
// /v1/functions/{name}/invoke, next to a plain Go HTTP server on loopback
// (the baseline) and a no-op Go function (runtime provided, aws-lambda-go)
// that separates Baton's own path from the Python runtime client.
func BenchmarkWarmInvoke(b *testing.B) {
	logLoad(b)
	realPython(b)
	s := harness.Start(b, harness.Options{})
	spec := function.Spec{MaxScale: 16, IdleTimeoutSeconds: 3600, TimeoutSeconds: 30}

	py := spec
	py.Runtime, py.Handler = function.RuntimePython, "app.handler"
	deploy(b, s, "warm-python", py, zipDir(b, filepath.Join("testdata", "python")))

	goSpec := spec
	goSpec.Runtime = function.RuntimeProvided
	deploy(b, s, "warm-go", goSpec, zipDir(b, harness.BuildGo(b, "./test/benchmarks/testdata/noop-go")))

	baseURL := startBaseline(b)

	for _, conc := range []int{1, 8} {
		b.Run("c="+strconv.Itoa(conc), func(b *testing.B) {
			targets := []warmTarget{
				{"baseline", baseURL, newHTTPClient(conc)},
				{"python", invokeURL(s, "warm-python"), newHTTPClient(conc)},
				{"go", invokeURL(s, "warm-go"), newHTTPClient(conc)},
			}
			// Warm up: start the instances and open the connections, and
			// discard everything until a whole pass sees no cold start.
			for _, t := range targets {
				for try := 0; ; try++ {
					r := closedLoop(t.hc, t.url, warmPayload, conc, 500*time.Millisecond)
					if r.Failed > 0 {
						b.Fatalf("%s warm-up: %d failed requests, first: %s", t.name, r.Failed, r.FirstErr)
					}
					if r.Cold == 0 && try > 0 {
						break
					}
					if try == 20 {
						b.Fatalf("%s still cold-starting after %d warm-up passes", t.name, try)
					}
				}
			}
			results := make([]loadResult, len(targets))
			for range b.N {
				for round := range warmRounds {
					for k := range targets {
						i := (k + round) % len(targets) // rotate who goes first
						results[i].merge(closedLoop(targets[i].hc, targets[i].url, warmPayload, conc, warmRoundDur))
					}
				}
			}

			suppressNsOp(b)
			base := summarize(results[0].Lat)
			var rows [][]string
			for i, t := range targets {
				r := results[i]
				if r.Failed > 0 {
					b.Errorf("%s: %d failed requests, first: %s", t.name, r.Failed, r.FirstErr)
				}
				if r.Cold > 0 {
					b.Errorf("%s: %d cold starts during the measurement", t.name, r.Cold)
				}
				sum := summarize(r.Lat)
				sum.report(b, t.name+"-")
				b.ReportMetric(r.throughput(), t.name+"-req/s")
				exec, outer := summarize(r.Exec), summarize(r.Outer)
				if i > 0 {
					b.ReportMetric(exec.P50, t.name+"-exec-p50-ms")
				}
				rows = append(rows, append(append([]string{t.name, strconv.Itoa(conc)}, sum.cells()...),
					f1(r.throughput()), f2(sum.P50-base.P50), f2(sum.P99-base.P99), f2(exec.P50), f2(outer.P50)))
			}
			b.ReportMetric(float64(results[0].Failed+results[1].Failed+results[2].Failed), "failed")
			b.Logf("warm invoke, %d clients, %d rounds x %s per target (interleaved):%s", conc, warmRounds*b.N, warmRoundDur,
				table([]string{"target", "clients", "n", "p50", "p90", "p99", "max", "req/s", "Δp50", "Δp99", "exec p50", "(lat-exec) p50"}, rows))
			b.Logf("latencies in ms; Δ = minus the baseline; exec = Server-Timing exec (worker: Runtime API round trip + runtime client + handler); lat-exec = per request, the rest (client, HTTP API, router, records)")
		})
	}
}
