package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/test/harness"
)

// TestBurstScaleUp sends 50 concurrent requests to a Python function that
// sleeps 300 ms with maxScale 10: every request succeeds, the function
// scales out, and never past maxScale.
func TestBurstScaleUp(t *testing.T) {
	requirePython(t)
	t.Parallel()
	srv := startServer(t)
	const name, burst, maxScale = "burst", 50, 10
	spec := pySpec("sleep")
	spec.MaxScale = maxScale
	deploy(t, srv, name, spec, pyDir)

	// Watch the instance count while the burst runs.
	var peak atomic.Int64
	stopWatch := make(chan struct{})
	watchDone := make(chan struct{})
	c := ctx(t)
	go func() {
		defer close(watchDone)
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(20 * time.Millisecond):
			}
			v, err := srv.Client.Get(c, name)
			if err != nil {
				continue
			}
			if n := int64(len(v.Status.Instances) + v.Status.Starting); n > peak.Load() {
				peak.Store(n)
			}
		}
	}()

	type outcome struct {
		status   int
		instance string
		pid      string // pid and PID namespace
		err      error
	}
	outs := make([]outcome, burst)
	began := time.Now()
	parallel(burst, func(i int) {
		resp, err := srv.Client.Invoke(c, name, []byte(`{"ms": 300}`))
		outs[i] = outcome{status: resp.Status, instance: resp.Header.Get("Baton-Instance-Id"), err: err}
		var id identity
		if err == nil && json.Unmarshal(resp.Body, &id) == nil {
			outs[i].pid = fmt.Sprintf("%d in %s", id.Pid, id.Pidns)
		}
	})
	took := time.Since(began)
	close(stopWatch)
	<-watchDone

	instances := map[string]int{}
	pids := map[string]bool{}
	failures := 0
	for i, o := range outs {
		if o.status != http.StatusOK || o.err != nil {
			failures++
			t.Errorf("request %d: status %d err %v", i, o.status, o.err)
			continue
		}
		instances[o.instance]++
		pids[o.pid] = true
	}
	t.Logf("burst of %d took %s on %d instances (peak instances+starting %d): %v", burst, took, len(instances), peak.Load(), instances)
	if failures > 0 {
		t.Fatalf("%d of %d requests failed", failures, burst)
	}
	if len(instances) <= 1 || len(instances) > maxScale {
		t.Errorf("served by %d distinct instances, want 2..%d", len(instances), maxScale)
	}
	if len(pids) != len(instances) {
		t.Errorf("%d distinct pids for %d distinct instance ids", len(pids), len(instances))
	}
	if p := peak.Load(); p > maxScale {
		t.Errorf("status showed %d instances (ready+starting), more than maxScale %d", p, maxScale)
	}
	if v := status(t, srv, name); len(v.Status.Instances) > maxScale {
		t.Errorf("%d instances after the burst", len(v.Status.Instances))
	}
	if procs := functionProcs(srv.Pid(), name); len(procs) > maxScale+1 { // + the zygote
		t.Errorf("%d processes run %s, more than maxScale+zygote: %s", len(procs), name, procDesc(procs))
	}
}

// probe is the answer of the Node probe handler.
type probe struct {
	Pid        int `json:"pid"`
	Seen       int `json:"seen"`
	MaxOverlap int `json:"maxOverlap"`
}

// probeBurst sends n concurrent calls of event to a Node function running
// the probe handler; unless all succeed it fails the test. It returns the
// answers and the instances that served them.
func probeBurst(t *testing.T, srv *harness.Server, name string, n int, event string) ([]probe, map[string]bool) {
	t.Helper()
	c := ctx(t)
	var mu sync.Mutex
	instances := map[string]bool{}
	var results []probe
	var errs []string
	parallel(n, func(int) {
		resp, err := srv.Client.Invoke(c, name, []byte(event))
		var p probe
		if err == nil {
			err = json.Unmarshal(resp.Body, &p)
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, err.Error())
			return
		}
		results = append(results, p)
		instances[resp.Header.Get("Baton-Instance-Id")] = true
	})
	if len(errs) > 0 {
		t.Fatalf("%d of %d concurrent calls to %s failed: %v", len(errs), n, name, errs)
	}
	return results, instances
}

