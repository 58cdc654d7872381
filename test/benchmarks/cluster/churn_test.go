package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/controlplane/controller"
)

// Defaults of the churn benchmark: Dirigent's sweep (issue 9), 3 s each.
var (
	defaultChurnRates = []float64{100, 400, 800, 1200, 1600, 2500, 4000}
	churnPayload      = []byte(`{"churn":true}`)
)

// BenchmarkSandboxChurn is Dirigent's headline on Baton: one controller
// (registry and records on JetStream) and BATON_CHURN_WORKERS fake workers
// (40 ms starts) each behind the real worker API (gRPC, mutual TLS, loopback
// TCP). Every request invokes a function that has no instance, so every
// request is a cold start, at a fixed open-loop rate; each rate is a
// sub-benchmark (rate=N) and starts from workers that run nothing.
//
// Metrics per rate: p50-ms, p90-ms, p99-ms (ctrl.Invoke of the successful
// requests), cold-starts/s (achieved), failed, lag-p99-ms (how late the
// pre-spawned senders picked requests up).
//
// Environment: BATON_CHURN_RATES (default 100,400,800,1200,1600,2500,4000),
// BATON_CHURN_DURATION (3s), BATON_CHURN_WORKERS (4),
// BATON_CHURN_START_LATENCY (40ms), BATON_CHURN_SENDERS (2×rate + 256),
// BATON_CHURN_PROFILE_DIR (write a CPU profile of each rate's run, and of
// nothing else, to DIR/churn-RATE.pprof; not with -cpuprofile).
func BenchmarkSandboxChurn(b *testing.B) {
	rates := envRates(b, "BATON_CHURN_RATES", defaultChurnRates)
	duration := envDuration(b, "BATON_CHURN_DURATION", 3*time.Second)
	nWorkers := envInt(b, "BATON_CHURN_WORKERS", 4)
	latency := envDuration(b, "BATON_CHURN_START_LATENCY", 40*time.Millisecond)
	profileDir := os.Getenv("BATON_CHURN_PROFILE_DIR")

	r := newRig(b)
	defer r.close(b)
	ctx := context.Background()
	for i := range nWorkers {
		// A large event buffer: a controller that falls behind the events
		// of thousands of starts per second should be measured, not sent
		// into a resync by a buffer sized for one host's pace.
		w := r.newFake(b, fmt.Sprintf("churn-w%d", i), latency, 1<<16)
		if err := r.ctrl.AddWorker(ctx, r.serve(b, w)); err != nil {
			b.Fatal(err)
		}
	}
	// One function per request of the longest run; every rate reuses them
	// from the first, after their instances were stopped.
	need := 0
	for _, rate := range rates {
		need = max(need, int(rate*duration.Seconds()))
	}
	names := r.deploy(b, "churn", need)

	var table []loadResult
	for _, rate := range rates {
		b.Run(fmt.Sprintf("rate=%g", rate), func(b *testing.B) {
			senders := envInt(b, "BATON_CHURN_SENDERS", int(2*rate)+256)
			for range b.N {
				settle()
				load := loadAvg()
				stop := startProfile(b, profileDir, fmt.Sprintf("churn-%g", rate))
				res, err := runOpenLoop(ctx, rate, duration, names, senders, r.invokeCold)
				stop()
				if err != nil {
					b.Fatal(err)
				}
				res.load = load
				if left := r.drain(b, names[:res.sent]); left > 0 {
					b.Logf("rate %g: %d instances were left on the workers after the controller stopped them", rate, left)
				}
				reportLoad(b, res)
				table = append(table, res)
			}
		})
	}
	b.Logf("sandbox churn: %d workers behind the worker API (gRPC, mTLS), %s fake starts, %s per rate, GOMAXPROCS %d\n%s",
		nWorkers, latency, duration, runtime.GOMAXPROCS(0), formatTable(table))
}

// invokeCold invokes name once through the controller and checks that it
// was a cold start that echoed its event.
func (r *rig) invokeCold(ctx context.Context, name string) string {
	ictx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	inv, err := r.ctrl.Invoke(ictx, name, "", churnPayload)
	return coldFailure(inv, err)
}

// coldFailure says why an invocation was not a successful cold start.
func coldFailure(inv controller.Invocation, err error) string {
	switch {
	case err != nil:
		return failureKey(err)
	case inv.Err != nil:
		return failureKey(inv.Err)
	case inv.FunctionError != nil:
		return "function-error/" + inv.FunctionError.Type
	case !inv.Cold:
		return "not-cold"
	case string(inv.Payload) != string(churnPayload):
		return "wrong-payload"
	}
	return ""
}

// settle lets the previous run's leftovers (stops, records, garbage) finish
// before the next is measured.
func settle() {
	runtime.GC()
	time.Sleep(time.Second)
}

// startProfile writes a CPU profile of what runs until the returned
// function is called, when dir is set.
func startProfile(b *testing.B, dir, name string) func() {
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, name+".pprof"))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Fatalf("CPU profile %s (is -cpuprofile set too?): %v", name, err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			b.Error(err)
		}
	}
}

// reportLoad reports a run's figures as benchmark metrics.
func reportLoad(b *testing.B, res loadResult) {
	b.ReportMetric(0, "ns/op") // one iteration is one whole run: ns/op means nothing
	b.ReportMetric(pct(res.latMs, 50), "p50-ms")
	b.ReportMetric(pct(res.latMs, 90), "p90-ms")
	b.ReportMetric(pct(res.latMs, 99), "p99-ms")
	b.ReportMetric(res.achieved, "cold-starts/s")
	b.ReportMetric(float64(res.sent-res.ok), "failed")
	b.ReportMetric(pct(res.lagMs, 99), "lag-p99-ms")
}

// formatTable renders runs as a Markdown table.
func formatTable(rows []loadResult) string {
	var sb strings.Builder
	sb.WriteString("| rate (/s) | load | sent | ok | p50 | p90 | p99 | max | p99 all | achieved (/s) | sender lag p50/p99/max | failures |\n")
	sb.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&sb, "| %g | %s | %d | %d | %.1f | %.1f | %.1f | %.1f | %.1f | %.0f | %.2f / %.2f / %.1f | %s |\n",
			r.rate, r.load, r.sent, r.ok, pct(r.latMs, 50), pct(r.latMs, 90), pct(r.latMs, 99), pct(r.latMs, 100),
			pct(r.allMs, 99), r.achieved, pct(r.lagMs, 50), pct(r.lagMs, 99), pct(r.lagMs, 100), failureSummary(r.failures))
	}
	return sb.String()
}

// loadAvg is the host's 1-minute load average at the time (the machine is
// shared: the figures depend on it).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}
