package benchmarks

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/test/benchmarks/asyncload"
	"github.com/baton-faas/baton/test/harness"
)

// asyncBacklog is the backlog drained after a restart
// (BATON_ASYNC_BACKLOG overrides it).
func asyncBacklog() int {
	if n, err := strconv.Atoi(os.Getenv("BATON_ASYNC_BACKLOG")); err == nil && n > 0 {
		return n
	}
	return 10000
}

// BenchmarkAsync measures asynchronous invocations on baton server with
// fake sandboxes (so that Baton's own path is what is measured):
//   - accept: 8 clients submitting events for 3 s, the 202's latency and
//     accepted events/s, against synchronous invocations of the same
//     function by the same clients in alternating rounds;
//   - start: from acceptance to the start of the first attempt, as the
//     invocation's state records it (server clock only), at low load (one
//     event at a time) and for the events of the accept rounds;
//   - recovery: a backlog accepted while nothing can run it (the server is
//     killed with -9 right after), drained after a restart: time from the
//     restart to the last event finished (the restart itself included).
func BenchmarkAsync(b *testing.B) {
	logLoad(b)
	suppressNsOp(b)
	dataDir := b.TempDir()
	args := []string{"--sandbox", "fake", "--fake-start-latency", "40ms", "--max-records", "5000"}
	s := harness.Start(b, harness.Options{DataDir: dataDir, Args: args})
	spec := function.Spec{Runtime: function.RuntimePython, Handler: "app.handler", MaxScale: 16, IdleTimeoutSeconds: 3600}
	deploy(b, s, "async-echo", spec, zipDir(b, filepath.Join("testdata", "python")))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if _, err := s.Client.Invoke(ctx, "async-echo", []byte(`{}`)); err != nil {
		b.Fatal(err)
	}

	const clients, round = 8, 3 * time.Second
	load, err := asyncload.Alternate(ctx, s.Client, "async-echo", clients, 4, round)
	if err != nil {
		b.Fatal(err)
	}
	accept, syncS := summarize(load.AcceptMs), summarize(load.SyncMs)
	accept.report(b, "accept-")
	syncS.report(b, "sync-")
	b.ReportMetric(load.AcceptedPerSecond(), "accepted/s")
	b.ReportMetric(load.SyncPerSecond(), "sync/s")

	loadedMs, _, err := asyncload.Finished(ctx, s.Client, load.IDs)
	if err != nil {
		b.Fatal(err)
	}
	startLoaded := summarize(loadedMs)
	startLoaded.report(b, "start-loaded-")
	idleMs, err := asyncload.OneAtATime(ctx, s.Client, "async-echo", 100)
	if err != nil {
		b.Fatal(err)
	}
	startIdle := summarize(idleMs)
	startIdle.report(b, "start-idle-")

	// Recovery: a backlog that cannot run while it is submitted (a new
	// function whose instances take an hour to start: at most its async
	// concurrency of events wait in its queue, the rest in the stream),
	// the server killed with -9, then restarted with instances that start.
	s.Kill()
	stalled := append(slices.Clone(args), "--fake-start-latency", "1h")
	s = harness.Start(b, harness.Options{DataDir: dataDir, Args: stalled})
	deploy(b, s, "async-backlog", spec, zipDir(b, filepath.Join("testdata", "python")))
	backlog, err := asyncload.Submit(ctx, s.Client, "async-backlog", asyncBacklog(), clients)
	if err != nil {
		b.Fatal(err)
	}
	s.Kill()
	restarted := time.Now()
	s = harness.Start(b, harness.Options{DataDir: dataDir, Args: args})
	_, lastDone, err := asyncload.Finished(ctx, s.Client, backlog)
	if err != nil {
		b.Fatal(err)
	}
	drain := lastDone.Sub(restarted)
	b.ReportMetric(drain.Seconds(), "drain-s")
	b.ReportMetric(float64(len(backlog)), "backlog")
	b.Logf("%s", table([]string{"what", "n", "p50", "p90", "p99", "max"}, [][]string{
		append([]string{"202 (ms)"}, accept.cells()...),
		append([]string{"sync call (ms)"}, syncS.cells()...),
		append([]string{"accept→start, loaded (ms)"}, startLoaded.cells()...),
		append([]string{"accept→start, idle (ms)"}, startIdle.cells()...),
	}))
	b.Logf("accepted %.0f/s, sync %.0f/s (same %d clients, alternating %s rounds); backlog of %d drained %.1f s after the restart",
		load.AcceptedPerSecond(), load.SyncPerSecond(), clients, round, len(backlog), drain.Seconds())
}
