package multihost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
)

// asyncArgs make a retry after a lost worker come within a fraction of a
// second rather than after the default second.
var asyncArgs = []string{"--async-retry-base", "100ms"}

// asyncKeys is how many idempotency keys TestAsyncAcrossControllerKills
// submits, each twice at once (once per controller).
const asyncKeys = 1000

// submitters is how many keys are being submitted at once.
const submitters = 8

// keyed is one idempotency key's two submissions, through c1 and c2.
type keyed struct {
	key, event string
	ids        [2]string
	duplicates int // submissions answered as a duplicate
	errs       [2]error
	retries    int // failed tries before the last
}

// The guarantees for asynchronous invocations in a cluster: every
// event is submitted twice at once with the same idempotency key, once
// through each controller, while the controller owning the function is
// killed -9 (and restarted) and then a worker is killed -9. Both
// submissions of a key get one id; there are as many ids as keys; every
// id ends succeeded with its own event as result, through either
// controller; and each ran successfully exactly once (other attempts are
// ones cut short by the crashes).
func TestAsyncAcrossControllerKills(t *testing.T) {
	t.Parallel()
	c := newCluster(t, false, asyncArgs...)
	const fn = "echo"
	d := deployed{}
	d.deploy(t, c.client(c.controllers[0]), fn, 1)
	invokeOK(t, c.client(c.controllers[0]), fn, "warm through c1")
	invokeOK(t, c.client(c.controllers[1]), fn, "warm through c2")

	subs := make([]keyed, asyncKeys)
	run := fmt.Sprintf("%d", time.Now().UnixNano())
	for i := range subs {
		subs[i].key = fmt.Sprintf("k-%s-%d", run, i)
		subs[i].event = fmt.Sprintf(`{"key":%q,"n":%d}`, subs[i].key, i)
	}
	cls := [2]*client.Client{c.client(c.controllers[0]), c.client(c.controllers[1])}
	var done atomic.Int64
	next := make(chan int)
	var wg sync.WaitGroup
	for range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				submitBoth(cls, &subs[i])
				done.Add(1)
			}
		}()
	}
	feed := make(chan struct{})
	go func() {
		defer close(feed)
		for i := range subs {
			next <- i
		}
		close(next)
	}()
	t.Cleanup(func() {
		// A failed chaos step ends the test early: let the submitters
		// finish before the cluster goes.
		<-feed
		wg.Wait()
	})
	started := time.Now()

	waitProgress(t, &done, asyncKeys/4)
	victim := c.ownerOf(fn)
	victim.proc.Kill()
	t.Logf("killed controller %s, the owner of %s, after %d keys", victim.id, fn, done.Load())
	c.waitMembers(c.liveIDs()...)
	victim.start(t)
	c.waitControllerServes(victim)
	t.Logf("restarted controller %s after %d keys", victim.id, done.Load())

	waitProgress(t, &done, asyncKeys/2)
	worker := c.busiestWorker()
	worker.proc.Kill()
	t.Logf("killed worker %s after %d keys", worker.id, done.Load())
	c.waitMembers(c.liveIDs()...)

	<-feed
	wg.Wait()
	t.Logf("submitted %d keys twice each in %s", asyncKeys, time.Since(started).Round(time.Millisecond))
	defer func() {
		t.Logf("checked every invocation %s after the submissions began", time.Since(started).Round(time.Millisecond))
	}()

	// Both submissions of a key got one id; one id per key.
	ids := map[string]int{} // id → index of its key
	retries, dups := 0, 0
	for i, s := range subs {
		retries += s.retries
		dups += s.duplicates
		if s.errs[0] != nil || s.errs[1] != nil {
			t.Errorf("key %s: a submission was never accepted: through c1: %v; through c2: %v", s.key, s.errs[0], s.errs[1])
			continue
		}
		if s.ids[0] != s.ids[1] {
			t.Errorf("key %s: c1 answered id %s, c2 answered id %s: want one id", s.key, s.ids[0], s.ids[1])
		}
		for _, id := range s.ids {
			if j, seen := ids[id]; seen && j != i {
				t.Errorf("id %s was given to keys %s and %s", id, subs[j].key, s.key)
			}
			ids[id] = i
		}
	}
	t.Logf("%d distinct ids for %d keys; %d submissions answered as duplicates, %d tries failed and were repeated", len(ids), asyncKeys, dups, retries)
	if len(ids) != asyncKeys {
		t.Errorf("%d distinct ids for %d distinct keys", len(ids), asyncKeys)
	}

	states := c.waitFinal(fn, slices.Sorted(func(yield func(string) bool) {
		for id := range ids {
			if !yield(id) {
				return
			}
		}
	}))
	checkRanOnce(t, states, func(id string) string { return subs[ids[id]].event })
	c.checkNothingLost(d)
}

