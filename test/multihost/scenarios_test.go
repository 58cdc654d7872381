package multihost

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/cluster/membership"
	"github.com/baton-faas/baton/internal/cluster/ownership"
)

// perFn is how many load clients invoke each function at once.
const perFn = 2

// Controllers and workers started all at once form a cluster; a function
// deployed through one controller is served by the other and by itself;
// both list the cluster's five controllers and workers (the NATS nodes are
// not members).
func TestDeployAndInvokeThroughEitherController(t *testing.T) {
	t.Parallel()
	c := newCluster(t, true)
	c1, c2 := c.client(c.controllers[0]), c.client(c.controllers[1])
	d := deployed{}
	d.deploy(t, c1, "echo", 1)
	invokeOK(t, c2, "echo", "through c2")
	invokeOK(t, c1, "echo", "through c1")
	d.deploy(t, c2, "other", 1)
	invokeOK(t, c1, "other", "through c1")

	for _, cl := range []*client.Client{c1, c2} {
		nodes, err := cl.Nodes(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		roles := map[string]string{}
		for _, n := range nodes {
			roles[n.ID] = strings.Join(n.Roles, ",")
			if n.State != "ready" || n.Address == "" || n.LastHeartbeat.IsZero() {
				t.Errorf("node %+v: want ready, with an address and a heartbeat", n)
			}
		}
		want := map[string]string{"c1": "controller", "c2": "controller", "w1": "worker", "w2": "worker", "w3": "worker"}
		if !maps.Equal(roles, want) {
			t.Errorf("nodes %v, want %v", roles, want)
		}
	}
	c.checkNothingLost(d)
	if r := c.checkNoOrphansOrDuplicates(); total(r.onWorker) == 0 {
		t.Errorf("no worker reports an instance after invocations: %s", r)
	}
}

// kill -9 of a worker under load: every request gets its result or a
// clear error, the worker leaves the membership, requests keep succeeding
// on the other workers, and nothing runs or is routed to the dead worker.
func TestWorkerKilledUnderLoad(t *testing.T) {
	t.Parallel()
	c := newCluster(t, false)
	fns := []string{"alpha", "beta"}
	d := deployed{}
	for _, fn := range fns {
		d.deploy(t, c.client(c.controllers[0]), fn, 1)
	}
	l := startLoad([]*client.Client{c.client(c.controllers[0]), c.client(c.controllers[1])}, fns, perFn)
	t.Cleanup(func() { l.stop() })
	l.waitSucceeding(t, fns, time.Time{}, 20)

	victim := c.busiestWorker()
	victim.proc.Kill()
	t.Logf("killed worker %s", victim.id)
	c.waitMembers(c.liveIDs()...)
	dropped := time.Now()
	l.waitSucceeding(t, fns, dropped, 30)
	outs := l.stop()
	checkOutcomes(t, outs, nil)
	checkOnlyLost(t, outs, len(fns)*perFn, apiv1.CodeWorkerLost)
	t.Logf("failures after the controllers dropped %s: %v", victim.id, failuresAfter(outs, dropped))
	c.checkNothingLost(d)
	c.checkNoOrphansOrDuplicates()
}

// A worker cut off under load is dropped by the controllers; once its link
// is back it rejoins, and what it still runs is either routed to again or
// stopped: no orphans, no duplicates.
func TestWorkerCutOffAndBack(t *testing.T) {
	t.Parallel()
	c := newCluster(t, false)
	fns := []string{"alpha", "beta"}
	d := deployed{}
	for _, fn := range fns {
		d.deploy(t, c.client(c.controllers[0]), fn, 1)
	}
	l := startLoad([]*client.Client{c.client(c.controllers[0]), c.client(c.controllers[1])}, fns, perFn)
	t.Cleanup(func() { l.stop() })
	l.waitSucceeding(t, fns, time.Time{}, 20)

	victim := c.busiestWorker()
	victim.host.Partition()
	t.Logf("cut off worker %s", victim.id)
	var others []string
	for _, id := range c.liveIDs() {
		if id != victim.id {
			others = append(others, id)
		}
	}
	c.waitMembers(others...)
	l.waitSucceeding(t, fns, time.Now(), 30)
	victim.host.Heal()
	healed := time.Now()
	t.Logf("restored the link of worker %s", victim.id)
	c.waitMembers(c.liveIDs()...)
	l.waitSucceeding(t, fns, time.Now(), 30)
	outs := l.stop()
	checkOutcomes(t, outs, nil)
	checkOnlyLost(t, outs, len(fns)*perFn, apiv1.CodeWorkerLost)
	t.Logf("failures after the link was restored: %v", failuresAfter(outs, healed))
	if !victim.running() {
		t.Fatalf("worker %s exited while cut off:\n%s", victim.id, victim.proc.Logs())
	}
	c.checkNothingLost(d)
	c.checkNoOrphansOrDuplicates()
}

// kill -9 of a NATS node under load, the one that leads the lease bucket
// (or else the membership bucket's, or else the JetStream meta leader): nothing deployed is lost,
// invocations go on, deploys (a new function and a new version) succeed,
// and the membership still lists every node.
func TestNATSNodeKilledUnderLoad(t *testing.T) {
	t.Parallel()
	c := newCluster(t, false)
	fns := []string{"alpha", "beta"}
	d := deployed{}
	for _, fn := range fns {
		d.deploy(t, c.client(c.controllers[0]), fn, 1)
	}
	l := startLoad([]*client.Client{c.client(c.controllers[0]), c.client(c.controllers[1])}, fns, perFn)
	t.Cleanup(func() { l.stop() })
	l.waitSucceeding(t, fns, time.Time{}, 20)

	victim := c.metaLeader()
	streams, err := c.streams()
	t.Logf("streams: %v (%v)", streams, err)
	// The lease bucket's leader is the hardest loss: until JetStream
	// elects another, no controller can renew or take ownership.
	for _, bucket := range []string{membership.Bucket, ownership.Bucket} {
		if i := slices.IndexFunc(c.nats, func(n *node) bool { return n.id == streams["KV_"+bucket].leader }); i >= 0 {
			victim = c.nats[i]
		}
	}
	victim.proc.Kill()
	killed := time.Now()
	t.Logf("killed NATS node %s", victim.id)
	d.deploy(t, c.client(c.controllers[1]), "gamma", 1)
	d.deploy(t, c.client(c.controllers[0]), "alpha", 2)
	t.Logf("deploys succeeded %s after the kill", time.Since(killed).Round(time.Millisecond))
	invokeOK(t, c.client(c.controllers[0]), "gamma", "the new function through c1")
	invokeOK(t, c.client(c.controllers[1]), "gamma", "the new function through c2")
	l.waitSucceeding(t, fns, time.Now(), 30)
	outs := l.stop()
	checkOutcomes(t, outs, nil)
	// Nothing on the invocation path needs NATS: no request may fail.
	checkOnlyLost(t, outs, 0, "")
	c.checkMembers(c.liveIDs()...)
	c.checkNothingLost(d)
	c.checkNoOrphansOrDuplicates()
}

// kill -9 of a controller under load: clients fail over to the other and
// keep being served. Then every controller restarts: the first requests
// find the instances that run (no cold start) and nothing is leaked or
// duplicated.
func TestControllersKilledAndRestarted(t *testing.T) {
	t.Parallel()
	c := newCluster(t, false)
	fns := []string{"alpha", "beta"}
	d := deployed{}
	both := c.client(c.controllers...)
	for _, fn := range fns {
		d.deploy(t, both, fn, 1)
	}
	l := startLoad([]*client.Client{both}, fns, perFn)
	t.Cleanup(func() { l.stop() })
	l.waitSucceeding(t, fns, time.Time{}, 20)

	// The client sends to c1 until it cannot reach it.
	victim := c.controllers[0]
	victim.proc.Kill()
	killed := time.Now()
	t.Logf("killed controller %s", victim.id)
	l.waitSucceeding(t, fns, killed, 30)
	t.Logf("30 requests in a row per function served through the surviving controller by %s after the kill", time.Since(killed).Round(time.Millisecond))
	c.waitMembers(c.liveIDs()...)
	outs := l.stop()
	// A request the killed controller was answering loses its connection:
	// the only failure without an HTTP error that is the client's to see.
	checkOutcomes(t, outs, func(o outcome) bool { return o.status == 0 && o.start.Before(killed) })
	if f := failuresAfter(outs, killed); len(f) > 0 {
		t.Errorf("%d requests started after the kill failed (the client should have moved to %s): %s; first: %v",
			len(f), c.controllers[1].id, summary(f), f[:min(len(f), 3)])
	}
	c.checkNothingLost(d)
	before := c.checkNoOrphansOrDuplicates()

	// Restart the whole controller side.
	for _, n := range c.liveControllers() {
		n.proc.Kill()
	}
	t.Logf("killed every controller; restarting them")
	for _, n := range c.controllers {
		n.start(t)
	}
	for _, n := range c.controllers {
		c.waitControllerServes(n)
	}
	c.waitMembers(c.liveIDs()...)
	existing := map[string]bool{}
	for _, byWorker := range before.routed {
		for _, ids := range byWorker {
			for _, id := range ids {
				existing[id] = true
			}
		}
	}
	for _, fn := range fns {
		for _, ctrl := range c.controllers {
			o := invoke(c.client(ctrl), fn, fmt.Sprintf(`{"first":%q}`, fn))
			switch {
			case !o.ok:
				t.Errorf("first request for %s through %s after the restart: %s", fn, ctrl.id, o)
			case o.cold:
				t.Errorf("first request for %s through %s after the restart was a cold start (instance %s): the running instances were not found", fn, ctrl.id, o.instance)
			case !existing[o.instance]:
				t.Errorf("first request for %s through %s after the restart ran on instance %s, not one that ran before", fn, ctrl.id, o.instance)
			}
		}
	}
	c.checkNothingLost(d)
	after := c.checkNoOrphansOrDuplicates()
	if b, a := total(before.onWorker), total(after.onWorker); a != b {
		t.Errorf("workers run %d instances after the restart, %d before: want the same (%s)", a, b, after)
	}
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// invokeOK waits until an invocation of fn through cl returns its event.
func invokeOK(t *testing.T, cl *client.Client, fn, what string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s to answer %s", fn, what), func() error {
		o := invoke(cl, fn, fmt.Sprintf(`{"what":%q}`, what))
		if !o.ok {
			return o.err
		}
		return nil
	})
}

