package clusterproc

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/bench/stats"
	"github.com/baton-faas/baton/test/benchmarks/asyncload"
)

// Workflows (issue 11) on network-namespace hosts: throughput of a
// cluster against `baton server` in the same run, and recovery of
// executions from a worker's and a controller's kill -9. Steps are real
// Python functions in process sandboxes.
//
// Knobs:
//
//	BATON_WF_ROUND       duration of a measured sync round (5s)
//	BATON_WF_ASYNC       async starts per target (1000)
//	BATON_WF_SAMPLE      execution histories read per target and concurrency for the bus shares (16)
//	BATON_WF_RECOVERY_N  executions in the slow step when the kill comes (20)

// wfStates is how many states an execution of wfDefinition passes
// through: its transitions.
const wfStates = 5

// wfDefinition is 3 Pass and 2 Task states; a task the platform refuses
// for a full queue is tried again (as in the single-host benchmark).
func wfDefinition(first, second string) string {
	return fmt.Sprintf(`{
  "Comment": "3 Pass and 2 Task states",
  "StartAt": "Begin",
  "States": {
    "Begin": {"Type": "Pass", "Result": {"n": 1}, "ResultPath": "$.begin", "Next": "A"},
    "A": {"Type": "Task", "Resource": %[1]q, "ResultPath": "$.a", "Next": "Middle",
      "Retry": [{"ErrorEquals": ["Baton.TooManyRequests"], "IntervalSeconds": 1, "MaxAttempts": 5, "BackoffRate": 2}]},
    "Middle": {"Type": "Pass", "Next": "B"},
    "B": {"Type": "Task", "Resource": %[2]q, "ResultPath": "$.b", "Next": "Finish",
      "Retry": [{"ErrorEquals": ["Baton.TooManyRequests"], "IntervalSeconds": 1, "MaxAttempts": 5, "BackoffRate": 2}]},
    "Finish": {"Type": "Pass", "End": true}
  }
}`, first, second)
}

// wfSandbox is the sandbox flags of the workflow benchmarks' server and
// workers: process sandboxes, so that steps are real Python.
func wfSandbox(b *testing.B) []string {
	b.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		b.Skip("the workflow benchmarks run Python steps in process sandboxes: python3 is not on PATH")
	}
	return []string{"--sandbox", "process"}
}

// wfPrintf prints on stdout under the benchmark's name: the testing
// package keeps only a benchmark's first 10 logged lines, and the tables
// are longer.
func wfPrintf(b *testing.B, format string, args ...any) {
	fmt.Printf("%s: "+format+"\n", append([]any{b.Name()}, args...)...)
}

// wfTable renders rows as aligned columns.
func wfTable(header []string, rows [][]string) string {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
	return "\n" + buf.String()
}

// loadNow describes the load average, to judge how busy the machine was.
func loadNow() string {
	data, err := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if err != nil || len(f) < 3 {
		return "load average unknown"
	}
	return fmt.Sprintf("load average %s %s %s on %d CPUs", f[0], f[1], f[2], runtime.NumCPU())
}

// putWorkflow deploys a workflow through c, again while the controller
// is not ready for it yet.
func putWorkflow(b *testing.B, c *client.Client, name, definition string) {
	b.Helper()
	waitFor(b, "deploy workflow "+name, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := c.DeployWorkflow(ctx, name, []byte(definition))
		return err == nil, fmt.Sprint(err)
	})
}

// agreedOwners waits until both controllers name the same owner of each
// function and returns the owners.
func agreedOwners(b *testing.B, r *netRig, ctrls []*netNode, fns []string) map[string]string {
	b.Helper()
	var own map[string]string
	waitFor(b, "the controllers to agree on the functions' owners", func() (bool, string) {
		var seen []map[string]string
		for _, c := range ctrls {
			o, err := owners(r.client(c), fns)
			if err != nil {
				return false, c.id + ": " + err.Error()
			}
			seen = append(seen, o)
		}
		for _, f := range fns {
			if seen[0][f] != seen[1][f] {
				return false, fmt.Sprintf("%s: %s vs %s", f, seen[0][f], seen[1][f])
			}
		}
		own = seen[0]
		return true, ""
	})
	return own
}

