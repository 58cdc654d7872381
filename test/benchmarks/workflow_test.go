package benchmarks

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/bench/stats"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/test/benchmarks/asyncload"
	"github.com/baton-faas/baton/test/harness"
)

// Workflow benchmarks (issue 11: SAND's hierarchical bus). The functions
// are in testdata/workflow: hop.py (the hop), pipeline.py (the image
// pipeline); testdata/python is the no-op of the throughput workflow.

// ---------------------------------------------------------------------------
// Shared helpers.

// wfFunction deploys a Python function of testdata/workflow.
func wfFunction(tb testing.TB, s *harness.Server, name, handler, app string, code []byte, tune func(*function.Spec)) {
	tb.Helper()
	spec := function.Spec{Runtime: function.RuntimePython, Handler: handler, App: app,
		MaxScale: 8, IdleTimeoutSeconds: 3600, TimeoutSeconds: 60}
	if tune != nil {
		tune(&spec)
	}
	deploy(tb, s, name, spec, code)
}

// putWorkflow deploys a workflow definition (ASL JSON).
func putWorkflow(tb testing.TB, s *harness.Server, name, definition string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := s.Client.DeployWorkflow(ctx, name, []byte(definition)); err != nil {
		tb.Fatalf("deploy workflow %s: %v", name, err)
	}
}

// wfClient is an API client of s with kept-alive connections for conc
// concurrent callers (the harness's client keeps only two).
func wfClient(tb testing.TB, s *harness.Server, conc int) *client.Client {
	tb.Helper()
	c, err := client.New(s.URL, newHTTPClient(conc), client.WithToken(s.Token))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// runSync runs an execution to its end and returns it with the client's
// latency; an execution that did not succeed is an error.
func runSync(ctx context.Context, c *client.Client, wf string, input []byte) (apiv1.Execution, time.Duration, error) {
	start := time.Now()
	x, err := c.StartExecution(ctx, wf, input, client.StartOptions{Sync: true})
	lat := time.Since(start)
	if err != nil {
		return x, lat, fmt.Errorf("execution of %s: %w", wf, err)
	}
	if x.Status != apiv1.ExecutionSucceeded {
		return x, lat, fmt.Errorf("execution %s of %s ended %s: %s: %s", x.ID, wf, x.Status, x.Error, x.Cause)
	}
	return x, lat, nil
}

// distRow is a table row: label cells, then n, p50, p90, p99 and max.
func distRow(d stats.Dist, labels ...string) []string {
	return append(labels, strconv.Itoa(d.Count), f2(d.P50), f2(d.P90), f2(d.P99), f2(d.Max))
}

// wfPrint prints a table or a note on stdout, under the benchmark's name:
// b.Logf keeps only a benchmark's first 10 lines, and these tables are
// longer.
func wfPrint(b *testing.B, format string, args ...any) {
	fmt.Printf("%s: "+format+"\n", append([]any{b.Name()}, args...)...)
}

// isolation is the server's sandbox kind, for the output.
func isolation(ctx context.Context, s *harness.Server) string {
	h, err := s.Client.Health(ctx)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return h.Isolation
}

// reportDist reports a distribution's median and p99 (ms).
func reportDist(b *testing.B, prefix string, d stats.Dist) {
	b.ReportMetric(d.P50, prefix+"-p50-ms")
	b.ReportMetric(d.P99, prefix+"-p99-ms")
}

// ratio is a/b, NaN when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// startPyServer runs a Python script that prints its port on its first
// line and serves on 127.0.0.1; it returns the port.
func startPyServer(tb testing.TB, script string, args ...string) string {
	tb.Helper()
	cmd := exec.Command(realPython(tb), append([]string{script}, args...)...)
	cmd.Env = baseEnvList()
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	port := make(chan string, 1)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		line, _ := bufio.NewReader(out).ReadString('\n')
		port <- strings.TrimSpace(line)
		_, _ = io.Copy(io.Discard, out)
	}()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		<-drained
	})
	select {
	case p := <-port:
		if _, err := strconv.Atoi(p); err != nil {
			tb.Fatalf("%s printed %q, not a port", script, p)
		}
		return p
	case <-time.After(30 * time.Second):
		tb.Fatalf("%s did not start", script)
	}
	return ""
}

// ---------------------------------------------------------------------------
// BenchmarkWorkflowHop

const hopDefinition = `{
  "Comment": "two no-op steps: the hop is from First's end to Second's start",
  "StartAt": "First",
  "States": {
    "First": {"Type": "Task", "Resource": "hop-first", "Next": "Second"},
    "Second": {"Type": "Task", "Resource": "hop-second", "End": true}
  }
}`

