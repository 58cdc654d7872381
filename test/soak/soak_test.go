package soak

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/test/harness"
)

// The soak's shape.
const (
	// defaultInvocations is issue 10's number; BATON_SOAK_INVOCATIONS
	// overrides it for a quick local run.
	defaultInvocations = 10000
	// submitters send invocations at once, each waiting for its 202.
	submitters = 8
	// pollers read invocation states at once while checking them.
	pollers = 4
	// maxSubmitTime bounds the retries of one idempotency key: far
	// longer than a restart of the server takes.
	maxSubmitTime = 3 * time.Minute
)

// The test functions (testdata/python/app.py), their policies and the
// dead-letter queue of the flaky one.
const (
	fnWork  = "work"
	fnFlaky = "flaky"
	fnSlow  = "slow"
	dlqName = "soak"
	// flakyAttempts is 1 + the default maxRetryAttempts (2).
	flakyAttempts = 3
	// slowRetries is the slow function's maxRetryAttempts; each attempt
	// sleeps slowSleepMs against a timeout of 1 s.
	slowRetries = 1
	slowSleepMs = 3000
)

// workSleeps are the work function's durations, taken in turn.
var workSleeps = []int{0, 5, 50, 300}

// serverArgs: process sandboxes, so that the Python functions write to a
// file of the test; quick retries, so that the flaky function's three
// attempts do not dominate the run.
var serverArgs = []string{"--sandbox", "process", "--async-retry-base", "100ms"}

// job is one idempotency key's invocation.
type job struct {
	fn    string
	key   string
	event []byte
}

// submission is what became of a job's submission.
type submission struct {
	id string
	// tries counts requests sent for the key; duplicate says the answer
	// that was accepted named an earlier request's invocation (a request
	// stored before the server died, its 202 lost).
	tries     int
	duplicate bool
	// err is set when the key was never accepted.
	err  error
	errs map[string]int // failed tries by kind
}

// plan makes n jobs: every 100th invocation is slow, every 50th flaky,
// the rest work of mixed durations.
func plan(n int) []job {
	jobs := make([]job, n)
	for i := range jobs {
		key := fmt.Sprintf("soak-%05d", i)
		switch {
		case i%100 == 37:
			jobs[i] = job{fn: fnSlow, key: key, event: fmt.Appendf(nil, `{"key":%q,"sleepMs":%d}`, key, slowSleepMs)}
		case i%50 == 11:
			jobs[i] = job{fn: fnFlaky, key: key, event: fmt.Appendf(nil, `{"key":%q}`, key)}
		default:
			jobs[i] = job{fn: fnWork, key: key, event: fmt.Appendf(nil, `{"key":%q,"sleepMs":%d}`, key, workSleeps[i%len(workSleeps)])}
		}
	}
	return jobs
}

