package multihost

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/test/harness"
)

// soakDefaultInvocations is how many invocations TestAsyncSoakRandomKills
// submits (BATON_SOAK_INVOCATIONS overrides it for quicker runs by hand).
// 10,000 take 2–3.5 minutes on a busy 2-core machine: scripts/test.sh
// runs this test as a part of its own.
const soakDefaultInvocations = 10000

// soakMinKills is the least number of kills, of both kinds.
const soakMinKills = 4

// soakDLQ is the dead-letter queue of the flaky function.
const soakDLQ = "clsoak"

// soakStall is how long the invocations may go without one more of them
// reaching a final state before the test calls it a stall: far beyond the
// redelivery of a dead controller's events (15 s) and the slow
// function's three timed-out attempts.
const soakStall = 2 * time.Minute

// soakApp is the functions' code. A run appends "<invocation id>
// <attempt> <what> <unix ns> <pid> <instance>" to the file SOAK_FILE names, with one
// write(2) on an O_APPEND descriptor, so that lines of concurrent runs
// never mix. The attempt is Baton's (the client context's
// custom["baton-attempt"]), "sync" for a synchronous call.
const soakApp = `import os
import time


def _record(context, what):
    cc = context.client_context
    custom = (cc.custom if cc is not None else None) or {}
    attempt = custom.get("baton-attempt", "sync")
    line = "%s %s %s %d %d %s\n" % (context.aws_request_id, attempt, what, time.time_ns(), os.getpid(), context.log_stream_name)
    fd = os.open(os.environ["SOAK_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def work(event, context):
    # The side effect comes after the work: a run cut short leaves none.
    time.sleep(event["sleepMs"] / 1000)
    _record(context, "ran")
    return {"n": event["n"]}


def flaky(event, context):
    _record(context, "ran")
    raise RuntimeError("flaky fails every attempt")


def slow(event, context):
    # Its timeout (1 s) kills it long before the end.
    _record(context, "start")
    time.sleep(3)
    _record(context, "end")
    return {"n": event["n"]}
`

// soakFunctions are the functions and their specs: work sleeps up to
// 300 ms and succeeds, flaky always fails (default retries, dead-letter
// queue), slow always times out (default retries, no destination).
func soakFunctions(dir string) map[string]apiv1.FunctionSpec {
	spec := func(handler string, timeout, scale int, async *apiv1.AsyncConfig) apiv1.FunctionSpec {
		return apiv1.FunctionSpec{Runtime: "python3", Handler: "app." + handler, TimeoutSeconds: timeout,
			Concurrency: 1, MaxScale: scale, IdleTimeoutSeconds: 900, Async: async,
			Env: map[string]string{"SOAK_FILE": filepath.Join(dir, handler+".log")}}
	}
	return map[string]apiv1.FunctionSpec{
		"work":  spec("work", 60, 24, &apiv1.AsyncConfig{Concurrency: 24}),
		"flaky": spec("flaky", 60, 8, &apiv1.AsyncConfig{Concurrency: 8, OnFailure: "dlq:" + soakDLQ}),
		"slow":  spec("slow", 1, 16, &apiv1.AsyncConfig{Concurrency: 16}),
	}
}

// soakFunctionOf is the function of the i-th invocation: 2 % slow, 10 %
// flaky, the rest work, spread evenly over the run.
func soakFunctionOf(i int) string {
	switch {
	case i%50 == 25:
		return "slow"
	case i%10 == 3:
		return "flaky"
	}
	return "work"
}

func soakCode(t *testing.T) []byte { return zipApp(t, soakApp) }