// submitBoth submits s's event through both controllers at once with its
// key, each repeated until accepted (a controller may be down a while).
func submitBoth(cls [2]*client.Client, s *keyed) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, cl := range cls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tries := 0
			s.errs[i] = poll(settle, func() error {
				tries++
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				acc, err := cl.InvokeAsync(ctx, "echo", []byte(s.event), s.key)
				if err != nil {
					return err
				}
				s.ids[i] = acc.ID
				if acc.Duplicate {
					mu.Lock()
					s.duplicates++
					mu.Unlock()
				}
				return nil
			})
			mu.Lock()
			s.retries += tries - 1
			mu.Unlock()
		}()
	}
	wg.Wait()
}

// waitProgress waits until n keys are submitted.
func waitProgress(t *testing.T, done *atomic.Int64, n int64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d keys submitted", n), func() error {
		if got := done.Load(); got < n {
			return fmt.Errorf("%d so far", got)
		}
		return nil
	})
}

// ownerOf is the live controller the controllers name as fn's owner.
func (c *cluster) ownerOf(fn string) *node {
	c.t.Helper()
	var owner *node
	waitFor(c.t, "an owner of "+fn, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		f, err := c.client(c.liveControllers()...).Get(ctx, fn)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(c.controllers, func(n *node) bool { return n.id == f.Status.Owner && n.running() })
		if i < 0 {
			return fmt.Errorf("owner %q is not a live controller", f.Status.Owner)
		}
		owner = c.controllers[i]
		return nil
	})
	return owner
}

// waitFinal waits until every id has a final state, asking the live
// controllers in turn, and returns the states.
func (c *cluster) waitFinal(fn string, ids []string) map[string]apiv1.AsyncInvocation {
	c.t.Helper()
	states := map[string]apiv1.AsyncInvocation{}
	// Past the redelivery of events whose controller died (15 s).
	var mu sync.Mutex // guards states
	err := poll(settle+30*time.Second, func() error {
		ctrls := c.liveControllers()
		var pending atomic.Int64
		var last atomic.Value
		// A few readers at once: thousands of GETs one after the other
		// would take longer than the invocations.
		next := make(chan int)
		var wg sync.WaitGroup
		for range submitters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range next {
					id := ids[k]
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					st, err := c.client(ctrls[k%len(ctrls)]).AsyncInvocation(ctx, id)
					cancel()
					switch {
					case err != nil:
						last.Store(fmt.Errorf("id %s: %w", id, err))
						pending.Add(1)
						continue
					case st.ID != id || st.Function != fn:
						c.t.Errorf("GET /v1/invocations/%s answers invocation %s of function %q", id, st.ID, st.Function)
					case !isFinal(st.State):
						pending.Add(1)
						last.Store(fmt.Errorf("id %s is %s with %d attempts", id, st.State, len(st.Attempts)))
					}
					mu.Lock()
					states[id] = st
					mu.Unlock()
				}
			}()
		}
		for k, id := range ids {
			mu.Lock()
			st, ok := states[id]
			mu.Unlock()
			if !ok || !isFinal(st.State) {
				next <- k
			}
		}
		close(next)
		wg.Wait()
		if n := pending.Load(); n > 0 {
			return fmt.Errorf("%d of %d invocations not final yet; e.g. %v", n, len(ids), last.Load())
		}
		return nil
	})
	if err != nil {
		c.t.Errorf("async invocations never reached a final state: %v", err)
	}
	return states
}

func isFinal(state string) bool {
	switch state {
	case "succeeded", "failed", "dead-lettered", "expired":
		return true
	}
	return false
}