// answers waits until fn echoes {"n":1} through c. The comparison is of
// JSON values: the Python runtime writes `{"n": 1}`, so invokeOK's byte
// comparison never holds for a process sandbox.
func answers(b *testing.B, c *client.Client, fn string) {
	b.Helper()
	waitFor(b, fn+" to answer", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := c.Invoke(ctx, fn, []byte(`{"n":1}`))
		if err != nil {
			return false, err.Error()
		}
		var v struct{ N int }
		return json.Unmarshal(resp.Body, &v) == nil && v.N == 1, string(resp.Body)
	})
}

// runsOK waits until an execution of wf through c succeeds.
func runsOK(b *testing.B, c *client.Client, wf string) {
	b.Helper()
	waitFor(b, "an execution of "+wf+" to succeed", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		x, err := c.StartExecution(ctx, wf, []byte(`{}`), client.StartOptions{Sync: true})
		if err != nil {
			return false, err.Error()
		}
		return x.Status == apiv1.ExecutionSucceeded && x.Steps == wfStates,
			fmt.Sprintf("%s after %d steps: %s %s", x.Status, x.Steps, x.Error, x.Cause)
	})
}

// wfTarget is where executions are started: the sync clients are spread
// over its entry points (the controllers; the server alone).
type wfTarget struct {
	name    string
	short   string // metric prefix
	nodes   []*netNode
	clients []*client.Client
}

// syncLoad is what closed-loop sync clients saw.
type syncLoad struct {
	ok, failed int
	firstErr   string
	lat        []float64 // ms, successful executions
	ids        []string  // successful executions, in completion order
	elapsed    time.Duration
}

func (s *syncLoad) merge(o syncLoad) {
	s.ok, s.failed = s.ok+o.ok, s.failed+o.failed
	if s.firstErr == "" {
		s.firstErr = o.firstErr
	}
	s.lat, s.ids = append(s.lat, o.lat...), append(s.ids, o.ids...)
	s.elapsed += o.elapsed
}

func (s syncLoad) perSecond() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(s.ok) / s.elapsed.Seconds()
}