// zipApp zips one Python source as app.py.
func zipApp(t *testing.T, src string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.Create("app.py")
	if err == nil {
		_, err = w.Write([]byte(src))
	}
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// soakSub is one idempotency key's submission.
type soakSub struct {
	key, fn, event string
	n              int
	id             string
	via            int  // index of the controller that accepted it
	dup            bool // the accepting answer said duplicate: an earlier try had stored it
	tries          int
	err            error
	// Every tenth key is submitted again through the other controller
	// once accepted: the answer must be the same id, as a duplicate.
	again    string
	againDup bool
	againErr error
}

// submit submits s through controller first, alternating between the
// controllers on failure with the same key, until accepted or ctx ends.
func (s *soakSub) submit(ctx context.Context, cls [2]*client.Client, first int) {
	var last error
	deadline := time.Now().Add(2 * settle)
	for s.tries = 0; ; s.tries++ {
		cl := (first + s.tries) % 2
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		acc, err := cls[cl].InvokeAsync(actx, s.fn, []byte(s.event), s.key)
		cancel()
		if err == nil {
			s.tries++
			s.id, s.via, s.dup = acc.ID, cl, acc.Duplicate
			break
		}
		last = err
		if ctx.Err() != nil || time.Now().After(deadline) {
			s.tries++
			s.err = fmt.Errorf("never accepted in %d tries: %w", s.tries, last)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	if s.n%10 != 0 {
		return
	}
	other := 1 - s.via
	for try := 0; ; try++ {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		acc, err := cls[(other+try)%2].InvokeAsync(actx, s.fn, []byte(s.event), s.key)
		cancel()
		if err == nil {
			s.again, s.againDup = acc.ID, acc.Duplicate
			return
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			s.againErr = err
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// soakKill is one kill -9 and restart.
type soakKill struct {
	node  *node
	begin time.Time // kill issued
	dead  time.Time // the process is gone
	back  time.Time // restarted and serving (a controller) or a member again (a worker)
}

func (k soakKill) controller() bool { return strings.HasPrefix(k.node.id, "c") }

// soakGrace is how long after a node is back its kill may still explain
// an attempt's failure or an extra run: a dead controller's events are
// delivered again after 15 s, and membership needs a few seconds.
const soakGrace = 30 * time.Second

// The soak test, cluster half: thousands of asynchronous
// invocations of real Python functions (process sandboxes on the workers)
// are submitted with idempotency keys through both controllers while a
// killer kills -9, at random intervals, a random worker or controller and
// restarts it a moment later. Every function appends a line per run to a
// file (the hosts share the filesystem), so the test sees what actually
// ran and compares it with the attempts each invocation's state records:
// every accepted id ends final, with one id per key; work succeeds, having
// run once per attempt that ended (more only where a kill cut an attempt
// short); flaky is dead-lettered after 3 attempts; slow fails after 3
// timeouts; the dead-letter queue and the streams hold exactly what they
// should.
func TestAsyncSoakRandomKills(t *testing.T) {
	total := soakDefaultInvocations
	if v := os.Getenv("BATON_SOAK_INVOCATIONS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 100 {
			t.Fatalf("BATON_SOAK_INVOCATIONS=%q: want a number of at least 100", v)
		}
		total = n
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("BATON_SOAK_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("BATON_SOAK_SEED=%q: %v", v, err)
		}
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	t.Logf("%d invocations; kills chosen with BATON_SOAK_SEED=%d", total, seed)

	began := time.Now()
	phase := began
	logPhase := func(what string) {
		now := time.Now()
		t.Logf("phase %s: %s (%s since the start)", what, now.Sub(phase).Round(time.Millisecond), now.Sub(began).Round(time.Millisecond))
		phase = now
	}

	// Debug logs name instances as they start and die: evidence, should a
	// check fail.
	c := newClusterWith(t, false, []string{"--sandbox", "process", "--log-level", "debug"},
		append(slices.Clone(asyncArgs), "--log-level", "debug")...)
	logPhase("cluster up")

	dir := t.TempDir()
	// The functions' processes run as root like the workers; the
	// directory is theirs to write into.
	specs := soakFunctions(dir)
	d := deployed{}
	deployer := c.client(c.controllers...)
	code := soakCode(t)
	for _, name := range sortedKeys(specs) {
		waitFor(t, "deploy "+name, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			fn, err := deployer.Deploy(ctx, name, client.DeployRequest{FunctionSpec: specs[name], Code: code})
			if err != nil {
				t.Logf("deploy %s: %v", name, err)
				return err
			}
			d[name] = fn
			return nil
		})
	}
	// A synchronous call through each controller proves the process
	// sandboxes run Python on the workers before the soak depends on it.
	for i, ctrl := range c.controllers {
		cl := c.client(ctrl)
		waitFor(t, "work to answer through "+ctrl.id, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			resp, err := cl.Invoke(ctx, "work", fmt.Appendf(nil, `{"n":%d,"sleepMs":0}`, -1-i))
			if err != nil {
				return err
			}
			var res struct{ N int }
			if err := json.Unmarshal(resp.Body, &res); err != nil || res.N != -1-i {
				t.Fatalf("through %s, work answered %s (headers %v)", ctrl.id, resp.Body, resp.Header)
			}
			return nil
		})
	}
	logPhase("deployed and warm")

	subs := make([]soakSub, total)
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	for i := range subs {
		s := &subs[i]
		s.n, s.fn, s.key = i, soakFunctionOf(i), fmt.Sprintf("soak-%s-%d", run, i)
		s.event = fmt.Sprintf(`{"key":%q,"n":%d,"sleepMs":%d}`, s.key, i, rng.IntN(301))
	}
	cls := [2]*client.Client{c.client(c.controllers[0]), c.client(c.controllers[1])}
	ctx, cancel := context.WithCancel(context.Background())
	var accepted atomic.Int64
	next := make(chan int)
	var wg sync.WaitGroup
	for range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				subs[i].submit(ctx, cls, i%2)
				accepted.Add(1)
			}
		}()
	}
	submitted := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(submitted)
		defer close(next)
		for i := range subs {
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	submitStart := time.Now()
	var submitEnd time.Time // set before allIn is closed
	allIn := make(chan struct{})
	wg.Add(1)
	go func() {
		// Done is when the last submitter finished, not the feeder.
		defer wg.Done()
		<-submitted
		for accepted.Load() < int64(total) && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		submitEnd = time.Now()
		close(allIn)
	}()
	t.Cleanup(func() {
		// A failure ends the test early: the submitters stop before
		// the cluster goes.
		cancel()
		wg.Wait()
	})

	// The killer: in the test goroutine, the only one that touches the
	// nodes while the soak runs. past keeps the killed runs, whose logs
	// are evidence.
	var kills []soakKill
	var past []*harness.Proc
	kinds := func() (ctrls, workers int) {
		for _, k := range kills {
			if k.controller() {
				ctrls++
			} else {
				workers++
			}
		}
		return
	}
	for {
		inDone := false
		select {
		case <-allIn:
			inDone = true
		default:
		}
		ctrls, workers := kinds()
		if inDone && len(kills) >= soakMinKills && ctrls > 0 && workers > 0 {
			break
		}
		// A random pause while submissions go on; once they are done,
		// the kills still missing come a second apart.
		if inDone {
			time.Sleep(time.Second)
		} else {
			select {
			case <-time.After(2*time.Second + time.Duration(rng.Int64N(int64(6*time.Second)))):
			case <-allIn:
				continue
			}
		}
		var pool []*node
		switch {
		case len(kills) >= soakMinKills-1 && ctrls == 0:
			pool = c.controllers
		case len(kills) >= soakMinKills-1 && workers == 0:
			pool = c.workers
		case rng.IntN(2) == 0:
			pool = c.controllers
		default:
			pool = c.workers
		}
		victim := pool[rng.IntN(len(pool))]
		past = append(past, victim.proc)
		k := soakKill{node: victim, begin: time.Now()}
		victim.proc.Kill()
		k.dead = time.Now()
		down := 500*time.Millisecond + time.Duration(rng.Int64N(int64(2500*time.Millisecond)))
		t.Logf("kill -9 %s at %s after %d accepted; restart in %s", victim.id, k.begin.Format(time.RFC3339Nano), accepted.Load(), down.Round(time.Millisecond))
		time.Sleep(down)
		victim.start(t)
		if k.controller() {
			c.waitControllerServes(victim)
		}
		c.waitMembers(c.liveIDs()...)
		k.back = time.Now()
		kills = append(kills, k)
		t.Logf("%s is back %s after its kill, %d accepted", victim.id, k.back.Sub(k.begin).Round(time.Millisecond), accepted.Load())
	}
	t.Logf("submitted %d invocations in %s (%.0f/s) with %d kills",
		total, submitEnd.Sub(submitStart).Round(time.Millisecond), float64(total)/submitEnd.Sub(submitStart).Seconds(), len(kills))
	logPhase("submissions and kills")

	ids := checkSubmissions(t, subs)
	states := c.waitAllFinal(subs, past)
	logPhase("every invocation final")
	if t.Failed() {
		return
	}

	lines := readSoakLines(t, dir)
	c.checkSoakStates(subs, states, lines, kills, past)
	c.checkSoakDLQ(subs)
	c.checkSoakStreams(len(ids))
	c.checkNothingLost(d)
	logPhase("checks")
}

// checkSubmissions checks that every key was accepted, with one id per
// key and a repeat through the other controller answered with the same
// id; it returns id → index of its submission.
func checkSubmissions(t *testing.T, subs []soakSub) map[string]int {
	t.Helper()
	ids := map[string]int{}
	tries, dups, agains := 0, 0, 0
	for i, s := range subs {
		tries += s.tries
		if s.err != nil {
			t.Errorf("key %s (%s): %v", s.key, s.fn, s.err)
			continue
		}
		if s.dup {
			dups++
			if s.tries == 1 {
				t.Errorf("key %s: its first submission was answered as a duplicate of %s", s.key, s.id)
			}
		}
		if j, seen := ids[s.id]; seen {
			t.Errorf("id %s was given to keys %s and %s", s.id, subs[j].key, s.key)
		}
		ids[s.id] = i
		if s.n%10 == 0 {
			agains++
			switch {
			case s.againErr != nil:
				t.Errorf("key %s: the repeat through the other controller failed: %v", s.key, s.againErr)
			case s.again != s.id || !s.againDup:
				t.Errorf("key %s: accepted as %s, the repeat through the other controller answered %s (duplicate %v)", s.key, s.id, s.again, s.againDup)
			}
		}
	}
	t.Logf("%d keys, %d distinct ids; %d tries in all (%d repeated after a failure), %d accepted as a duplicate of an earlier try; %d repeats through the other controller",
		len(subs), len(ids), tries, tries-len(subs), dups, agains)
	return ids
}

// waitAllFinal waits until every accepted invocation has a final state,
// asking the controllers in turn, and returns the states. No progress for
// soakStall is a stall: the test fails with what the pending invocations
// look like.
func (c *cluster) waitAllFinal(subs []soakSub, past []*harness.Proc) map[string]apiv1.AsyncInvocation {
	c.t.Helper()
	states := map[string]apiv1.AsyncInvocation{}
	var pending []string
	for _, s := range subs {
		if s.err == nil {
			pending = append(pending, s.id)
		}
	}
	total := len(pending)
	ctrls := c.liveControllers()
	lastProgress, lastLog := time.Now(), time.Time{}
	for len(pending) > 0 {
		var mu sync.Mutex
		var still []string
		errs := 0
		var lastErr error
		next := make(chan int)
		var wg sync.WaitGroup
		for range submitters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range next {
					id := pending[k]
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					st, err := c.client(ctrls[k%len(ctrls)]).AsyncInvocation(ctx, id)
					cancel()
					mu.Lock()
					switch {
					case err != nil:
						errs++
						lastErr = fmt.Errorf("id %s: %w", id, err)
						still = append(still, id)
					case !isFinal(st.State):
						states[id] = st
						still = append(still, id)
					default:
						states[id] = st
					}
					mu.Unlock()
				}
			}()
		}
		for k := range pending {
			next <- k
		}
		close(next)
		wg.Wait()
		if len(still) < len(pending) {
			lastProgress = time.Now()
		}
		pending = still
		if len(pending) == 0 {
			break
		}
		if time.Since(lastLog) > 10*time.Second {
			lastLog = time.Now()
			c.t.Logf("%d of %d invocations final; %d lookups failed (last: %v)", total-len(pending), total, errs, lastErr)
		}
		if time.Since(lastProgress) > soakStall {
			slices.Sort(pending)
			c.t.Errorf("stall: %d invocations not final after %s without progress", len(pending), soakStall)
			for _, id := range pending[:min(len(pending), 10)] {
				st := states[id]
				c.t.Errorf("  %s of %s: %s, attempts %+v; in the logs: %s", id, st.Function, st.State, st.Attempts, c.grepLogs(past, id))
			}
			return states
		}
		time.Sleep(time.Second)
	}
	c.t.Logf("all %d invocations final", total)
	return states
}