func invocations(t *testing.T) int {
	t.Helper()
	v := os.Getenv("BATON_SOAK_INVOCATIONS")
	if v == "" {
		return defaultInvocations
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 100 {
		t.Fatalf("BATON_SOAK_INVOCATIONS=%q: want a number of at least 100", v)
	}
	return n
}

// specs are the functions' configurations; all append to effects.
func specs(effects string) map[string]apiv1.FunctionSpec {
	env := map[string]string{"SOAK_FILE": effects}
	retries := slowRetries
	return map[string]apiv1.FunctionSpec{
		// As many events at once as instances: the backlog drains at the
		// speed of the platform, not of one instance.
		fnWork: {Runtime: function.RuntimePython, Handler: "app.work", Env: env, MaxScale: 16,
			Async: &apiv1.AsyncConfig{Concurrency: 16}},
		fnFlaky: {Runtime: function.RuntimePython, Handler: "app.flaky", Env: env, MaxScale: 4,
			Async: &apiv1.AsyncConfig{OnFailure: "dlq:" + dlqName}},
		fnSlow: {Runtime: function.RuntimePython, Handler: "app.slow", Env: env, MaxScale: 10, TimeoutSeconds: 1,
			Async: &apiv1.AsyncConfig{MaxRetryAttempts: &retries, Concurrency: 10}},
	}
}

// TestAsyncSoakServerKills is issue 10's single-node soak: 10,000
// asynchronous invocations (work of mixed durations, functions that
// always fail and functions that always time out), submitted by several
// clients with idempotency keys while the server is killed -9 twice, and
// once more while the backlog drains, each time restarted on the same
// data. Afterwards every accepted id has a final state, each key has one
// id, the work ran (its side effect is in the file) and succeeded, the
// failing ones were tried as their policy says and dead-lettered or
// failed, and every execution beyond one per recorded attempt is an
// attempt the kills cut short.
func TestAsyncSoakServerKills(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the soak needs Linux (process sandboxes, process groups)")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed: the soak runs Python functions in process sandboxes (install python3, e.g. scripts/setup.sh)")
	}
	ctx := harness.Context(t)
	began := time.Now()
	total := invocations(t)
	jobs := plan(total)
	counts := map[string]int{}
	for _, j := range jobs {
		counts[j.fn]++
	}
	t.Logf("soak: %d invocations (%d work, %d flaky, %d slow), %d submitters, 3 kills -9 of the server",
		total, counts[fnWork], counts[fnFlaky], counts[fnSlow], submitters)

	harness.Binary(t) // built once, so that the setup phase below is the server's
	built := time.Now()
	t.Logf("phase build: baton built in %s", built.Sub(began).Round(time.Millisecond))
	effects := filepath.Join(t.TempDir(), "effects.log")
	n := newNode(t, t.TempDir())
	n.start()
	code := zipDir(t, "testdata/python")
	for name, spec := range specs(effects) {
		if _, err := n.client().Deploy(ctx, name, client.DeployRequest{FunctionSpec: spec, Code: code}); err != nil {
			t.Fatalf("deploy %s: %v", name, err)
		}
	}
	// One synchronous call proves that Python runs in a process sandbox
	// here and can write the file; its line is not an async invocation's.
	warm, err := n.client().Invoke(ctx, fnWork, []byte(`{"key":"warm-up"}`))
	if err != nil || warm.Status != http.StatusOK || warm.ID == "" {
		t.Fatalf("warm-up call of %s: status %d, %v, body %s", fnWork, warm.Status, err, warm.Body)
	}
	if eff := readEffects(t, effects); len(eff.byID[warm.ID]) != 1 {
		t.Fatalf("the warm-up call %s left no line in %s (%d lines): the function cannot write its side effects", warm.ID, effects, eff.lines)
	}
	setupDone := time.Now()
	t.Logf("phase setup: server started, 3 functions deployed, warm-up call done in %s", setupDone.Sub(built).Round(time.Millisecond))

	// Submit. The submitters are stopped and waited for however the test
	// ends (a Fatal in the test goroutine included).
	subs := make([]submission, total)
	var accepted, settled atomic.Int64 // keys accepted; keys accepted or given up
	sctx, stopSubmitting := context.WithCancel(ctx)
	var wg sync.WaitGroup
	t.Cleanup(func() { stopSubmitting(); wg.Wait() })
	next := make(chan int)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(next)
		for i := range jobs {
			select {
			case next <- i:
			case <-sctx.Done():
				return
			}
		}
	}()
	for range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				n.submit(sctx, jobs[i], &subs[i])
				if subs[i].err == nil {
					accepted.Add(1)
				}
				settled.Add(1)
			}
		}()
	}
	for _, share := range []float64{0.20, 0.55} {
		at := int64(share * float64(total))
		n.waitFor(ctx, fmt.Sprintf("%d accepted invocations", at), 10*time.Minute, time.Second, func() (bool, string) {
			a := accepted.Load()
			return a >= at || settled.Load() == int64(total), fmt.Sprintf("%d accepted", a)
		})
		n.killAndRestart(fmt.Sprintf("during submission, %d of %d accepted", accepted.Load(), total))
	}
	n.waitFor(ctx, "every submission to be answered", 10*time.Minute, 5*time.Second, func() (bool, string) {
		return settled.Load() == int64(total), fmt.Sprintf("%d of %d answered", settled.Load(), total)
	})
	wg.Wait()
	submitDone := time.Now()
	tries, dupAnswers, errKinds := 0, 0, map[string]int{}
	for i := range subs {
		s := &subs[i]
		tries += s.tries
		if s.duplicate {
			dupAnswers++
		}
		for k, c := range s.errs {
			errKinds[k] += c
		}
		if s.err != nil {
			t.Errorf("key %s (%s) was never accepted after %d tries: %v", jobs[i].key, jobs[i].fn, s.tries, s.err)
		}
	}
	t.Logf("phase submission: %d of %d accepted in %s (%.0f accepted/s, kills and restarts included); %d requests, %d answered as a duplicate of a request whose 202 was lost; failed requests by kind: %v",
		accepted.Load(), total, submitDone.Sub(setupDone).Round(time.Millisecond),
		float64(accepted.Load())/submitDone.Sub(setupDone).Seconds(), tries, dupAnswers, errKinds)
	if t.Failed() {
		t.FailNow()
	}

	// The third kill, while the backlog drains: once the side effects
	// are halfway from where they stand to what the whole run writes.
	expectLines := counts[fnWork] + flakyAttempts*counts[fnFlaky] + (1+slowRetries)*counts[fnSlow] + 1
	startLines := readEffects(t, effects).lines
	target := startLines + (expectLines-startLines)/2
	n.waitFor(ctx, fmt.Sprintf("%d side-effect lines (halfway through the backlog)", target), 10*time.Minute, 10*time.Second, func() (bool, string) {
		l := countLines(t, effects)
		return l >= target, fmt.Sprintf("%d lines of about %d", l, expectLines)
	})
	atKill := countLines(t, effects)
	n.killAndRestart(fmt.Sprintf("during the drain, %d of about %d side-effect lines written", atKill, expectLines))

	// Drained: no event left in the stream (every one settled and
	// acknowledged), seen twice a scan period apart.
	lastZero := time.Time{}
	n.waitFor(ctx, "the async backlog to drain", 10*time.Minute, 10*time.Second, func() (bool, string) {
		depth, err := n.depth(ctx)
		if err != nil {
			lastZero = time.Time{}
			return false, err.Error()
		}
		sum := 0
		for _, d := range depth {
			sum += d
		}
		status := fmt.Sprintf("backlog %v, %d side-effect lines", depth, countLines(t, effects))
		if sum > 0 {
			lastZero = time.Time{}
			return false, status
		}
		if lastZero.IsZero() {
			lastZero = time.Now()
		}
		return time.Since(lastZero) > 6*time.Second, status
	})
	drainDone := time.Now()
	lines := countLines(t, effects)
	t.Logf("phase drain: backlog empty %s after the last submission (%d side-effect lines in all, %.0f executions/s over submission and drain)",
		drainDone.Sub(submitDone).Round(time.Millisecond), lines, float64(lines)/drainDone.Sub(setupDone).Seconds())

	// Every accepted id's state, until all are final.
	states := n.finalStates(ctx, subs)
	statesDone := time.Now()
	t.Logf("phase states: %d states read, all final, in %s", len(states), statesDone.Sub(drainDone).Round(time.Millisecond))
	dead, err := n.client().DeadLetters(ctx, dlqName, 10000)
	if err != nil {
		t.Fatalf("dead-letter queue %s: %v", dlqName, err)
	}
	eff := readEffects(t, effects)
	delete(eff.byID, warm.ID)
	r := verify(jobs, subs, states, eff, dead, n.kills)
	r.log(t)
	for _, k := range n.kills {
		t.Logf("kill: %s at +%s (after setup), server healthy again %s later",
			k.why, k.at.Sub(setupDone).Round(time.Millisecond), k.up.Sub(k.at).Round(time.Millisecond))
	}
	t.Logf("phase total: %s (build %s, setup %s, submission %s, drain %s, states %s)",
		time.Since(began).Round(time.Millisecond), built.Sub(began).Round(time.Millisecond), setupDone.Sub(built).Round(time.Millisecond),
		submitDone.Sub(setupDone).Round(time.Millisecond), drainDone.Sub(submitDone).Round(time.Millisecond),
		statesDone.Sub(drainDone).Round(time.Millisecond))
}