// syncRound runs conc closed-loop clients, client i on entry point i mod
// the target's, each starting sync executions of wf until d passed.
func syncRound(ctx context.Context, t wfTarget, wf string, conc int, d time.Duration) syncLoad {
	var mu sync.Mutex // guards out
	var out syncLoad
	var wg sync.WaitGroup
	began := time.Now()
	deadline := began.Add(d)
	for i := range conc {
		c := t.clients[i%len(t.clients)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				start := time.Now()
				x, err := c.StartExecution(ctx, wf, []byte(`{"n":1}`), client.StartOptions{Sync: true})
				lat := time.Since(start)
				mu.Lock()
				switch {
				case err == nil && x.Status == apiv1.ExecutionSucceeded:
					out.ok++
					out.lat = append(out.lat, float64(lat)/1e6)
					out.ids = append(out.ids, x.ID)
				default:
					out.failed++
					if out.firstErr == "" {
						if err == nil {
							err = fmt.Errorf("execution %s ended %s: %s: %s", x.ID, x.Status, x.Error, x.Cause)
						}
						out.firstErr = err.Error()
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	out.elapsed = time.Since(began)
	return out
}

// asyncLoad is an async round's outcome: n starts accepted in accept,
// the last of them stopped done after the first was sent.
type asyncLoad struct {
	n, failed    int
	acceptMs     []float64
	accept, done time.Duration
}

// asyncRound starts n executions of wf asynchronously from conc clients
// spread over the target's entry points, then waits for all of them to
// end (their states read without histories).
func asyncRound(ctx context.Context, r *netRig, t wfTarget, wf string, n, conc int) (asyncLoad, error) {
	k := len(t.clients)
	type part struct {
		ids []string
		acc []float64
		err error
	}
	parts := make([]part, k)
	var wg sync.WaitGroup
	began := time.Now()
	for i := range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &parts[i]
			p.ids, p.acc, p.err = asyncload.StartExecutions(ctx, t.clients[i], wf, n/k, max(conc/k, 1),
				func(int) []byte { return []byte(`{"n":1}`) })
		}()
	}
	wg.Wait()
	out := asyncLoad{accept: time.Since(began)}
	var last time.Time
	for i, p := range parts {
		if p.err != nil {
			return out, p.err
		}
		out.acceptMs = append(out.acceptMs, p.acc...)
		xs, err := asyncload.Executions{HTTP: r.http, URL: t.nodes[i].url(), Token: token}.Finished(ctx, p.ids)
		if err != nil {
			return out, err
		}
		for _, x := range xs {
			out.n++
			if x.Status != apiv1.ExecutionSucceeded {
				out.failed++
			}
			if x.Stopped.After(last) {
				last = x.Stopped
			}
		}
	}
	out.done = last.Sub(began)
	return out, nil
}

// shares is what a sample of execution histories says: tasks by bus and
// by worker, executions by runner, each task's duration (TaskSucceeded's,
// from scheduling to its outcome) by bus and each execution's.
type shares struct {
	buses, hosts, runners map[string]int
	taskMs                map[string][]float64
	execMs                []float64
}

// busShares reads the histories of up to k of ids, evenly spaced.
func busShares(ctx context.Context, c *client.Client, ids []string, k int) (shares, error) {
	s := shares{buses: map[string]int{}, hosts: map[string]int{}, runners: map[string]int{}, taskMs: map[string][]float64{}}
	step := max(len(ids)/k, 1)
	for i := 0; i < len(ids); i += step {
		x, err := c.DescribeExecution(ctx, ids[i])
		if err != nil {
			return s, err
		}
		for _, ev := range x.History {
			if ev.Kind == "TaskSucceeded" {
				s.buses[ev.Bus]++
				s.hosts[ev.Host]++
				s.taskMs[ev.Bus] = append(s.taskMs[ev.Bus], ev.Millis)
			}
		}
		s.runners[x.Runner]++
		s.execMs = append(s.execMs, float64(x.Stopped.Sub(x.Started))/1e6)
	}
	return s, nil
}

// taskTimes renders the median task duration by bus and the median
// execution duration.
func (s shares) taskTimes() string {
	var parts []string
	for _, bus := range []string{"local", "global"} {
		if ds := s.taskMs[bus]; len(ds) > 0 {
			parts = append(parts, fmt.Sprintf("%s %.1f", bus, stats.Describe(ds).P50))
		}
	}
	return fmt.Sprintf("%s; execution %.1f", strings.Join(parts, ", "), stats.Describe(s.execMs).P50)
}

// counts renders a count map as "a 3, b 1", largest first.
func counts(m map[string]int) string {
	type kv struct {
		k string
		v int
	}
	var s []kv
	total := 0
	for k, v := range m {
		if k == "" {
			k = "(none)"
		}
		s = append(s, kv{k, v})
		total += v
	}
	sort.Slice(s, func(i, j int) bool { return s[i].v > s[j].v || s[i].v == s[j].v && s[i].k < s[j].k })
	var parts []string
	for _, e := range s {
		parts = append(parts, fmt.Sprintf("%s %d (%.0f %%)", e.k, e.v, 100*float64(e.v)/float64(max(total, 1))))
	}
	return strings.Join(parts, ", ")
}

// BenchmarkWorkflowNetns measures workflow throughput on a cluster of
// netns hosts (three NATS nodes with R3 streams and buckets, two
// controllers, three workers) against `baton server` on a host of its
// own, in the same run, with a workflow of 3 Pass and 2 Task states whose
// tasks are no-op Python functions in process sandboxes. The cluster's
// two tasks are functions owned by different controllers, so an
// execution takes the local bus for one and the global bus for the other
// whichever controller runs it. Sync: 8 and 32 closed-loop clients
// (spread over the controllers), 2 rounds per target alternating, after
// an unmeasured warm-up: executions/s and transitions/s. Async: starts
// accepted per second and the rate at which they completed (first start
// to last stop). Then the share of tasks over each bus, from a sample of
// execution histories.
func BenchmarkWorkflowNetns(b *testing.B) {
	sb := wfSandbox(b)
	round := envDuration(b, "BATON_WF_ROUND", 5*time.Second)
	asyncN := envInt(b, "BATON_WF_ASYNC", 1000)
	sample := envInt(b, "BATON_WF_SAMPLE", 16)
	b.Logf("at start: %s", loadNow())
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	r := newNetRig(b)
	srv := r.server(sb...)
	srvClient := r.waitServes(srv)
	for _, id := range []string{"w1", "w2", "w3"} {
		r.worker(id, sb...)
	}
	ctrls := []*netNode{r.controller("c1"), r.controller("c2")}
	for _, c := range ctrls {
		r.waitServes(c)
	}
	cl := r.client(ctrls[0])
	waitWorkers(b, cl, 3)

	// One task function per controller: deploy candidates until each
	// controller owns one.
	candidates := []string{"wt-a", "wt-b", "wt-c", "wt-d", "wt-e", "wt-f", "wt-g", "wt-h"}
	deploy(b, cl, candidates...)
	own := agreedOwners(b, r, ctrls, candidates)
	pick := map[string]string{}
	for _, f := range candidates {
		if pick[own[f]] == "" {
			pick[own[f]] = f
		}
	}
	first, second := pick[ctrls[0].id], pick[ctrls[1].id]
	if first == "" || second == "" {
		b.Fatalf("no pair of functions owned by different controllers among %v: %v", candidates, own)
	}
	b.Logf("tasks: A is %s (owned by %s), B is %s (owned by %s)", first, ctrls[0].id, second, ctrls[1].id)
	deploy(b, srvClient, first, second)
	for _, f := range []string{first, second} {
		answers(b, srvClient, f)
		for _, c := range ctrls {
			answers(b, r.client(c), f)
		}
	}
	def := wfDefinition(first, second)
	putWorkflow(b, srvClient, "wfn", def)
	putWorkflow(b, cl, "wfn", def)
	runsOK(b, srvClient, "wfn")
	for _, c := range ctrls {
		runsOK(b, r.client(c), "wfn")
	}

	targets := []wfTarget{
		{name: "baton server (1 host)", short: "server-", nodes: []*netNode{srv}, clients: []*client.Client{srvClient}},
		{name: "cluster (2 controllers, 3 workers)", short: "cluster-", nodes: ctrls,
			clients: []*client.Client{r.client(ctrls[0]), r.client(ctrls[1])}},
	}
	results := map[string]map[int]*syncLoad{}
	for _, t := range targets {
		results[t.name] = map[int]*syncLoad{}
	}
	levels := []int{8, 32}
	b.ResetTimer()
	for _, conc := range levels {
		// Unmeasured: brings up the instances this concurrency needs.
		for _, t := range targets {
			if w := syncRound(ctx, t, "wfn", conc, 2*time.Second); w.failed > 0 {
				b.Logf("warm-up %s, %d clients: %d of %d failed, first: %s", t.name, conc, w.failed, w.ok+w.failed, w.firstErr)
			}
		}
		for rd := range 2 {
			for i := range targets {
				t := targets[i]
				if rd == 1 {
					t = targets[len(targets)-1-i]
				}
				s := results[t.name][conc]
				if s == nil {
					s = &syncLoad{}
					results[t.name][conc] = s
				}
				s.merge(syncRound(ctx, t, "wfn", conc, round))
			}
		}
	}
	asyncs := map[string]asyncLoad{}
	for _, t := range targets {
		a, err := asyncRound(ctx, r, t, "wfn", asyncN, 8)
		if err != nil {
			b.Fatalf("%s: async round: %v", t.name, err)
		}
		asyncs[t.name] = a
	}
	b.StopTimer()

	var rows, shareRows [][]string
	for _, t := range targets {
		for _, conc := range levels {
			s := results[t.name][conc]
			d := stats.Describe(s.lat)
			rows = append(rows, []string{t.name, fmt.Sprintf("sync, %d clients", conc), fmt.Sprint(s.ok), fmt.Sprint(s.failed),
				fmt.Sprintf("%.1f", s.perSecond()), fmt.Sprintf("%.0f", s.perSecond()*wfStates),
				fmt.Sprintf("%.2f", d.P50), fmt.Sprintf("%.2f", d.P90), fmt.Sprintf("%.2f", d.P99), fmt.Sprintf("%.2f", d.Max)})
			p := fmt.Sprintf("%sc%d-", t.short, conc)
			b.ReportMetric(s.perSecond(), p+"executions/s")
			b.ReportMetric(s.perSecond()*wfStates, p+"transitions/s")
			b.ReportMetric(d.P50, p+"p50-ms")
			if s.failed > 0 {
				b.Errorf("%s, %d clients: %d executions failed, first: %s", t.name, conc, s.failed, s.firstErr)
			}
		}
		a := asyncs[t.name]
		ad := stats.Describe(a.acceptMs)
		starts, done := float64(a.n)/a.accept.Seconds(), float64(a.n)/a.done.Seconds()
		rows = append(rows,
			[]string{t.name, "async starts (202), 8 clients", fmt.Sprint(a.n), "-", fmt.Sprintf("%.1f", starts), "-",
				fmt.Sprintf("%.2f", ad.P50), fmt.Sprintf("%.2f", ad.P90), fmt.Sprintf("%.2f", ad.P99), fmt.Sprintf("%.2f", ad.Max)},
			[]string{t.name, "  … completed", fmt.Sprint(a.n - a.failed), fmt.Sprint(a.failed), fmt.Sprintf("%.1f", done),
				fmt.Sprintf("%.0f", done*wfStates), "-", "-", "-", "-"})
		b.ReportMetric(starts, t.short+"async-starts/s")
		b.ReportMetric(done, t.short+"async-completed/s")
		if a.failed > 0 {
			b.Errorf("%s: %d of %d async executions did not succeed", t.name, a.failed, a.n)
		}

		// The bus shares, from histories read after the load (a history
		// read is slow and would disturb it).
		for _, conc := range levels {
			sh, err := busShares(ctx, t.clients[0], results[t.name][conc].ids, sample)
			if err != nil {
				b.Fatalf("%s: read histories: %v", t.name, err)
			}
			shareRows = append(shareRows, []string{t.name, fmt.Sprint(conc), counts(sh.buses), sh.taskTimes(), counts(sh.hosts), counts(sh.runners)})
			if strings.HasPrefix(t.short, "cluster") {
				total := sh.buses["local"] + sh.buses["global"]
				b.ReportMetric(100*float64(sh.buses["global"])/float64(max(total, 1)), fmt.Sprintf("cluster-c%d-global-%%", conc))
			}
		}
	}
	b.ReportMetric(0, "ns/op")
	wfPrintf(b, "workflow throughput (3 Pass + 2 Task, no-op Python in process sandboxes), 2 rounds of %s per target and concurrency, alternating; async: %d starts:%s",
		round, asyncN, wfTable([]string{"target", "what", "ok", "failed", "per s", "transitions/s", "p50 ms", "p90 ms", "p99 ms", "max ms"}, rows))
	wfPrintf(b, "tasks by bus, their median ms by bus (TaskScheduled to TaskSucceeded) and the executions' (start to stop), tasks by worker, executions by runner, from up to %d sync executions' histories per row:%s",
		sample, wfTable([]string{"target", "clients", "tasks by bus", "median ms", "tasks by worker", "executions by runner"}, shareRows))
	wfPrintf(b, "at the end: %s", loadNow())
}

// ---------------------------------------------------------------------------
// BenchmarkWorkflowRecovery

// recoveryApp records each workflow step's run ("<execution> <state>
// <attempt> <pid>") in the file STEP_LOG names before it works, so that a
// run cut short still shows; a state named in event["slow"] sleeps
// event["sleep"] seconds on its first attempt only. A direct invocation
// (no workflow state in its client context) echoes its event.
const recoveryApp = `import os
import time


def step(event, context):
    custom = (context.client_context.custom if context.client_context is not None else None) or {}
    state = custom.get("baton-state")
    if state is None:
        return event
    attempt = int(custom.get("baton-attempt", "0"))
    line = "%s %s %d %d\n" % (custom.get("baton-execution", "?"), state, attempt, os.getpid())
    fd = os.open(os.environ["STEP_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    if attempt == 1 and state in event.get("slow", []):
        time.sleep(event.get("sleep", 60))
    event.setdefault("trail", []).append([state, attempt])
    return event
`

// recoveryDefinition: A and C on one function, the slow B on another.
const recoveryDefinition = `{"StartAt": "A", "States": {
  "A": {"Type": "Task", "Resource": "wr-a", "Next": "B"},
  "B": {"Type": "Task", "Resource": "wr-b", "Next": "C"},
  "C": {"Type": "Task", "Resource": "wr-a", "End": true}}}`

// zipPython zips src as app.py.
func zipPython(b *testing.B, src string) []byte {
	b.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	f, err := zw.Create("app.py")
	if err == nil {
		_, err = f.Write([]byte(src))
	}
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// stepLog counts the runs of each execution's states in the step log.
func stepLog(b *testing.B, path string) map[string]int {
	b.Helper()
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		b.Fatal(err)
	}
	runs := map[string]int{}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 4 {
			runs[f[0]+" "+f[1]]++
		}
	}
	return runs
}

// startSlow starts n executions of wr through c whose B sleeps sleep
// seconds on its first attempt, and waits until every one runs B.
func startSlow(b *testing.B, r *netRig, via []*netNode, n, sleep int, tag, logFile string) []string {
	b.Helper()
	var ids []string
	for i := range n {
		c := r.client(via[i%len(via)])
		input := fmt.Appendf(nil, `{"i": %d, "slow": ["B"], "sleep": %d}`, i, sleep)
		waitFor(b, "start an execution", func() (bool, string) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			x, err := c.StartExecution(ctx, "wr", input, client.StartOptions{IdempotencyKey: fmt.Sprintf("%s-%d", tag, i)})
			if err != nil {
				return false, err.Error()
			}
			ids = append(ids, x.ID)
			return true, ""
		})
	}
	waitFor(b, "every execution to run B", func() (bool, string) {
		runs := stepLog(b, logFile)
		waiting := 0
		for _, id := range ids {
			if runs[id+" B"] == 0 {
				waiting++
			}
		}
		return waiting == 0, fmt.Sprintf("%d of %d not in B yet", waiting, len(ids))
	})
	return ids
}