// TestNodeConcurrencyBurst sends a burst of 10 calls to a cold Node
// function with concurrency 2: every call succeeds, runs exactly once
// (one record each), and no instance takes more than 2 at a time. It
// checks that retrying events a dead instance never received does not
// disturb ordinary bursts.
func TestNodeConcurrencyBurst(t *testing.T) {
	requireNode(t)
	t.Parallel()
	srv := startServer(t)
	const name, burst = "pairs", 10
	deploy(t, srv, name, function.Spec{Runtime: function.RuntimeNode, Handler: "index.probe", Concurrency: 2}, nodeDir)
	results, instances := probeBurst(t, srv, name, burst, `{"target": 2, "waitMs": 1000}`)
	for _, p := range results {
		if p.MaxOverlap > 2 {
			t.Errorf("an instance had %d events in flight, more than concurrency 2: %+v", p.MaxOverlap, results)
			break
		}
	}
	t.Logf("%d calls on %d instances", burst, len(instances))
	waitFor(t, settle, fmt.Sprintf("%d successful records of %s", burst, name), func() (bool, string) {
		recs := recordsOf(t, srv, name)
		ids := map[string]bool{}
		for _, r := range recs {
			if r.Status == "success" {
				ids[r.ID] = true
			}
		}
		return len(recs) == burst && len(ids) == burst, fmt.Sprintf("%d records, %d distinct successful", len(recs), len(ids))
	})
}

// TestNodeConcurrency checks that one Node instance with concurrency 4
// serves 4 events at once.
func TestNodeConcurrency(t *testing.T) {
	requireNode(t)
	t.Parallel()
	srv := startServer(t)
	const name = "probe"
	deploy(t, srv, name, function.Spec{Runtime: function.RuntimeNode, Handler: "index.probe", Concurrency: 4, MaxScale: 5}, nodeDir)

	results, instances := probeBurst(t, srv, name, 4, `{"target": 4, "waitMs": 5000}`)
	if len(instances) != 1 {
		t.Errorf("4 concurrent calls ran on %d instances, want 1 (concurrency 4)", len(instances))
	}
	for _, p := range results {
		if p.MaxOverlap != 4 || p.Seen != 4 || p.Pid != results[0].Pid {
			t.Errorf("probe results %+v: want all on one process with overlap 4", results)
			break
		}
	}
	if v := status(t, srv, name); len(v.Status.Instances) != 1 || v.Status.Instances[0].Capacity != 4 {
		t.Errorf("status %s: want one instance with capacity 4", describeStatus(v))
	}

	// Five concurrent calls do not fit one instance: a second one starts,
	// and no instance ever has more than 4 events in flight.
	results, instances = probeBurst(t, srv, name, 5, `{"target": 5, "waitMs": 1500}`)
	if len(instances) != 2 {
		t.Errorf("5 concurrent calls ran on %d instances, want 2", len(instances))
	}
	for _, p := range results {
		if p.Seen > 4 || p.MaxOverlap > 4 {
			t.Errorf("an instance had more than concurrency 4 events in flight: %+v", results)
			break
		}
	}
}

// TestScaleToZero checks that idle instances go away after the idle
// timeout, processes included, and the next call is cold. Zygotes are not
// kept here (node's keep.go has its own tests).
func TestScaleToZero(t *testing.T) {
	requirePython(t)
	requireNode(t)
	t.Parallel()
	srv := startServer(t, "--zygote-keep=0")
	py := pySpec("whoami")
	py.IdleTimeoutSeconds = 1
	node := function.Spec{Runtime: function.RuntimeNode, Handler: "index.echo", IdleTimeoutSeconds: 1}
	deploy(t, srv, "sleepy-py", py, pyDir)
	deploy(t, srv, "sleepy-node", node, nodeDir)

	for _, name := range []string{"sleepy-py", "sleepy-node"} {
		r1 := mustInvoke(t, srv, name, nil, nil)
		r2 := mustInvoke(t, srv, name, nil, nil)
		if !r1.Cold || r2.Cold {
			t.Errorf("%s: cold %v then %v", name, r1.Cold, r2.Cold)
		}
		if len(functionProcs(srv.Pid(), name)) == 0 {
			t.Errorf("%s: no process runs the function while it is warm", name)
		}
	}
	time.Sleep(1500 * time.Millisecond)
	for _, name := range []string{"sleepy-py", "sleepy-node"} {
		waitFor(t, settle, name+" should scale to zero", func() (bool, string) {
			v := status(t, srv, name)
			return len(v.Status.Instances) == 0 && v.Status.Starting == 0, describeStatus(v)
		})
		waitNoFunctionProcs(t, srv, name, settle)
		m := metrics(t, srv)
		if got := m[fmt.Sprintf(`baton_instances{function=%q,state="ready"}`, name)]; got != 0 {
			t.Errorf("baton_instances ready for %s = %v after scale to zero", name, got)
		}
		if r := mustInvoke(t, srv, name, nil, nil); !r.Cold {
			t.Errorf("%s: call after scale to zero was not cold", name)
		}
	}
}