const (
	// hopRounds warm hops per variant, the variants taking turns.
	hopRounds = 200
	// hopColdRounds cold hops per bus, taking turns.
	hopColdRounds = 25
	hopWarmUp     = 5
)

// hopOut is what step 2 returns (testdata/workflow/hop.py).
type hopOut struct {
	HopNs   int64 `json:"hop_ns"`
	T1End   int64 `json:"t1_end"`
	T2Start int64 `json:"t2_start"`
	Cold    bool  `json:"cold"`
	exec    string
}

type hopVariant struct {
	name string
	run  func(ctx context.Context) (hopOut, error)
	hops []float64 // ms
	outs []hopOut
}

// BenchmarkWorkflowHop measures SAND's function-interaction latency: the
// hop from the end of one no-op Python function to the start of the next,
// each side taking time.time_ns() (one clock), warm, over
//   - local: a two-step workflow on a server with the default bus (the
//     step handed to the router in the same process);
//   - global: the same workflow on a second server started with
//     --workflow-bus global (an async step event through JetStream);
//   - http-api: step 1 invokes step 2 itself, POST /v1/functions/NAME/invoke
//     on loopback with urllib (a new connection per call);
//   - http-api-keepalive: the same over a kept-alive http.client connection;
//   - loopback-http: the floor, two Python processes speaking plain
//     HTTP/1.1 over loopback sockets (testdata/workflow-floor), one POSTing
//     to the other over a kept-alive connection;
//
// the variants taking turns, then cold: step 2's function recycled before
// each execution, over each bus. Each hop is then split into parts from
// the execution's history (when the engine had step 1's result, when it
// scheduled step 2) and step 2's invocation record (when the router took
// it, how long it waited for an instance), all on the machine's one clock.
// With BATON_BENCH_PERF=FILE it then records the local server's CPU with
// perf over 2,000 more local executions.
func BenchmarkWorkflowHop(b *testing.B) {
	logLoad(b)
	suppressNsOp(b)
	realPython(b)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	local := harness.Start(b, harness.Options{})
	global := harness.Start(b, harness.Options{Args: []string{"--workflow-bus", "global"}})
	code := zipDir(b, filepath.Join("testdata", "workflow"))
	for _, s := range []*harness.Server{local, global} {
		wfFunction(b, s, "hop-first", "hop.first", "wfhop", code, nil)
		wfFunction(b, s, "hop-second", "hop.second", "wfhop", code, nil)
		putWorkflow(b, s, "hop", hopDefinition)
	}
	// The caller needs the host's network to reach the API on loopback;
	// an app of its own, since an app's functions share one network.
	wfFunction(b, local, "hop-caller", "hop.caller", "wfhop-api", code, func(sp *function.Spec) { sp.Network = function.NetworkHost })
	floor := filepath.Join("testdata", "workflow-floor", "floor.py")
	floorURL := "http://127.0.0.1:" + startPyServer(b, floor, "first", startPyServer(b, floor, "second")) + "/"

	lc, gc := wfClient(b, local, 2), wfClient(b, global, 2)
	hc := newHTTPClient(2)
	viaWorkflow := func(c *client.Client) func(context.Context) (hopOut, error) {
		return func(ctx context.Context) (hopOut, error) {
			x, _, err := runSync(ctx, c, "hop", []byte(`{}`))
			if err != nil {
				return hopOut{}, err
			}
			var o hopOut
			if err := json.Unmarshal(x.Output, &o); err != nil {
				return o, fmt.Errorf("execution %s output %s: %w", x.ID, x.Output, err)
			}
			o.exec = x.ID
			return o, nil
		}
	}
	viaPost := func(url string, body []byte) func(context.Context) (hopOut, error) {
		return func(context.Context) (hopOut, error) {
			r := post(hc, url, body, false)
			if !r.ok() {
				return hopOut{}, fmt.Errorf("POST %s: %s", url, r.describe())
			}
			var o hopOut
			if err := json.Unmarshal(r.Body, &o); err != nil {
				return o, fmt.Errorf("POST %s answered %s: %w", url, r.Body, err)
			}
			return o, nil
		}
	}
	callerEvent := func(keepalive bool) []byte {
		ev, _ := json.Marshal(map[string]any{"api": local.URL, "next": "hop-second", "keepalive": keepalive})
		return ev
	}
	variants := []*hopVariant{
		{name: "local", run: viaWorkflow(lc)},
		{name: "global", run: viaWorkflow(gc)},
		{name: "http-api", run: viaPost(invokeURL(local, "hop-caller"), callerEvent(false))},
		{name: "http-api-keepalive", run: viaPost(invokeURL(local, "hop-caller"), callerEvent(true))},
		{name: "loopback-http", run: viaPost(floorURL, []byte(`{}`))},
	}

	// Warm up: instances started, connections open, .pyc written.
	for _, v := range variants {
		for i := range hopWarmUp {
			if _, err := v.run(ctx); err != nil {
				b.Fatalf("%s warm-up %d: %v", v.name, i, err)
			}
		}
	}
	n := hopRounds * b.N
	for i := range n {
		for k := range variants {
			v := variants[(k+i)%len(variants)] // rotate who goes first
			o, err := v.run(ctx)
			if err != nil {
				b.Fatalf("%s hop %d: %v", v.name, i, err)
			}
			if o.Cold {
				b.Errorf("%s hop %d: step 2 ran in a new instance during the warm rounds", v.name, i)
			}
			v.hops = append(v.hops, float64(o.HopNs)/1e6)
			v.outs = append(v.outs, o)
		}
	}

	// Cold: step 2's function recycled (and gone) before each execution.
	cold := []*hopVariant{
		{name: "local-cold", run: coldHop(local, viaWorkflow(lc))},
		{name: "global-cold", run: coldHop(global, viaWorkflow(gc))},
	}
	for i := range hopColdRounds * b.N {
		for k := range cold {
			v := cold[(k+i)%len(cold)]
			o, err := v.run(ctx)
			if err != nil {
				b.Fatalf("%s hop %d: %v", v.name, i, err)
			}
			if !o.Cold {
				b.Errorf("%s hop %d: step 2 found a warm instance after its function was recycled", v.name, i)
			}
			v.hops = append(v.hops, float64(o.HopNs)/1e6)
			v.outs = append(v.outs, o)
		}
	}

	base := stats.Describe(variants[0].hops)
	var rows [][]string
	for _, v := range append(variants, cold...) {
		d := stats.Describe(v.hops)
		reportDist(b, v.name+"-hop", d)
		rows = append(rows, append(distRow(d, v.name), f1(ratio(d.P50, base.P50)), f1(ratio(d.P99, base.P99))))
	}
	apiOverLocal := ratio(stats.Describe(variants[2].hops).P50, base.P50)
	keepOverLocal := ratio(stats.Describe(variants[3].hops).P50, base.P50)
	b.ReportMetric(apiOverLocal, "http-api/local-p50-x")
	b.ReportMetric(keepOverLocal, "http-api-keepalive/local-p50-x")
	wfPrint(b, "hop from step 1's end to step 2's start (ms), %d warm rounds, %d cold, variants taking turns:%s", n, hopColdRounds*b.N,
		table([]string{"variant", "n", "p50", "p90", "p99", "max", "×local p50", "×local p99"}, rows))

	// Where the hops go: the execution histories and step 2's
	// invocation records (same clock) split each hop into parts.
	recs := map[*client.Client][]apiv1.Invocation{}
	for _, c := range []*client.Client{lc, gc} {
		r, err := c.Invocations(ctx, "hop-second", 10000)
		if err != nil {
			b.Fatal(err)
		}
		recs[c] = r
	}
	var partRows [][]string
	for _, v := range []*hopVariant{variants[0], variants[1], variants[2], variants[3], cold[0], cold[1]} {
		c, viaAPI := lc, strings.HasPrefix(v.name, "http-api")
		if strings.HasPrefix(v.name, "global") {
			c = gc
		}
		parts, err := hopParts(ctx, c, recs[c], v.outs, viaAPI)
		if err != nil {
			b.Errorf("%s: %v", v.name, err)
			continue
		}
		row := []string{v.name, strconv.Itoa(len(v.outs))}
		for i, p := range parts {
			d := stats.Describe(p)
			if d.Count == 0 {
				row = append(row, "-")
				continue
			}
			row = append(row, f2(d.P50)+" / "+f2(d.P99))
			if !strings.Contains(v.name, "cold") {
				b.ReportMetric(d.P50, v.name+"-"+hopPartNames[i]+"-p50-ms")
			}
		}
		partRows = append(partRows, row)
	}
	wfPrint(b, "the hop's parts, p50 / p99 (ms): return = step 1's end → the engine has its result (TaskSucceeded); engine = → step 2 scheduled (TaskScheduled); "+
		"bus = → step 2's invocation starts (local: the router; global: the step event through JetStream; http-api: the request through the API); "+
		"instance = the invocation's wait for an instance (a cold start included); deliver = → step 2's handler entered:%s",
		table(append([]string{"variant", "n"}, hopPartNames...), partRows))
	if path := os.Getenv("BATON_BENCH_PERF"); path != "" {
		profileLocalHops(b, ctx, local, viaWorkflow(lc), path)
	}
	b.Logf("goal (issue 11): warm local hop p50 ≤ 0.3 ms and ≥ 10× faster than via the HTTP API: local p50 %.3f ms, http-api %.1f×, http-api-keepalive %.1f×",
		base.P50, apiOverLocal, keepOverLocal)
	b.Logf("sandboxes: %s; at the end: %s", isolation(ctx, local), loadAvg())
}