// instancesByWorker counts fn's instances per worker, as c sees them.
func instancesByWorker(c *client.Client, fn string) string {
	st, err := status(c, fn)
	if err != nil {
		return err.Error()
	}
	m := map[string]int{}
	for _, in := range st.Instances {
		m[in.Worker]++
	}
	return counts(m)
}

// finished waits for every execution to end, reading through c, then
// for its history to hold its end, and returns them.
func finished(ctx context.Context, b *testing.B, r *netRig, via *netNode, ids []string) []apiv1.Execution {
	b.Helper()
	if _, err := (asyncload.Executions{HTTP: r.http, URL: via.url(), Token: token}).Finished(ctx, ids); err != nil {
		b.Fatal(err)
	}
	c := r.client(via)
	var out []apiv1.Execution
	for _, id := range ids {
		var x apiv1.Execution
		waitFor(b, id+"'s history to hold its end", func() (bool, string) {
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			var err error
			x, err = c.DescribeExecution(rctx, id)
			if err != nil {
				return false, err.Error()
			}
			for _, ev := range x.History {
				if ev.Kind == "ExecutionSucceeded" || ev.Kind == "ExecutionFailed" {
					return true, ""
				}
			}
			return false, fmt.Sprintf("%s, %d events", x.Status, len(x.History))
		})
		if x.Status != apiv1.ExecutionSucceeded {
			b.Errorf("execution %s: %s %s: %s", id, x.Status, x.Error, x.Cause)
		}
		out = append(out, x)
	}
	return out
}

