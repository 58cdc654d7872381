package clusterproc

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/bench/stats"
	"github.com/baton-faas/baton/test/benchmarks/asyncload"
)

// BenchmarkAsyncNetns measures asynchronous invocations where every
// accepted event is stored on a three-node NATS cluster (R3: the 202 waits
// for a quorum of replicas), against `baton server` (one embedded node)
// in the same run. Each process is on a network-namespace host of its
// own: `baton server`; three NATS nodes, one controller and one worker
// for the cluster; the client is the benchmark, on the bridge. Fake
// sandboxes, so that Baton's own path is what is measured. Per target:
// 8 closed-loop clients in alternating 3 s async and sync rounds (the 202's
// latency and accepted/s against the sync call's), then acceptance to the
// first attempt's start for those events (loaded) and for 100 events
// submitted one at a time (idle).
func BenchmarkAsyncNetns(b *testing.B) {
	sb := []string{"--sandbox", "fake", "--fake-start-latency", "40ms"}
	r := newNetRig(b)
	srv := r.server(sb...)
	srvClient := r.waitServes(srv)
	r.worker("w1", sb...)
	ctrl := r.controller("c1")
	ctrlClient := r.waitServes(ctrl)
	waitWorkers(b, ctrlClient, 1)
	targets := []struct {
		name string
		c    *client.Client
	}{{"baton server (1 NATS node)", srvClient}, {"cluster (3 NATS nodes, R3)", ctrlClient}}
	for _, t := range targets {
		deploy(b, t.c, "async-echo")
		invokeOK(b, t.c, "async-echo")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	const clients, rounds, round = 8, 4, 3 * time.Second
	rows := [][]string{}
	b.ResetTimer()
	for _, t := range targets {
		load, err := asyncload.Alternate(ctx, t.c, "async-echo", clients, rounds, round)
		if err != nil {
			b.Fatalf("%s: %v", t.name, err)
		}
		loaded, _, err := asyncload.Finished(ctx, t.c, load.IDs)
		if err != nil {
			b.Fatalf("%s: %v", t.name, err)
		}
		idle, err := asyncload.OneAtATime(ctx, t.c, "async-echo", 100)
		if err != nil {
			b.Fatalf("%s: %v", t.name, err)
		}
		rows = append(rows,
			distRow(t.name, "202", stats.Describe(load.AcceptMs), load.AcceptedPerSecond()),
			distRow(t.name, "sync call", stats.Describe(load.SyncMs), load.SyncPerSecond()),
			distRow(t.name, "accept→start, loaded", stats.Describe(loaded), 0),
			distRow(t.name, "accept→start, idle", stats.Describe(idle), 0))
		short := "server-"
		if strings.HasPrefix(t.name, "cluster") {
			short = "cluster-"
		}
		b.ReportMetric(load.AcceptedPerSecond(), short+"accepted/s")
		b.ReportMetric(load.SyncPerSecond(), short+"sync/s")
		b.ReportMetric(stats.Describe(load.AcceptMs).P50, short+"accept-p50-ms")
		b.ReportMetric(stats.Describe(load.AcceptMs).P99, short+"accept-p99-ms")
	}
	b.StopTimer()
	var out strings.Builder
	fmt.Fprintf(&out, "%-28s %-22s %7s %8s %8s %8s %8s %8s\n", "target", "what", "n", "per s", "p50 ms", "p90 ms", "p99 ms", "max ms")
	for _, row := range rows {
		fmt.Fprintf(&out, "%-28s %-22s %7s %8s %8s %8s %8s %8s\n", row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7])
	}
	b.Logf("%d clients, alternating %s async and sync rounds (%d in all):\n%s", clients, round, rounds, out.String())
}

// distRow is a table row of one distribution (rate 0: not a rate).
func distRow(target, what string, d stats.Dist, rate float64) []string {
	perS := "-"
	if rate > 0 {
		perS = fmt.Sprintf("%.0f", rate)
	}
	return []string{target, what, fmt.Sprint(d.Count), perS, fmt.Sprintf("%.2f", d.P50), fmt.Sprintf("%.2f", d.P90),
		fmt.Sprintf("%.2f", d.P99), fmt.Sprintf("%.2f", d.Max)}
}
