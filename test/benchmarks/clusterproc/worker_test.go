package clusterproc

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/baton-faas/baton/client"
)

// BenchmarkWorkerFailover: one controller and two workers (fake sandbox,
// 40 ms starts), warm functions spread over both workers under a steady
// open loop; the worker with more instances is killed with -9. Reported
// per round: when requests stopped failing, when the membership dropped
// the worker, when each function it ran answered again, and the failed
// requests by error. Each round deploys fresh functions so that both
// workers hold instances again.
func BenchmarkWorkerFailover(b *testing.B) {
	rounds := envInt(b, "BATON_WORKER_KILLS", 3)
	nfn := envInt(b, "BATON_FAILOVER_FUNCTIONS", 8)
	rate := float64(envInt(b, "BATON_FAILOVER_RATE", 200))

	r := newRig(b)
	workers := map[string]*node{}
	for _, id := range []string{"w1", "w2"} {
		workers[id] = r.worker(id, "--sandbox", "fake", "--fake-start-latency", "40ms")
	}
	ctrl := r.controller("c1")
	cl := r.client(ctrl)
	waitHealthy(b, cl, "the controller to serve")
	waitWorkers(b, cl, 2)

	b.ResetTimer()
	for round := range rounds {
		fns := make([]string, nfn)
		for i := range fns {
			fns[i] = fmt.Sprintf("wf%d-%02d", round, i)
		}
		deploy(b, cl, fns...)
		// Warm them one after another: least-loaded placement alternates
		// workers.
		for _, f := range fns {
			invokeOK(b, cl, f)
		}
		on := map[string][]string{}
		for _, f := range fns {
			st, err := status(cl, f)
			if err != nil {
				b.Fatal(err)
			}
			for _, in := range st.Instances {
				on[in.Worker] = append(on[in.Worker], f)
			}
		}
		victim := "w1"
		if len(on["w2"]) > len(on["w1"]) {
			victim = "w2"
		}
		// The membership's view is polled alongside the load.
		dropped := make(chan time.Duration, 1)
		rc := underLoad(b, []string{ctrl.url()}, fns, rate, on[victim], func() {
			at := time.Now()
			workers[victim].p.kill()
			go func() {
				for time.Since(at) < time.Minute {
					if !listed(cl, victim) {
						dropped <- time.Since(at)
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
				dropped <- -1
			}()
		})
		gone := <-dropped
		b.Logf("round %d: kill -9 %s (instances of %d of %d functions; w1 %d, w2 %d): %s; membership dropped it after %s",
			round+1, victim, len(on[victim]), nfn, len(on["w1"]), len(on["w2"]), describe(rc, on[victim]), ms(gone))
		workers[victim].start()
		waitWorkers(b, cl, 2)
		for _, f := range fns {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if err := cl.Delete(ctx, f); err != nil {
				b.Fatalf("delete %s: %v", f, err)
			}
			cancel()
		}
	}
	b.StopTimer()
}

// listed reports whether the membership (GET /v1/nodes) lists id.
func listed(c *client.Client, id string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nodes, err := c.Nodes(ctx)
	if err != nil {
		return true
	}
	for _, n := range nodes {
		if n.ID == id {
			return true
		}
	}
	return false
}

// waitWorkers waits until the membership lists n workers.
func waitWorkers(b *testing.B, c *client.Client, n int) {
	b.Helper()
	waitFor(b, fmt.Sprintf("%d workers in the membership", n), func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		nodes, err := c.Nodes(ctx)
		if err != nil {
			return false, err.Error()
		}
		have := 0
		for _, nd := range nodes {
			for _, role := range nd.Roles {
				if role == "worker" {
					have++
				}
			}
		}
		return have == n, fmt.Sprintf("%d workers", have)
	})
}
