package benchmarks

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/test/harness"
)

// coldStarts is the number of measured cold starts per runtime and
// benchmark iteration.
const coldStarts = 20

// BenchmarkColdStart measures the first request to a function at zero
// instances, for Python (zygote start, handler import, fork) and Node (a
// fresh node process). Each sample redeploys the function with a changed
// environment variable: the new version's first request is cold, and the
// benchmark waits until the previous version's processes are gone so that
// the function is really at zero. Every measured request must carry
// Baton-Cold-Start: true.
//
// Baselines from the same iteration: a warm request to the instance the
// cold start created, and the bare start of the interpreter
// (`python3 -c pass`, `node -e 0`, run to completion with the environment
// Baton gives instances) as the floor of any fresh process.
func BenchmarkColdStart(b *testing.B) {
	logLoad(b)
	s := harness.Start(b, harness.Options{})
	for _, rt := range []struct {
		name, runtime, handler, dir, cmd string
		bare                             []string
	}{
		{"python", function.RuntimePython, "app.handler", "python", "python3", []string{"-c", "pass"}},
		{"node", function.RuntimeNode, "index.handler", "node", "node", []string{"-e", "0"}},
	} {
		b.Run(rt.name, func(b *testing.B) {
			interp := requireCommand(b, rt.cmd)
			if rt.cmd == "python3" {
				interp = realPython(b)
			}
			name := "cold-" + rt.name
			code := zipDir(b, filepath.Join("testdata", rt.dir))
			spec := function.Spec{Runtime: rt.runtime, Handler: rt.handler, MaxScale: 1, IdleTimeoutSeconds: 3600}
			hc := newHTTPClient(1)
			url := invokeURL(s, name)

			// The first start of a new code archive also extracts it; that
			// one-off is logged, not measured.
			spec.Env = map[string]string{"BENCH_ITERATION": "warm-up"}
			deploy(b, s, name, spec, code)
			first := mustPost(b, hc, url, warmPayload)

			var cold, initMs, execMs, warm, bare, penalty []float64
			notCold := 0
			for i := range b.N * coldStarts {
				spec.Env = map[string]string{"BENCH_ITERATION": strconv.Itoa(i)}
				deploy(b, s, name, spec, code)
				waitNoProcesses(b, s)

				r := mustPost(b, hc, url, warmPayload)
				if !r.Cold {
					notCold++
					b.Errorf("iteration %d: request after redeploy was not a cold start", i)
					continue
				}
				cold = append(cold, msOf(r.Latency))
				initMs = append(initMs, r.Init)
				execMs = append(execMs, r.Exec)

				w := mustPost(b, hc, url, warmPayload)
				if w.Cold || w.Instance != r.Instance {
					b.Errorf("iteration %d: follow-up request was not warm on the same instance", i)
				}
				warm = append(warm, msOf(w.Latency))
				penalty = append(penalty, msOf(r.Latency)-msOf(w.Latency))

				bare = append(bare, timeCommand(b, interp, rt.bare...))
			}
			remove(b, s, name)

			suppressNsOp(b)
			c, in, ex, wm, br, pen := summarize(cold), summarize(initMs), summarize(execMs), summarize(warm), summarize(bare), summarize(penalty)
			c.report(b, "cold-")
			in.report(b, "init-")
			b.ReportMetric(wm.P50, "warm-p50-ms")
			b.ReportMetric(br.P50, "bare-start-p50-ms")
			b.ReportMetric(float64(notCold), "not-cold")
			b.Logf("cold start %s, %d samples (ms); not measured: first start of the archive, with code extraction, %.1f ms (init %.1f):%s",
				rt.name, len(cold), msOf(first.Latency), first.Init, table(
					[]string{"measure", "n", "p50", "p90", "p99", "max"},
					[][]string{
						append([]string{"cold request (client)"}, c.cells()...),
						append([]string{"  Server-Timing init"}, in.cells()...),
						append([]string{"  Server-Timing exec"}, ex.cells()...),
						append([]string{"2nd request, same instance"}, wm.cells()...),
						append([]string{"cold - warm (per iteration)"}, pen.cells()...),
						append([]string{"bare interpreter start: " + filepath.Base(interp) + " " + strings.Join(rt.bare, " ")}, br.cells()...),
					}))
		})
	}
}

// timeCommand runs a command to completion and returns its wall time (ms).
func timeCommand(tb testing.TB, name string, args ...string) float64 {
	tb.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = baseEnvList()
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("%s: %v\n%s", name, err, out)
	}
	return msOf(time.Since(start))
}