// busiestWorker is the worker the controllers route the most instances
// to: killing it affects the load the most.
func (c *cluster) busiestWorker() *node {
	c.t.Helper()
	var best *node
	waitFor(c.t, "a worker with instances", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := c.observe(ctx)
		if err != nil {
			return err
		}
		counts := map[string]int{}
		for _, byWorker := range r.routed {
			for w, ids := range byWorker {
				counts[w] += len(ids)
			}
		}
		most := 0
		for _, n := range c.workers {
			if counts[n.id] > most && n.running() {
				best, most = n, counts[n.id]
			}
		}
		if best == nil {
			return fmt.Errorf("no instance routed yet: %s", r)
		}
		c.t.Logf("before the failure: %s", r)
		return nil
	})
	return best
}

var leaderRE = regexp.MustCompile(`JetStream ready.* leader=(\S+)`)

// metaLeader is the NATS node its peers last named the JetStream meta
// leader.
func (c *cluster) metaLeader() *node {
	c.t.Helper()
	var name string
	for _, n := range c.nats {
		if m := leaderRE.FindAllStringSubmatch(n.proc.Logs(), -1); len(m) > 0 {
			name = m[len(m)-1][1]
		}
	}
	i := slices.IndexFunc(c.nats, func(n *node) bool { return n.id == name })
	if i < 0 {
		c.t.Logf("no meta leader named in the NATS logs (%q); taking %s", name, c.nats[0].id)
		return c.nats[0]
	}
	return c.nats[i]
}