// node is the one server of the soak, restarted on its data directory
// after each kill. The current server is read by the submitters; only the
// test goroutine starts and kills it.
type node struct {
	t       *testing.T
	dataDir string
	hc      *http.Client
	cur     atomic.Pointer[endpoint]
	kills   []kill
}

type endpoint struct {
	srv *harness.Server
	c   *client.Client
}

// kill is one kill -9 of the server: when, and when it answered again.
type kill struct {
	why    string
	at, up time.Time
}

func newNode(t *testing.T, dataDir string) *node {
	// Enough idle connections for every submitter and poller: the
	// default two per host would open and close one per request.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2 * (submitters + pollers)
	t.Cleanup(tr.CloseIdleConnections)
	return &node{t: t, dataDir: dataDir, hc: &http.Client{Transport: tr}}
}

func (n *node) client() *client.Client { return n.cur.Load().c }

// start runs the server (test goroutine only: the harness fails the test
// if it does not come up).
func (n *node) start() {
	n.t.Helper()
	srv := harness.Start(n.t, harness.Options{DataDir: n.dataDir, Args: serverArgs, DefaultSandbox: true})
	c, err := client.New(srv.URL, n.hc, client.WithToken(srv.Token))
	if err != nil {
		n.t.Fatal(err)
	}
	n.cur.Store(&endpoint{srv: srv, c: c})
}