// hopProfileRuns is how many local executions BATON_BENCH_PERF profiles.
const hopProfileRuns = 2000

// profileLocalHops records the local server's CPU with perf (call graphs,
// 2 kHz) into path while it runs hopProfileRuns executions back to back:
// where the local bus spends its CPU (read it with perf report -i path).
func profileLocalHops(b *testing.B, ctx context.Context, s *harness.Server, run func(context.Context) (hopOut, error), path string) {
	perf := exec.Command(requireCommand(b, "perf"), "record", "-F", "2000", "-g", "-p", strconv.Itoa(s.Pid()), "-o", path)
	perf.Stdout, perf.Stderr = os.Stderr, os.Stderr
	if err := perf.Start(); err != nil {
		b.Fatalf("perf record: %v", err)
	}
	time.Sleep(500 * time.Millisecond) // perf attaches
	start := time.Now()
	var runErr error
	for i := 0; i < hopProfileRuns && runErr == nil; i++ {
		_, runErr = run(ctx)
	}
	took := time.Since(start)
	// perf writes its file on SIGINT and exits by the signal: its file
	// says whether it worked.
	_ = perf.Process.Signal(os.Interrupt)
	waitErr := perf.Wait()
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		b.Errorf("perf record wrote no profile (%v): %v", err, waitErr)
	}
	if runErr != nil {
		b.Fatalf("profiled executions: %v", runErr)
	}
	wfPrint(b, "perf profile of the local server over %d executions (%.0f/s) in %s", hopProfileRuns, hopProfileRuns/took.Seconds(), path)
}