// afterKill is what the histories of executions say about a kill at t.
type afterKill struct {
	// From t to each execution's first such event of B (after t).
	interrupted, resumed, rescheduled, resucceeded []time.Duration
	// By the bus B's interrupted attempt took (worker kill).
	rescheduledBy map[string][]time.Duration
	resucceededBy map[string][]time.Duration
	// rescheduledTasks counts TaskScheduled events after t with an
	// attempt above 1, by state; reruns counts function runs beyond the
	// first per execution and state (the step log), by state.
	rescheduledTasks, reruns map[string]int
	// rerunMillis are the re-run B attempts' durations (a cold start
	// shows).
	rerunMillis []float64
	runners     map[string]int
}

func readKill(xs []apiv1.Execution, t time.Time, runs map[string]int) afterKill {
	k := afterKill{rescheduledBy: map[string][]time.Duration{}, resucceededBy: map[string][]time.Duration{},
		rescheduledTasks: map[string]int{}, reruns: map[string]int{}, runners: map[string]int{}}
	for _, x := range xs {
		k.runners[fmt.Sprintf("%s (epoch %d)", x.Runner, x.Epoch)]++
		bus := ""
		var seen struct{ interrupted, resumed, rescheduled, resucceeded bool }
		for _, ev := range x.History {
			if ev.Time.Before(t) {
				continue
			}
			if ev.Kind == "TaskScheduled" && ev.Attempt > 1 {
				k.rescheduledTasks[ev.State]++
			}
			d := ev.Time.Sub(t)
			switch {
			case ev.Kind == "TaskInterrupted" && ev.State == "B" && !seen.interrupted:
				seen.interrupted, bus = true, ev.Bus
				k.interrupted = append(k.interrupted, d)
			case ev.Kind == "ExecutionResumed" && !seen.resumed:
				seen.resumed = true
				k.resumed = append(k.resumed, d)
			case ev.Kind == "TaskScheduled" && ev.State == "B" && ev.Attempt > 1 && !seen.rescheduled:
				seen.rescheduled = true
				k.rescheduled = append(k.rescheduled, d)
				k.rescheduledBy[bus] = append(k.rescheduledBy[bus], d)
			case ev.Kind == "TaskSucceeded" && ev.State == "B" && ev.Attempt > 1 && !seen.resucceeded:
				seen.resucceeded = true
				k.resucceeded = append(k.resucceeded, d)
				k.resucceededBy[bus] = append(k.resucceededBy[bus], d)
				k.rerunMillis = append(k.rerunMillis, ev.Millis)
			}
		}
		for _, s := range []string{"A", "B", "C"} {
			if n := runs[x.ID+" "+s]; n > 1 {
				k.reruns[s] += n - 1
			}
		}
	}
	return k
}