// killAndRestart kills the server with SIGKILL and starts it again on the
// same data directory (on a new port: the submitters follow cur).
func (n *node) killAndRestart(why string) {
	n.t.Helper()
	old := n.cur.Load()
	k := kill{why: why, at: time.Now()}
	old.srv.Kill()
	n.start()
	k.up = time.Now()
	n.kills = append(n.kills, k)
	n.t.Logf("killed the server (-9) %s; it answered again %s later", why, k.up.Sub(k.at).Round(time.Millisecond))
}

// submit sends one job until it is accepted, retrying with the same key
// after errors (a server killed mid-request, one restarting), so that a
// request stored just before a kill is answered with its id again.
func (n *node) submit(ctx context.Context, j job, s *submission) {
	first := time.Now()
	wait := 50 * time.Millisecond
	for {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		acc, err := n.client().InvokeAsync(rctx, j.fn, j.event, j.key)
		cancel()
		s.tries++
		if err == nil {
			s.id, s.duplicate = acc.ID, acc.Duplicate
			return
		}
		if s.errs == nil {
			s.errs = map[string]int{}
		}
		s.errs[errKind(err)]++
		if !retryable(err) || time.Since(first) > maxSubmitTime || ctx.Err() != nil {
			s.err = err
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// retryable: the server could not take the request now (unreachable,
// restarting, overloaded); a 4xx about the request itself is final.
func retryable(err error) bool {
	var apiErr *client.Error
	if !errors.As(err, &apiErr) {
		return true
	}
	return apiErr.Status == http.StatusTooManyRequests || apiErr.Status >= 500
}

// errKind names a failed request for the report.
func errKind(err error) string {
	var apiErr *client.Error
	if errors.As(err, &apiErr) {
		return fmt.Sprintf("HTTP %d %s", apiErr.Status, apiErr.Body.Code)
	}
	msg := err.Error()
	for _, k := range []string{"connection refused", "connection reset", "EOF", "broken pipe", "deadline exceeded"} {
		if strings.Contains(msg, k) {
			return k
		}
	}
	return "other"
}

// waitFor polls cond every 100 ms until it holds, logging its status
// every logEvery; it fails the test after limit or at the test's
// deadline.
func (n *node) waitFor(ctx context.Context, what string, limit, logEvery time.Duration, cond func() (bool, string)) {
	n.t.Helper()
	began := time.Now()
	lastLog := began
	for {
		ok, status := cond()
		if ok {
			return
		}
		if time.Since(lastLog) >= logEvery {
			n.t.Logf("waiting %s for %s: %s", time.Since(began).Round(time.Second), what, status)
			lastLog = time.Now()
		}
		if time.Since(began) > limit || ctx.Err() != nil {
			n.t.Fatalf("gave up after %s waiting for %s: %s", time.Since(began).Round(time.Second), what, status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// depth reads the async backlog per function from the server's metrics
// (baton_async_queue_depth, updated every few seconds).
func (n *node) depth(ctx context.Context) (map[string]int, error) {
	ep := n.cur.Load()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, ep.srv.URL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+ep.srv.Token)
	resp, err := n.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: %s", resp.Status)
	}
	out := map[string]int{}
	const prefix = `baton_async_queue_depth{function="`
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		name, value, ok := strings.Cut(rest, `"} `)
		if !ok {
			return nil, fmt.Errorf("metrics: unexpected line %q", line)
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: %q: %v", line, err)
		}
		out[name] = int(v)
	}
	return out, sc.Err()
}

// finalStates reads every accepted invocation's state, in rounds over
// those not final yet, until all are final (or fails the test with the
// ones that are not).
func (n *node) finalStates(ctx context.Context, subs []submission) map[string]apiv1.AsyncInvocation {
	n.t.Helper()
	states := map[string]apiv1.AsyncInvocation{}
	var pending []string
	for _, s := range subs {
		if s.err == nil {
			pending = append(pending, s.id)
		}
	}
	began := time.Now()
	for round := 1; ; round++ {
		got, errs := n.readStates(ctx, pending)
		var still []string
		notFinal := map[string]int{}
		for _, id := range pending {
			inv, ok := got[id]
			if ok && stateName(inv.State).final() {
				states[id] = inv
				continue
			}
			still = append(still, id)
			if ok {
				notFinal[inv.State]++
			} else {
				notFinal["error: "+errs[id]]++
			}
		}
		pending = still
		if len(pending) == 0 {
			return states
		}
		n.t.Logf("states round %d: %d final, %d not yet: %v", round, len(states), len(pending), notFinal)
		if time.Since(began) > 5*time.Minute || ctx.Err() != nil {
			sort.Strings(pending)
			for i, id := range pending[:min(len(pending), 20)] {
				inv, err := n.client().AsyncInvocation(ctx, id)
				n.t.Errorf("not final (%d of %d shown): %s: %+v %v", i+1, len(pending), id, inv, err)
			}
			n.t.FailNow()
		}
		time.Sleep(2 * time.Second)
	}
}

// readStates reads the states of ids with a few requests at once; errs
// holds why a state could not be read.
func (n *node) readStates(ctx context.Context, ids []string) (map[string]apiv1.AsyncInvocation, map[string]string) {
	var mu sync.Mutex
	got, errs := map[string]apiv1.AsyncInvocation{}, map[string]string{}
	next := make(chan string)
	var wg sync.WaitGroup
	for range pollers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range next {
				rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				inv, err := n.client().AsyncInvocation(rctx, id)
				cancel()
				mu.Lock()
				if err != nil {
					errs[id] = errKind(err)
				} else {
					got[id] = inv
				}
				mu.Unlock()
			}
		}()
	}
	for _, id := range ids {
		next <- id
	}
	close(next)
	wg.Wait()
	return got, errs
}

// stateName is an async invocation's state as the API gives it.
type stateName string

func (s stateName) final() bool {
	switch s {
	case "succeeded", "failed", "dead-lettered", "expired":
		return true
	}
	return false
}

// effects is the side-effect file: the attempts each id ran as, in the
// order written.
type effects struct {
	lines     int
	byID      map[string][]int
	malformed []string
}

func readEffects(t *testing.T, path string) effects {
	t.Helper()
	e := effects{byID: map[string][]int{}}
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return e
		}
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if line == "" {
			continue
		}
		e.lines++
		id, num, ok := strings.Cut(line, " ")
		a, err := strconv.Atoi(num)
		if !ok || err != nil || id == "" {
			e.malformed = append(e.malformed, line)
			continue
		}
		e.byID[id] = append(e.byID[id], a)
	}
	return e
}

// countLines counts the side-effect file's lines.
func countLines(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	count, buf := 0, make([]byte, 64<<10)
	for {
		m, err := f.Read(buf)
		count += bytes.Count(buf[:m], []byte{'\n'})
		if err == io.EOF {
			return count
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// zipDir zips a code directory with Baton's own archiver, as the CLI does.
func zipDir(t *testing.T, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := archive.ZipDir(dir, &buf); err != nil {
		t.Fatalf("zip %s: %v", dir, err)
	}
	return buf.Bytes()
}

// decodeKey returns the "key" field of a work invocation's result.
func decodeKey(result []byte) string {
	var ev struct {
		Key string `json:"key"`
	}
	_ = json.Unmarshal(result, &ev)
	return ev.Key
}