// coldHop wraps run: step 2's function is recycled on s, and its instances
// gone, before each run.
func coldHop(s *harness.Server, run func(context.Context) (hopOut, error)) func(context.Context) (hopOut, error) {
	return func(ctx context.Context) (hopOut, error) {
		if err := s.Client.Recycle(ctx, "hop-second"); err != nil {
			return hopOut{}, fmt.Errorf("recycle hop-second: %w", err)
		}
		for {
			fn, err := s.Client.Get(ctx, "hop-second")
			if err != nil {
				return hopOut{}, err
			}
			st := fn.Status
			if len(st.Instances) == 0 && st.Starting == 0 && st.Stopping == 0 {
				break
			}
			select {
			case <-ctx.Done():
				return hopOut{}, fmt.Errorf("hop-second's instances still there after recycling: %+v", st)
			case <-time.After(5 * time.Millisecond):
			}
		}
		return run(ctx)
	}
}

var hopPartNames = []string{"return", "engine", "bus", "instance", "deliver"}

// hopParts splits hops into hopPartNames from each execution's history
// (engine times), step 2's invocation record (router times) and the
// functions' own times (t1_end, t2_start): one clock. The record of a
// hop is the one whose run holds t2_start (step 2 ran one at a time).
// Hops through the HTTP API have no return or engine part.
func hopParts(ctx context.Context, c *client.Client, recs []apiv1.Invocation, outs []hopOut, viaAPI bool) ([][]float64, error) {
	parts := make([][]float64, len(hopPartNames))
	for _, o := range outs {
		t1, t2 := time.Unix(0, o.T1End), time.Unix(0, o.T2Start)
		var rec *apiv1.Invocation
		for i := range recs {
			if !recs[i].Start.After(t2) && !recs[i].End.Before(t2) {
				rec = &recs[i]
				break
			}
		}
		if rec == nil {
			return nil, fmt.Errorf("no invocation record of hop-second holds its start %s", t2)
		}
		// The wait includes a cold start (init is part of it).
		onInstance := rec.Start.Add(time.Duration(rec.WaitMs * 1e6))
		parts[3] = append(parts[3], rec.WaitMs)
		parts[4] = append(parts[4], msOf(t2.Sub(onInstance)))
		if viaAPI {
			parts[2] = append(parts[2], msOf(rec.Start.Sub(t1)))
			continue
		}
		done, sched, err := hopEvents(ctx, c, o.exec)
		if err != nil {
			return nil, err
		}
		parts[0] = append(parts[0], msOf(done.Sub(t1)))
		parts[1] = append(parts[1], msOf(sched.Sub(done)))
		parts[2] = append(parts[2], msOf(rec.Start.Sub(sched)))
	}
	return parts, nil
}