// spread renders durations as "n, first, median, max".
func spread(ds []time.Duration) []string {
	if len(ds) == 0 {
		return []string{"0", "-", "-", "-"}
	}
	return []string{fmt.Sprint(len(ds)), ms(pct(ds, 0)), ms(pct(ds, 0.5)), ms(pct(ds, 1))}
}

// BenchmarkWorkflowRecovery measures how executions recover from kill -9
// on netns hosts (three NATS nodes, two controllers, workers with process
// sandboxes), from their histories (every timestamp is this machine's
// clock), with a workflow A → B → C whose B sleeps on its first attempt:
//
//  1. N executions (started through both controllers, so B runs over
//     the local bus for those whose controller owns B's function and the
//     global bus for the others) sit in B on the only worker, w1; two
//     more workers join, and w1 is killed. From the kill to each
//     execution's TaskInterrupted, TaskScheduled and TaskSucceeded of
//     B's re-run. The re-runs start cold: placement keeps an app's
//     instances on the hosts that have its sandbox, so none of B's were
//     elsewhere (warming some first only adds them on w1).
//  2. N executions started through the controller that owns B's
//     function sit in B (on w2 and w3, which have B's sandbox now); that
//     controller is killed. From the kill to each execution's
//     ExecutionResumed (the other controller claimed it), and to B's
//     re-run being scheduled and succeeding.
//
// Re-runs are counted from the histories (TaskScheduled with attempt > 1)
// and from the functions' own log of their runs.
func BenchmarkWorkflowRecovery(b *testing.B) {
	sb := wfSandbox(b)
	n := envInt(b, "BATON_WF_RECOVERY_N", 20)
	b.Logf("at start: %s", loadNow())
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	r := newNetRig(b)
	logFile := filepath.Join(b.TempDir(), "steps.log")
	w1 := r.worker("w1", sb...)
	ctrls := []*netNode{r.controller("c1"), r.controller("c2")}
	for _, c := range ctrls {
		r.waitServes(c)
	}
	cl := r.client(ctrls[0])
	waitWorkers(b, cl, 1)
	zipped := zipPython(b, recoveryApp)
	for _, fn := range []string{"wr-a", "wr-b"} {
		// Room for N sleeping first attempts, their re-runs and the
		// orphans a dead controller leaves.
		spec := apiv1.FunctionSpec{Runtime: "python3", Handler: "app.step", TimeoutSeconds: 300, MaxScale: 4 * n,
			IdleTimeoutSeconds: 900, Env: map[string]string{"STEP_LOG": logFile}}
		waitFor(b, "deploy "+fn, func() (bool, string) {
			dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
			defer dcancel()
			_, err := cl.Deploy(dctx, fn, client.DeployRequest{FunctionSpec: spec, Code: zipped})
			return err == nil, fmt.Sprint(err)
		})
	}
	own := agreedOwners(b, r, ctrls, []string{"wr-a", "wr-b"})
	for _, c := range ctrls {
		answers(b, r.client(c), "wr-a")
		answers(b, r.client(c), "wr-b")
	}
	putWorkflow(b, cl, "wr", recoveryDefinition)
	b.Logf("wr-a is owned by %s, wr-b (B) by %s", own["wr-a"], own["wr-b"])

	b.ResetTimer()
	// 1. A worker.
	ids := startSlow(b, r, ctrls, n, 120, "worker", logFile)
	r.worker("w2", sb...)
	r.worker("w3", sb...)
	waitWorkers(b, cl, 3)
	b.Logf("before killing w1: wr-b's instances by worker: %s", instancesByWorker(cl, "wr-b"))
	killed := time.Now()
	w1.p.Kill()
	workerKill := readKill(finished(ctx, b, r, ctrls[0], ids), killed, stepLog(b, logFile))

	// 2. A controller: the one that owns B's function holds the
	// executions, so its death loses both.
	victim, survivor := ctrls[0], ctrls[1]
	if own["wr-b"] == ctrls[1].id {
		victim, survivor = survivor, victim
	}
	ids = startSlow(b, r, []*netNode{victim}, n, 90, "controller", logFile)
	b.Logf("before killing %s: wr-b's instances by worker: %s", victim.id, instancesByWorker(r.client(victim), "wr-b"))
	killed = time.Now()
	victim.p.Kill()
	ctrlKill := readKill(finished(ctx, b, r, survivor, ids), killed, stepLog(b, logFile))
	b.StopTimer()

	header := []string{"kill -9", "from the kill to", "executions", "first", "median", "max"}
	var rows [][]string
	add := func(what, to string, ds []time.Duration) {
		rows = append(rows, append([]string{what, to}, spread(ds)...))
	}
	add("worker w1", "B's TaskInterrupted", workerKill.interrupted)
	add("worker w1", "B re-run: TaskScheduled", workerKill.rescheduled)
	for _, bus := range []string{"local", "global"} {
		add("worker w1", "  of those over the "+bus+" bus", workerKill.rescheduledBy[bus])
	}
	add("worker w1", "B re-run: TaskSucceeded", workerKill.resucceeded)
	for _, bus := range []string{"local", "global"} {
		add("worker w1", "  of those over the "+bus+" bus", workerKill.resucceededBy[bus])
	}
	vic := "controller " + victim.id
	add(vic, "ExecutionResumed", ctrlKill.resumed)
	add(vic, "B re-run: TaskScheduled", ctrlKill.rescheduled)
	add(vic, "B re-run: TaskSucceeded", ctrlKill.resucceeded)
	wfPrintf(b, "recovery of %d executions per kill (histories' timestamps):%s", n, wfTable(header, rows))
	for _, k := range []struct {
		what string
		a    afterKill
	}{{"worker w1", workerKill}, {vic, ctrlKill}} {
		md := stats.Describe(k.a.rerunMillis)
		wfPrintf(b, "%s: tasks scheduled again (attempt > 1) by state: %v; function runs beyond the first by state (step log): %v; B's re-run took p50 %.1f ms, max %.1f ms; final runners: %s",
			k.what, k.a.rescheduledTasks, k.a.reruns, md.P50, md.Max, counts(k.a.runners))
	}
	if len(workerKill.rescheduled) < n || len(ctrlKill.resumed) < n {
		b.Errorf("re-runs after the worker kill %d, resumptions after the controller kill %d, of %d executions each",
			len(workerKill.rescheduled), len(ctrlKill.resumed), n)
	}
	b.ReportMetric(float64(pct(workerKill.rescheduled, 0.5))/1e6, "worker-kill-rescheduled-p50-ms")
	b.ReportMetric(float64(pct(workerKill.rescheduled, 1))/1e6, "worker-kill-rescheduled-max-ms")
	b.ReportMetric(float64(pct(workerKill.resucceeded, 1))/1e6, "worker-kill-rerun-done-max-ms")
	b.ReportMetric(float64(pct(ctrlKill.resumed, 0.5))/1e6, "controller-kill-resumed-p50-ms")
	b.ReportMetric(float64(pct(ctrlKill.resumed, 1))/1e6, "controller-kill-resumed-max-ms")
	b.ReportMetric(0, "ns/op")
	wfPrintf(b, "at the end: %s", loadNow())
}