// checkRanOnce checks that every invocation succeeded with its event as
// result, with exactly one attempt that succeeded; other attempts must
// have failed (a crash cut them short), and are counted for the log.
func checkRanOnce(t *testing.T, states map[string]apiv1.AsyncInvocation, event func(id string) string) {
	t.Helper()
	kinds := map[string]int{}
	bad := 0
	fail := func(format string, args ...any) {
		if bad++; bad <= 10 {
			t.Errorf(format, args...)
		}
	}
	for _, id := range sortedKeys(states) {
		st := states[id]
		if st.State != "succeeded" {
			fail("invocation %s ended %s (%s), want succeeded; attempts %+v", id, st.State, st.Reason, st.Attempts)
			continue
		}
		if want := event(id); !bytes.Equal(st.Result, []byte(want)) {
			fail("invocation %s succeeded with result %q, want its event %s", id, st.Result, want)
		}
		ok := 0
		for _, a := range st.Attempts {
			switch {
			case a.Interrupted:
				kinds["interrupted"]++
			case a.Error != "":
				kinds["failed: "+a.ErrorType]++
			case a.End.IsZero():
				fail("invocation %s succeeded but attempt %d never ended: %+v", id, a.Number, st.Attempts)
			default:
				ok++
			}
		}
		kinds[fmt.Sprintf("%d attempts", len(st.Attempts))]++
		if ok != 1 {
			fail("invocation %s has %d successful attempts, want exactly 1: %+v", id, ok, st.Attempts)
		}
	}
	if bad > 10 {
		t.Errorf("... and %d more such invocations", bad-10)
	}
	var parts []string
	for _, k := range sortedKeys(kinds) {
		parts = append(parts, fmt.Sprintf("%s: %d", k, kinds[k]))
	}
	t.Logf("%d invocations: %s", len(states), strings.Join(parts, ", "))
}