// hopEvents returns when step 1's result reached the engine and when
// step 2 was scheduled, from the execution's history (written off the
// critical path: waited for).
func hopEvents(ctx context.Context, c *client.Client, id string) (done, sched time.Time, err error) {
	for try := 0; ; try++ {
		x, err := c.DescribeExecution(ctx, id)
		if err != nil {
			return done, sched, err
		}
		for _, ev := range x.History {
			switch {
			case ev.Kind == "TaskSucceeded" && ev.State == "First":
				done = ev.Time
			case ev.Kind == "TaskScheduled" && ev.State == "Second":
				sched = ev.Time
			}
		}
		if !done.IsZero() && !sched.IsZero() {
			return done, sched, nil
		}
		if try == 100 {
			return done, sched, fmt.Errorf("execution %s: no TaskSucceeded of First or TaskScheduled of Second in its history", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// BenchmarkWorkflowPipeline

const pipelineDefinition = `{
  "Comment": "SAND's image pipeline: extract metadata, then (if big enough) transform and thumbnail in parallel, then store",
  "StartAt": "Extract",
  "States": {
    "Extract": {"Type": "Task", "Resource": "pipe-extract", "Next": "BigEnough"},
    "BigEnough": {"Type": "Choice",
      "Choices": [{"Variable": "$.meta.width", "NumericGreaterThanEquals": 64, "Next": "Process"}],
      "Default": "Store"},
    "Process": {"Type": "Parallel", "Next": "Store", "Branches": [
      {"StartAt": "Transform", "States": {"Transform": {"Type": "Task", "Resource": "pipe-transform", "End": true}}},
      {"StartAt": "Thumbnail", "States": {"Thumbnail": {"Type": "Task", "Resource": "pipe-thumbnail", "End": true}}}
    ]},
    "Store": {"Type": "Task", "Resource": "pipe-store", "End": true}
  }
}`

const (
	pipelineSide     = 512 // 512×512 RGB: 768 KiB raw, 1 MiB in base64
	pipelineSingle   = 30  // executions one at a time, per variant
	pipelineConc     = 50
	pipelineBatches  = 3 // batches of pipelineConc per variant
	pipelineCritHops = 3 // task levels on the critical path: extract, transform‖thumbnail, store
)

// stepTime is what a pipeline function reports about itself (ns).
type stepTime struct {
	In, Out, Compute, IO int64
}

// pipeSample is one execution of the pipeline.
type pipeSample struct {
	total, server, compute, io, overhead, fanOut, fanIn float64 // ms
}

// pipeVariant is a way of passing images.
type pipeVariant struct {
	pass    string
	samples map[int][]pipeSample // by concurrency
}

// BenchmarkWorkflowPipeline runs SAND's image pipeline (4 Python steps,
// a Choice and a Parallel) on 512×512 RGB images made in the functions,
// passed inline (base64 in the events) or by reference (a file in the
// app's /tmp; the data layer's local and global scopes where the runtime
// has `from baton import data`), one execution at a time and 50 at once,
// the variants taking turns. Per execution: the client's total, the
// functions' own compute on the critical path (each reports it), the
// overhead (total − compute) and its share per critical-path step, and
// the two fan hops (extract's end → the first branch's start through
// Choice and Parallel; the last branch's end → store's start).
func BenchmarkWorkflowPipeline(b *testing.B) {
	logLoad(b)
	suppressNsOp(b)
	realPython(b)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	// The local data layer holds an app's 64 MiB by default: 50
	// executions' images at once (about 1.6 MiB each) need more.
	s := harness.Start(b, harness.Options{Args: []string{"--data-local-bytes", strconv.Itoa(1 << 30), "--data-local-app-bytes", strconv.Itoa(512 << 20)}})
	code := zipDir(b, filepath.Join("testdata", "workflow"))
	big := func(sp *function.Spec) { sp.MemoryMB = 256 }
	for _, f := range []string{"extract", "transform", "thumbnail", "store"} {
		// One app: its functions share a sandbox, so /tmp too.
		wfFunction(b, s, "pipe-"+f, "pipeline."+f, "wfpipe", code, big)
	}
	putWorkflow(b, s, "pipeline", pipelineDefinition)
	c := wfClient(b, s, pipelineConc)

	seq := 0 // run ids, unique per execution (inputs are made in one goroutine)
	input := func(pass string) []byte {
		seq++
		in, _ := json.Marshal(map[string]any{"run": fmt.Sprintf("%s-%d", pass, seq), "pass": pass, "seed": seq % 256, "side": pipelineSide})
		return in
	}

	// Which ways of passing by reference this platform has: a variant
	// that cannot run is left out, and said so.
	var variants []*pipeVariant
	for _, pass := range []string{"inline", "file", "data-local", "data-global"} {
		if _, _, err := runSync(ctx, c, "pipeline", input(pass)); err != nil {
			if pass == "inline" {
				b.Fatal(err)
			}
			// A runtime without `from baton import data` fails the
			// data-* variants here.
			b.Logf("pass %s left out: %v", pass, err)
			continue
		}
		variants = append(variants, &pipeVariant{pass: pass, samples: map[int][]pipeSample{}})
	}

	one := func(v *pipeVariant, conc int) error {
		x, lat, err := runSync(ctx, c, "pipeline", input(v.pass))
		if err != nil {
			return err
		}
		sm, err := pipelineSample(x, lat)
		if err != nil {
			return err
		}
		v.samples[conc] = append(v.samples[conc], sm)
		return nil
	}
	batch := func(v *pipeVariant, conc int, keep bool) error {
		inputs := make([][]byte, conc)
		for i := range inputs {
			inputs[i] = input(v.pass)
		}
		got := make([]pipeSample, conc)
		errs := make([]error, conc)
		var wg sync.WaitGroup
		for i := range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				x, lat, err := runSync(ctx, c, "pipeline", inputs[i])
				if err == nil {
					got[i], err = pipelineSample(x, lat)
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
		if keep {
			v.samples[conc] = append(v.samples[conc], got...)
		}
		return nil
	}

	// Warm up: a batch of each (scales the functions up), discarded.
	for _, v := range variants {
		if err := batch(v, pipelineConc, false); err != nil {
			b.Fatalf("%s warm-up: %v", v.pass, err)
		}
	}
	for i := range pipelineSingle * b.N {
		for k := range variants {
			if err := one(variants[(k+i)%len(variants)], 1); err != nil {
				b.Fatal(err)
			}
		}
	}
	for i := range pipelineBatches * b.N {
		for k := range variants {
			if err := batch(variants[(k+i)%len(variants)], pipelineConc, true); err != nil {
				b.Fatal(err)
			}
		}
	}

	var rows [][]string
	for _, conc := range []int{1, pipelineConc} {
		for _, v := range variants {
			col := func(f func(pipeSample) float64) stats.Dist {
				var vals []float64
				for _, sm := range v.samples[conc] {
					vals = append(vals, f(sm))
				}
				return stats.Describe(vals)
			}
			total := col(func(s pipeSample) float64 { return s.total })
			server := col(func(s pipeSample) float64 { return s.server })
			compute := col(func(s pipeSample) float64 { return s.compute })
			io := col(func(s pipeSample) float64 { return s.io })
			over := col(func(s pipeSample) float64 { return s.overhead })
			perStep := col(func(s pipeSample) float64 { return s.overhead / pipelineCritHops })
			fanOut := col(func(s pipeSample) float64 { return s.fanOut })
			fanIn := col(func(s pipeSample) float64 { return s.fanIn })
			prefix := fmt.Sprintf("%s-c%d", v.pass, conc)
			reportDist(b, prefix+"-total", total)
			reportDist(b, prefix+"-overhead", over)
			b.ReportMetric(perStep.P50, prefix+"-overhead-per-step-p50-ms")
			rows = append(rows, []string{v.pass, strconv.Itoa(conc), strconv.Itoa(total.Count), f1(total.P50), f1(total.P99),
				f1(server.P50), f1(compute.P50), f1(io.P50), f1(over.P50), f1(over.P99), f2(perStep.P50),
				f2(fanOut.P50), f2(fanIn.P50)})
		}
	}
	wfPrint(b, "image pipeline (%d×%d RGB), ms, p50 unless p99; %d single executions and %d batches of %d per variant, taking turns:%s",
		pipelineSide, pipelineSide, pipelineSingle*b.N, pipelineBatches*b.N, pipelineConc,
		table([]string{"pass", "conc", "n", "total", "p99", "server", "compute", "io", "overhead", "p99", "per step", "fan-out", "fan-in"}, rows))
	wfPrint(b, "total: the client's sync call; server: the execution's start→stop; compute: image work on the critical path (extract, the later branch, store); io: the functions' own getting and putting of images there; overhead: total − compute, per step: / %d",
		pipelineCritHops)
	b.Logf("sandboxes: %s; at the end: %s", isolation(ctx, s), loadAvg())
}

// pipelineSample reads one execution's timings from its output.
func pipelineSample(x apiv1.Execution, lat time.Duration) (pipeSample, error) {
	var out struct {
		T map[string]stepTime `json:"t"`
	}
	if err := json.Unmarshal(x.Output, &out); err != nil {
		return pipeSample{}, fmt.Errorf("execution %s output: %w", x.ID, err)
	}
	var t = struct{ ex, tr, th, st stepTime }{out.T["extract"], out.T["transform"], out.T["thumbnail"], out.T["store"]}
	for k, st := range map[string]stepTime{"extract": t.ex, "transform": t.tr, "thumbnail": t.th, "store": t.st} {
		if st.In == 0 || st.Out < st.In {
			return pipeSample{}, fmt.Errorf("execution %s: no timing of %s in %s", x.ID, k, x.Output)
		}
	}
	late := t.tr // the branch on the critical path: the one that ended later
	if t.th.Out > t.tr.Out {
		late = t.th
	}
	s := pipeSample{
		total:   msOf(lat),
		server:  msOf(x.Stopped.Sub(x.Started)),
		compute: float64(t.ex.Compute+late.Compute+t.st.Compute) / 1e6,
		io:      float64(t.ex.IO+late.IO+t.st.IO) / 1e6,
		fanOut:  float64(min(t.tr.In, t.th.In)-t.ex.Out) / 1e6,
		fanIn:   float64(t.st.In-late.Out) / 1e6,
	}
	s.overhead = s.total - s.compute
	return s, nil
}

// ---------------------------------------------------------------------------
// BenchmarkWorkflowThroughput

const throughputDefinition = `{
  "Comment": "3 Pass and 2 Task states; a Task the platform refuses for a full queue is tried again",
  "StartAt": "Begin",
  "States": {
    "Begin": {"Type": "Pass", "Result": {"n": 1}, "ResultPath": "$.begin", "Next": "A"},
    "A": {"Type": "Task", "Resource": "tp-a", "ResultPath": "$.a", "Next": "Middle",
      "Retry": [{"ErrorEquals": ["Baton.TooManyRequests"], "IntervalSeconds": 1, "MaxAttempts": 5, "BackoffRate": 2}]},
    "Middle": {"Type": "Pass", "Next": "B"},
    "B": {"Type": "Task", "Resource": "tp-b", "ResultPath": "$.b", "Next": "Finish",
      "Retry": [{"ErrorEquals": ["Baton.TooManyRequests"], "IntervalSeconds": 1, "MaxAttempts": 5, "BackoffRate": 2}]},
    "Finish": {"Type": "Pass", "End": true}
  }
}`

const (
	tpStates    = 5 // states an execution passes through: its transitions
	tpRounds    = 3 // rounds per target and concurrency, alternating
	tpRoundDur  = 3 * time.Second
	tpAsyncN    = 1000 // async starts per round
	tpAsyncConc = 8
	tpAsyncRuns = 2 // rounds of each, alternating
)

// BenchmarkWorkflowThroughput measures one server's workflow throughput
// with a workflow of 3 Pass and 2 Task states (no-op Python functions):
//   - sync: 8 and 32 closed-loop clients running executions through the
//     workflow's function URL (/wf/NAME), against the same clients
//     invoking one of its functions directly (POST .../invoke), in
//     alternating rounds: executions/s, transitions/s (5 per execution)
//     and tasks/s against invocations/s;
//   - async: 1,000 starts (202) from 8 clients, and the rate at which they
//     completed (from the first start to the last stop), against 1,000
//     async invocations of the function, alternating.
func BenchmarkWorkflowThroughput(b *testing.B) {
	logLoad(b)
	suppressNsOp(b)
	realPython(b)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	s := harness.Start(b, harness.Options{})
	code := zipDir(b, filepath.Join("testdata", "python"))
	for _, f := range []string{"tp-a", "tp-b"} {
		wfFunction(b, s, f, "app.handler", "wftp", code, func(sp *function.Spec) { sp.MaxScale = 16 })
	}
	putWorkflow(b, s, "tp", throughputDefinition)
	c := wfClient(b, s, 32)
	if x, _, err := runSync(ctx, c, "tp", []byte(`{}`)); err != nil || x.Steps != tpStates {
		b.Fatalf("first execution: %v (steps %d, want %d)", err, x.Steps, tpStates)
	}

	wfURL, fnURL := s.URL+"/wf/tp", invokeURL(s, "tp-a")
	var rows [][]string
	for _, conc := range []int{8, 32} {
		hc := newHTTPClient(conc)
		for _, url := range []string{wfURL, fnURL} {
			if r := closedLoop(hc, url, warmPayload, conc, time.Second); r.Failed > 0 {
				b.Fatalf("warm-up %s: %d failed, first: %s", url, r.Failed, r.FirstErr)
			}
		}
		var wf, fn loadResult
		for round := range tpRounds * b.N {
			if round%2 == 0 {
				wf.merge(closedLoop(hc, wfURL, warmPayload, conc, tpRoundDur))
				fn.merge(closedLoop(hc, fnURL, warmPayload, conc, tpRoundDur))
			} else {
				fn.merge(closedLoop(hc, fnURL, warmPayload, conc, tpRoundDur))
				wf.merge(closedLoop(hc, wfURL, warmPayload, conc, tpRoundDur))
			}
		}
		for _, r := range []loadResult{wf, fn} {
			if r.Failed > 0 {
				b.Errorf("%d clients: %d failed, first: %s", conc, r.Failed, r.FirstErr)
			}
		}
		wd, fd := stats.Describe(wf.Lat), stats.Describe(fn.Lat)
		p := fmt.Sprintf("c%d-", conc)
		b.ReportMetric(wf.throughput(), p+"executions/s")
		b.ReportMetric(wf.throughput()*tpStates, p+"transitions/s")
		b.ReportMetric(fn.throughput(), p+"invokes/s")
		reportDist(b, p+"execution", wd)
		reportDist(b, p+"invoke", fd)
		rows = append(rows,
			[]string{"sync execution", strconv.Itoa(conc), strconv.Itoa(wd.Count), f1(wf.throughput()),
				f1(wf.throughput() * tpStates), f1(2 * wf.throughput()), f2(wd.P50), f2(wd.P99)},
			[]string{"sync invoke (baseline)", strconv.Itoa(conc), strconv.Itoa(fd.Count), f1(fn.throughput()),
				"-", f1(fn.throughput()), f2(fd.P50), f2(fd.P99)})
	}

	// Async: starts accepted, then their completion, against async
	// invocations of the function.
	var wfAccept []float64
	var wfStart, wfDone, fnStart, fnDone time.Duration
	failed := 0
	for round := range tpAsyncRuns * b.N {
		for k := range 2 {
			if (round+k)%2 == 0 {
				began := time.Now()
				ids, acc, err := asyncload.StartExecutions(ctx, c, "tp", tpAsyncN, tpAsyncConc, func(int) []byte { return []byte(`{}`) })
				if err != nil {
					b.Fatal(err)
				}
				wfStart += time.Since(began)
				xs, err := asyncload.Executions{HTTP: newHTTPClient(1), URL: s.URL, Token: s.Token}.Finished(ctx, ids)
				if err != nil {
					b.Fatal(err)
				}
				var last time.Time
				for _, x := range xs {
					if x.Status != apiv1.ExecutionSucceeded {
						failed++
					}
					if x.Stopped.After(last) {
						last = x.Stopped
					}
				}
				wfAccept, wfDone = append(wfAccept, acc...), wfDone+last.Sub(began)
			} else {
				began := time.Now()
				ids, err := asyncload.Submit(ctx, c, "tp-a", tpAsyncN, tpAsyncConc)
				if err != nil {
					b.Fatal(err)
				}
				fnStart += time.Since(began)
				// The 202s' latencies are not kept by Submit: the rate is.
				_, last, err := asyncload.Finished(ctx, c, ids)
				if err != nil {
					b.Fatal(err)
				}
				fnDone += last.Sub(began)
			}
		}
	}
	if failed > 0 {
		b.Errorf("%d async executions failed", failed)
	}
	total := float64(tpAsyncN * tpAsyncRuns * b.N)
	wa := stats.Describe(wfAccept)
	reportDist(b, "async-start", wa)
	b.ReportMetric(total/wfStart.Seconds(), "async-starts/s")
	b.ReportMetric(total/wfDone.Seconds(), "async-completed/s")
	b.ReportMetric(total/fnStart.Seconds(), "async-invokes-accepted/s")
	b.ReportMetric(total/fnDone.Seconds(), "async-invokes-completed/s")
	rows = append(rows,
		[]string{"async start (202)", strconv.Itoa(tpAsyncConc), strconv.Itoa(wa.Count), f1(total / wfStart.Seconds()),
			"-", "-", f2(wa.P50), f2(wa.P99)},
		[]string{"  completed", "", "", f1(total / wfDone.Seconds()), f1(total / wfDone.Seconds() * tpStates), f1(2 * total / wfDone.Seconds()), "-", "-"},
		[]string{"async invoke (baseline)", strconv.Itoa(tpAsyncConc), strconv.Itoa(int(total)), f1(total / fnStart.Seconds()), "-", "-", "-", "-"},
		[]string{"  completed", "", "", f1(total / fnDone.Seconds()), "-", f1(total / fnDone.Seconds()), "-", "-"})
	wfPrint(b, "workflow throughput on one server (3 Pass + 2 Task, no-op Python), %d rounds of %s per target (alternating), async rounds of %d:%s",
		tpRounds*b.N, tpRoundDur, tpAsyncN,
		table([]string{"what", "clients", "n", "per s", "transitions/s", "tasks/s", "p50 ms", "p99 ms"}, rows))
	b.Logf("sandboxes: %s; at the end: %s", isolation(ctx, s), loadAvg())
}