// grepLogs returns the lines of the controllers' and workers' logs, of
// their current runs and of past, that mention s.
func (c *cluster) grepLogs(past []*harness.Proc, s string) string {
	var out []string
	procs := slices.Clone(past)
	for _, n := range slices.Concat(c.controllers, c.workers) {
		if n.proc != nil {
			procs = append(procs, n.proc)
		}
	}
	for _, p := range procs {
		for line := range strings.Lines(p.Logs()) {
			if strings.Contains(line, s) {
				out = append(out, p.Name+": "+strings.TrimSpace(line))
			}
		}
	}
	if len(out) == 0 {
		return "(nothing)"
	}
	return strings.Join(out, "\n")
}

// soakLine is one run a function recorded.
type soakLine struct {
	attempt  int // 0 for a synchronous call
	what     string
	at       time.Time
	pid      string
	instance string
}

func (l soakLine) String() string {
	return fmt.Sprintf("attempt %d %s at %s in pid %s of instance %s", l.attempt, l.what, l.at.Format(time.RFC3339Nano), l.pid, l.instance)
}

// readSoakLines reads the functions' files: function → id → runs.
func readSoakLines(t *testing.T, dir string) map[string]map[string][]soakLine {
	t.Helper()
	out := map[string]map[string][]soakLine{}
	for _, fn := range []string{"work", "flaky", "slow"} {
		out[fn] = map[string][]soakLine{}
		f, err := os.Open(filepath.Join(dir, fn+".log"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) != 6 {
				t.Errorf("%s.log: malformed line %q", fn, sc.Text())
				continue
			}
			var l soakLine
			if fields[1] != "sync" {
				if l.attempt, err = strconv.Atoi(fields[1]); err != nil || l.attempt < 1 {
					t.Errorf("%s.log: attempt %q in line %q", fn, fields[1], sc.Text())
					continue
				}
			}
			ns, err := strconv.ParseInt(fields[3], 10, 64)
			if err != nil {
				t.Errorf("%s.log: time in line %q: %v", fn, sc.Text(), err)
				continue
			}
			l.what, l.at, l.pid, l.instance = fields[2], time.Unix(0, ns), fields[4], fields[5]
			out[fn][fields[0]] = append(out[fn][fields[0]], l)
		}
		f.Close()
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// soakTally counts, per function, what the states and runs showed.
type soakTally struct {
	ids, runs, extra int
	states           map[string]int
	attempts         map[string]int // "n attempts" and error types of attempts
	extraWhy         map[string]int
	example          map[string]string // attempt kind → an error it ended with
	exhaustedByCrash int               // work invocations whose every attempt a crash cut short
}

func (s *soakTally) String() string {
	var ex []string
	for _, k := range sortedKeys(s.example) {
		ex = append(ex, fmt.Sprintf("%s: %q", k, s.example[k]))
	}
	return fmt.Sprintf("%d ids, %d runs, %d beyond one per attempt that ended (%s); states %s; attempts %s; e.g. %s",
		s.ids, s.runs, s.extra, countsString(s.extraWhy), countsString(s.states), countsString(s.attempts), strings.Join(ex, "; "))
}

func countsString(m map[string]int) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// checkSoakStates checks every invocation's final state against its
// function's policy, and its runs against its attempts:
//
//   - an attempt that ended (success, the function's error, slow's
//     timeout) ran exactly once: one line with its number;
//   - an attempt a crash cut short (interrupted: its controller died;
//     or failed with a Baton error such as worker-lost) ran at most once,
//     and only when a kill explains it (the attempt overlaps a node's
//     down time plus soakGrace, or for an interrupted one a controller's
//     death);
//   - a line with an attempt number the state does not record is an
//     error; slow's "end" (its instance was killed late) is tolerated
//     for a few;
//   - an attempt number run twice is explained only by a controller
//     killed between the two runs (the controller died after it ran the
//     event but before its state said so, so the next delivery used the
//     number again); anything else is a duplicate without a crash.
func (c *cluster) checkSoakStates(subs []soakSub, states map[string]apiv1.AsyncInvocation, lines map[string]map[string][]soakLine, kills []soakKill, past []*harness.Proc) {
	t := c.t
	t.Helper()
	bad := 0
	var suspects []string    // ids of the invocations that failed a check, for the evidence
	var id string            // the invocation being checked
	var pastTimeout []string // slow invocations that ran to their end
	fail := func(format string, args ...any) {
		if len(suspects) == 0 || suspects[len(suspects)-1] != id {
			suspects = append(suspects, id)
		}
		if bad++; bad <= 30 {
			t.Errorf(format, args...)
		}
	}
	tallies := map[string]*soakTally{}
	for _, fn := range []string{"work", "flaky", "slow"} {
		tallies[fn] = &soakTally{states: map[string]int{}, attempts: map[string]int{}, extraWhy: map[string]int{}, example: map[string]string{}}
	}
	known := map[string]bool{}
	// crashed says whether a kill explains what happened from start to
	// end: a controller's death, for an attempt its controller never
	// finished (it started before the process was gone); any kill, for an
	// attempt that failed with a Baton error (it started before the node
	// was back plus soakGrace).
	crashed := func(start, end time.Time, controllerDied bool) bool {
		for _, k := range kills {
			startBy := k.back.Add(soakGrace)
			if controllerDied {
				if !k.controller() {
					continue
				}
				startBy = k.dead
			}
			if !start.After(startBy) && !end.Before(k.begin) {
				return true
			}
		}
		return false
	}
	for _, s := range subs {
		if s.err != nil {
			continue
		}
		known[s.id] = true
		id = s.id
		st, ok := states[s.id]
		if !ok || !isFinal(st.State) {
			continue // waitAllFinal reported it
		}
		tl := tallies[s.fn]
		tl.ids++
		tl.states[st.State]++
		tl.attempts[fmt.Sprintf("%d attempts", len(st.Attempts))]++
		if st.ID != s.id || st.Function != s.fn {
			fail("invocation %s of %s: the state names invocation %s of %s", s.id, s.fn, st.ID, st.Function)
			continue
		}
		runs := map[int][]soakLine{}
		for _, l := range lines[s.fn][s.id] {
			tl.runs++
			if l.what == "end" {
				// Killed late: on an overloaded host the kill of a
				// timed-out instance (through its grain worker) can lag.
				t.Logf("invocation %s of %s: %s, past its timeout", s.id, s.fn, l)
				pastTimeout = append(pastTimeout, s.id)
			}
			if l.attempt < 1 || l.attempt > len(st.Attempts) {
				fail("invocation %s of %s ran attempt %d at %s, but its state records %d attempts: %+v",
					s.id, s.fn, l.attempt, l.at.Format(time.RFC3339Nano), len(st.Attempts), st.Attempts)
				continue
			}
			if l.what != "end" {
				runs[l.attempt] = append(runs[l.attempt], l)
			}
		}
		succeeded := 0
		for i, a := range st.Attempts {
			if a.Number != i+1 {
				fail("invocation %s of %s: attempt %d is numbered %d: %+v", s.id, s.fn, i+1, a.Number, st.Attempts)
			}
			ran := runs[a.Number]
			// How the attempt ended, and whether it must have run.
			var kind string
			mustRun := false
			switch {
			case a.Interrupted:
				kind = "interrupted"
				if !crashed(a.Start, a.End, true) {
					fail("invocation %s of %s: attempt %d (%s – %s) was interrupted with no controller killed meanwhile",
						s.id, s.fn, a.Number, a.Start.Format(time.RFC3339Nano), a.End.Format(time.RFC3339Nano))
				}
			case a.End.IsZero():
				kind = "never ended"
				fail("invocation %s of %s is %s but attempt %d never ended: %+v", s.id, s.fn, st.State, a.Number, st.Attempts)
			case a.Error == "":
				kind = "succeeded"
				succeeded++
				mustRun = true
				if s.fn != "work" {
					fail("invocation %s of %s: attempt %d succeeded: %+v", s.id, s.fn, a.Number, st.Attempts)
				}
			case s.fn == "flaky" && a.ErrorType == "RuntimeError", s.fn == "slow" && a.ErrorType == "timeout":
				kind = "failed: " + a.ErrorType
				mustRun = true
			case a.ErrorType == "RuntimeError" || a.ErrorType == "timeout":
				kind = "failed: " + a.ErrorType
				fail("invocation %s of %s: attempt %d failed with %s: %s", s.id, s.fn, a.Number, a.ErrorType, a.Error)
			case !soakCrashErrors[a.ErrorType]:
				kind = "failed: " + a.ErrorType
				fail("invocation %s of %s: attempt %d failed with %s, which no crash explains: %s", s.id, s.fn, a.Number, a.ErrorType, a.Error)
			default:
				// The crash of a worker (or the controller routing to one
				// that was just killed).
				kind = "failed: " + a.ErrorType
				if !crashed(a.Start, a.End, false) {
					fail("invocation %s of %s: attempt %d (%s – %s) failed with %s (%s) with no node killed near it",
						s.id, s.fn, a.Number, a.Start.Format(time.RFC3339Nano), a.End.Format(time.RFC3339Nano), a.ErrorType, a.Error)
				}
			}
			tl.attempts[kind]++
			if _, ok := tl.example[kind]; !ok && a.Error != "" {
				tl.example[kind] = a.Error
			}
			switch {
			case mustRun && len(ran) == 0:
				fail("invocation %s of %s: attempt %d %s but never ran: %+v", s.id, s.fn, a.Number, kind, st.Attempts)
			case !mustRun && len(ran) > 0:
				tl.extra++
				tl.extraWhy["ran in an attempt a crash cut short"]++
			}
			if len(ran) > 1 {
				// The number used twice: only a controller's death between
				// the runs explains it.
				for _, r := range ran[1:] {
					tl.extra++
					if crashed(ran[0].at, r.at, true) {
						tl.extraWhy["attempt number run again after its controller died"]++
						continue
					}
					fail("invocation %s of %s: attempt %d ran at %s and again at %s with no controller killed between: %+v",
						s.id, s.fn, a.Number, ran[0].at.Format(time.RFC3339Nano), r.at.Format(time.RFC3339Nano), st.Attempts)
				}
			}
		}

		last := st.Attempts[len(st.Attempts)-1:]
		switch s.fn {
		case "work":
			if st.State == "failed" && len(st.Attempts) == 3 && succeeded == 0 && allCrashCut(st.Attempts) {
				// Lambda's policy: crashes count as attempts.
				tl.exhaustedByCrash++
				t.Logf("invocation %s of work: every attempt was cut short by a crash; it failed per policy: %+v", s.id, st.Attempts)
				break
			}
			if st.State != "succeeded" || succeeded != 1 || len(last) == 0 || last[0].Error != "" {
				fail("invocation %s of work ended %s (%s) with %d successful attempts, want succeeded once, last: %+v", s.id, st.State, st.Reason, succeeded, st.Attempts)
				break
			}
			var res struct{ N *int }
			if err := json.Unmarshal(st.Result, &res); err != nil || res.N == nil || *res.N != s.n {
				fail("invocation %s of work (event %d) succeeded with result %q", s.id, s.n, st.Result)
			}
		case "flaky":
			if st.State != "dead-lettered" || len(st.Attempts) != 3 || st.Destination != "dlq:"+soakDLQ || st.Reason != "retries exhausted" {
				fail("invocation %s of flaky ended %s (%s) with %d attempts, destination %q; want dead-lettered to dlq:%s after 3: %+v",
					s.id, st.State, st.Reason, len(st.Attempts), st.Destination, soakDLQ, st.Attempts)
			}
		case "slow":
			if st.State != "failed" || len(st.Attempts) != 3 || st.Destination != "" || st.Reason != "retries exhausted" {
				fail("invocation %s of slow ended %s (%s) with %d attempts, destination %q; want failed after 3 (no destination): %+v",
					s.id, st.State, st.Reason, len(st.Attempts), st.Destination, st.Attempts)
			}
		}
	}
	if bad > 30 {
		t.Errorf("... and %d more such errors", bad-30)
	}
	// A timeout that kills at all kills nearly every slow run before its
	// end; only a few may be late.
	if timeouts := tallies["slow"].attempts["failed: timeout"]; len(pastTimeout)*10 > timeouts {
		t.Errorf("%d slow runs ran to their end (3 s) for %d attempts that timed out after 1 s: timeouts do not stop the function", len(pastTimeout), timeouts)
	}
	if len(pastTimeout) > 0 {
		t.Logf("%d slow runs ran to their end past their timeout; evidence for the first:", len(pastTimeout))
		c.soakEvidence(pastTimeout[:min(len(pastTimeout), 3)], states, lines, kills, past)
	}
	if len(suspects) > 0 {
		c.soakEvidence(suspects[:min(len(suspects), 5)], states, lines, kills, past)
	}
	// Every run is of an accepted invocation (or a synchronous warm-up).
	for fn, byID := range lines {
		for id, ls := range byID {
			if known[id] {
				continue
			}
			for _, l := range ls {
				if l.attempt != 0 {
					t.Errorf("%s ran attempt %d of invocation %s, which no submission was answered with", fn, l.attempt, id)
				}
			}
		}
	}
	duplicates := 0
	for _, fn := range []string{"work", "flaky", "slow"} {
		tl := tallies[fn]
		duplicates += tl.extra
		t.Logf("%s: %s", fn, tl)
		if tl.exhaustedByCrash > 0 {
			t.Logf("%s: %d invocations failed because a crash cut every attempt short", fn, tl.exhaustedByCrash)
		}
	}
	t.Logf("duplicate runs (beyond one per attempt that ended), all explained by a kill: %d", duplicates)
}

// soakCrashErrors are the error types of an attempt that a killed worker
// explains: the worker could not be reached or was lost, or its instance
// died with it.
var soakCrashErrors = map[string]bool{
	"worker_unavailable": true, "worker-lost": true, "worker": true, "crash": true,
	"instance-gone": true, "not-delivered": true, "start_failed": true,
}

// allCrashCut says whether every attempt was cut short by a crash.
func allCrashCut(as []apiv1.AsyncAttempt) bool {
	for _, a := range as {
		if !a.Interrupted && !soakCrashErrors[a.ErrorType] {
			return false
		}
	}
	return true
}

// checkSoakDLQ checks that the dead-letter queue holds every flaky
// invocation, after three attempts, and nothing else.
func (c *cluster) checkSoakDLQ(subs []soakSub) {
	c.t.Helper()
	want := map[string]bool{}
	for _, s := range subs {
		if s.fn == "flaky" && s.err == nil {
			want[s.id] = true
		}
	}
	var entries []apiv1.DeadLetter
	waitFor(c.t, "the dead-letter queue", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var err error
		entries, err = c.client(c.liveControllers()...).DeadLetters(ctx, soakDLQ, 10000)
		return err
	})
	seen := map[string]int{}
	for _, e := range entries {
		seen[e.ID]++
		var rec struct {
			RequestContext struct {
				ApproximateInvokeCount int `json:"approximateInvokeCount"`
			} `json:"requestContext"`
		}
		switch {
		case !want[e.ID]:
			c.t.Errorf("dead letter #%d is of invocation %s of %q, not a flaky invocation", e.Seq, e.ID, e.Function)
		case e.Function != "flaky" || e.Condition != "RetriesExhausted":
			c.t.Errorf("dead letter #%d of %s: function %q condition %q, want flaky RetriesExhausted", e.Seq, e.ID, e.Function, e.Condition)
		case json.Unmarshal(e.Record, &rec) != nil || rec.RequestContext.ApproximateInvokeCount != 3:
			c.t.Errorf("dead letter #%d of %s: record %s, want 3 invocations", e.Seq, e.ID, e.Record)
		}
	}
	missing, twice := 0, 0
	for id := range want {
		switch n := seen[id]; {
		case n == 0:
			if missing++; missing <= 10 {
				c.t.Errorf("flaky invocation %s is not in the dead-letter queue %s", id, soakDLQ)
			}
		case n > 1:
			twice++
		}
	}
	c.t.Logf("dead-letter queue %s: %d entries for %d flaky invocations, %d missing, %d there more than once", soakDLQ, len(entries), len(want), missing, twice)
	if twice > 0 {
		c.t.Errorf("%d flaky invocations are in the dead-letter queue more than once", twice)
	}
}

// checkSoakStreams checks, straight from JetStream, that no event is left
// waiting and that exactly the submitted invocations were stored: as many
// idempotency keys and invocation states as invocations accepted.
func (c *cluster) checkSoakStreams(total int) {
	c.t.Helper()
	nc, err := nats.Connect(strings.Join(c.natsURLs, ","), nats.SetCustomDialer(bridgeDialer{c.nw}), nats.Name(c.t.Name()))
	if err != nil {
		c.t.Fatalf("connect to NATS: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	count := func(stream string) uint64 {
		var n uint64
		waitFor(c.t, "the stream "+stream, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := js.Stream(ctx, stream)
			if err != nil {
				return err
			}
			info, err := s.Info(ctx)
			if err != nil {
				return err
			}
			n = info.State.Msgs
			return nil
		})
		return n
	}
	if n := count("BATON_ASYNC"); n != 0 {
		c.t.Errorf("%d events are still in the async stream after every invocation is final", n)
	}
	if n := count("KV_baton_idempotency"); n != uint64(total) {
		c.t.Errorf("%d idempotency keys stored for %d keys submitted", n, total)
	}
	if n := count("KV_baton_invocations"); n != uint64(total) {
		c.t.Errorf("%d invocation states stored for %d invocations accepted", n, total)
	}
}

// soakEvidence logs what is known of invocations that failed a check:
// their attempts and runs, the kills, the controllers' records of them,
// and the log lines of the nodes that name their instances.
func (c *cluster) soakEvidence(ids []string, states map[string]apiv1.AsyncInvocation, lines map[string]map[string][]soakLine, kills []soakKill, past []*harness.Proc) {
	var b strings.Builder
	b.WriteString("kills:")
	for _, k := range kills {
		fmt.Fprintf(&b, "\n  %s killed %s, gone %s, back %s", k.node.id, k.begin.Format(time.RFC3339Nano), k.dead.Format(time.RFC3339Nano), k.back.Format(time.RFC3339Nano))
	}
	c.t.Log(b.String())
	for _, id := range ids {
		st := states[id]
		b.Reset()
		fmt.Fprintf(&b, "evidence for invocation %s of %s, %s (%s):", id, st.Function, st.State, st.Reason)
		for _, a := range st.Attempts {
			fmt.Fprintf(&b, "\n  state: attempt %d %s – %s interrupted=%v %s %s", a.Number, a.Start.Format(time.RFC3339Nano), a.End.Format(time.RFC3339Nano), a.Interrupted, a.ErrorType, a.Error)
		}
		instances := map[string]bool{}
		for _, l := range lines[st.Function][id] {
			fmt.Fprintf(&b, "\n  ran: %s", l)
			instances[l.instance] = true
		}
		for _, ctrl := range c.liveControllers() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			rec, err := c.client(ctrl).Invocation(ctx, id)
			cancel()
			if err != nil {
				fmt.Fprintf(&b, "\n  %s's record: %v", ctrl.id, err)
				continue
			}
			data, _ := json.Marshal(rec)
			fmt.Fprintf(&b, "\n  %s's record: %s", ctrl.id, data)
		}
		for in := range instances {
			fmt.Fprintf(&b, "\n  logs naming %s:\n%s", in, c.grepLogs(past, in))
		}
		c.t.Log(b.String())
	}
}