// A rate(1 second) schedule fires once per tick while the controller that
// fires it is killed -9 and the other takes over: its fired and missed
// counts cover the ticks elapsed (±1 for the tick being fired), the ticks
// it went through are exactly those counted, and the events stored (one
// per tick's idempotency key) each ran successfully once.
func TestScheduleFiresOncePerTickAcrossControllerKill(t *testing.T) {
	t.Parallel()
	c := newCluster(t, false, asyncArgs...)
	const fn = "ticker"
	d := deployed{}
	d.deploy(t, c.client(c.controllers...), fn, 1)
	invokeOK(t, c.client(c.controllers...), fn, "warm")

	event := `{"tick":"fixed"}`
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tr, err := c.client(c.controllers...).AddTrigger(ctx, apiv1.TriggerRequest{Function: fn, Schedule: "rate(1 second)", Event: []byte(event)})
	cancel()
	if err != nil {
		t.Fatalf("add the schedule: %v", err)
	}
	t.Logf("trigger %s created %s", tr.ID, tr.Created.Format(time.RFC3339Nano))
	ticks := func(at time.Time) int64 { return int64(at.Sub(tr.Created) / time.Second) }

	victim := c.ownerOf(fn)
	waitFor(t, "the schedule to fire 8 ticks", func() error {
		s, err := c.trigger(c.client(c.controllers...), tr.ID)
		if err == nil && s.Fired < 8 {
			err = fmt.Errorf("fired %d", s.Fired)
		}
		return err
	})
	victim.proc.Kill()
	killed := time.Now()
	t.Logf("killed controller %s, the owner of %s, at tick %d", victim.id, fn, ticks(killed))
	survivor := c.client(c.liveControllers()...)

	// The 60 ticks of a 1-per-second schedule, at least 8 of them
	// after the kill.
	const total = 60
	until := tr.Created.Add(total * time.Second)
	if k := killed.Add(8 * time.Second); k.After(until) {
		until = k
	}
	waitFor(t, "the survivor to fire the ticks up to the end", func() error {
		s, err := c.trigger(survivor, tr.ID)
		if err != nil {
			return err
		}
		if !s.LastTick.After(until) {
			return fmt.Errorf("last tick %s (fired %d, missed %d), waiting for one after %s", s.LastTick.Format(time.RFC3339Nano), s.Fired, s.Missed, until.Format(time.RFC3339Nano))
		}
		return nil
	})

	// Fired and missed cover the ticks elapsed, within one.
	var s apiv1.Trigger
	waitFor(t, "fired + missed to be the ticks elapsed ±1", func() error {
		var err error
		s, err = c.trigger(survivor, tr.ID)
		if err != nil {
			return err
		}
		elapsed := ticks(time.Now())
		if n := s.Fired + s.Missed; n < elapsed-1 || n > elapsed+1 {
			return fmt.Errorf("fired %d + missed %d = %d with %d ticks elapsed", s.Fired, s.Missed, n, elapsed)
		}
		return nil
	})
	t.Logf("fired %d, missed %d (last missed %s), last tick %s, last error %q", s.Fired, s.Missed,
		s.LastMissed.Format(time.RFC3339Nano), s.LastTick.Format(time.RFC3339Nano), s.LastError)
	// Exactly the ticks gone through are counted: none twice.
	if through := ticks(s.LastTick); s.Fired+s.Missed != through {
		t.Errorf("fired %d + missed %d = %d, but the last tick %s is tick %d: a tick was counted twice or not at all",
			s.Fired, s.Missed, s.Fired+s.Missed, s.LastTick.Format(time.RFC3339Nano), through)
	}

	// The events stored: one per tick fired (a tick fired just before the
	// kill and counted missed after it may have one too).
	readAt := time.Now()
	ids, err := c.idempotentIDs()
	if err != nil {
		t.Fatalf("read the idempotency keys: %v", err)
	}
	after, err := c.trigger(survivor, tr.ID)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d events stored for %d ticks fired then and %d fired + %d missed after", len(ids), s.Fired, after.Fired, after.Missed)
	if n := int64(len(ids)); n < s.Fired || n > after.Fired+after.Missed {
		t.Errorf("%d events stored for the schedule, want between %d (fired before) and %d (fired + missed after)", n, s.Fired, after.Fired+after.Missed)
	}
	states := c.waitFinal(fn, ids)
	checkRanOnce(t, states, func(string) string { return event })

	// The survivor's records of the function: only invocations of a tick,
	// and each once unless a crash cut an attempt short.
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	recs, err := survivor.Invocations(ctx, fn, 1000)
	cancel()
	if err != nil {
		t.Fatalf("records of %s: %v", fn, err)
	}
	perID := map[string]int{}
	for _, r := range recs {
		perID[r.ID]++
		// Besides the ticks read, only the warm-up call and ticks fired
		// since.
		if _, ok := states[r.ID]; !ok && r.RequestBytes == len(event) && r.Start.Before(readAt.Add(-time.Second)) {
			t.Errorf("record %s of %s at %s is no tick's invocation", r.ID, fn, r.Start.Format(time.RFC3339Nano))
		}
	}
	for id, n := range perID {
		if st, ok := states[id]; ok && n > len(st.Attempts) {
			t.Errorf("invocation %s has %d records but %d attempts: it ran more often than attempted", id, n, len(st.Attempts))
		}
	}
	t.Logf("the survivor holds %d records of %s", len(recs), fn)
	c.checkNothingLost(d)
}

// trigger reads one trigger's counts.
func (c *cluster) trigger(cl *client.Client, id string) (apiv1.Trigger, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := cl.Triggers(ctx, "")
	if err != nil {
		return apiv1.Trigger{}, err
	}
	for _, tr := range list {
		if tr.ID == id {
			return tr, nil
		}
	}
	return apiv1.Trigger{}, fmt.Errorf("trigger %s is not listed", id)
}

// idempotentIDs reads, straight from NATS, the invocation ids the
// idempotency keys map to: in a test whose only keyed submissions are a
// schedule's ticks, one per tick fired.
func (c *cluster) idempotentIDs() ([]string, error) {
	nc, err := nats.Connect(strings.Join(c.natsURLs, ","), nats.SetCustomDialer(bridgeDialer{c.nw}), nats.Name(c.t.Name()))
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, "baton_idempotency")
	if err != nil {
		return nil, err
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", k, err)
		}
		ids = append(ids, string(e.Value()))
	}
	slices.Sort(ids)
	for i := 1; i < len(ids); i++ {
		if ids[i] == ids[i-1] {
			return nil, fmt.Errorf("two idempotency keys map to invocation %s", ids[i])
		}
	}
	return ids, nil
}
