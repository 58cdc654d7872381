package benchmarks

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/function"
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
//   - recovery: a backlog accepted while nothing runs it (the server is
//     killed with -9 right after), drained after a restart: time from the
//     restart to the last event finished.
func BenchmarkAsync(b *testing.B) {
	logLoad(b)
	suppressNsOp(b)
	dataDir := b.TempDir()
	args := []string{"--sandbox", "fake", "--fake-start-latency", "40ms", "--max-records", "5000"}
	s := harness.Start(b, harness.Options{DataDir: dataDir, Args: args})
	spec := function.Spec{Runtime: function.RuntimePython, Handler: "app.handler", MaxScale: 16, IdleTimeoutSeconds: 3600}
	deploy(b, s, "async-echo", spec, zipDir(b, filepath.Join("testdata", "python")))
	ctx := context.Background()
	if _, err := s.Client.Invoke(ctx, "async-echo", []byte(`{}`)); err != nil {
		b.Fatal(err)
	}

	const clients, round = 8, 3 * time.Second
	var acceptMs, syncMs []float64
	var ids []string
	var mu sync.Mutex
	for r := range 4 {
		async := r%2 == 0
		var wg sync.WaitGroup
		end := time.Now().Add(round)
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(end) {
					began := time.Now()
					if async {
						acc, err := s.Client.InvokeAsync(ctx, "async-echo", []byte(`{"n":1}`), "")
						el := msOf(time.Since(began))
						if err != nil {
							b.Error(err)
							return
						}
						mu.Lock()
						acceptMs, ids = append(acceptMs, el), append(ids, acc.ID)
						mu.Unlock()
					} else {
						_, err := s.Client.Invoke(ctx, "async-echo", []byte(`{"n":1}`))
						el := msOf(time.Since(began))
						if err != nil {
							b.Error(err)
							return
						}
						mu.Lock()
						syncMs = append(syncMs, el)
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
	}
	accept, syncS := summarize(acceptMs), summarize(syncMs)
	accept.report(b, "accept-")
	syncS.report(b, "sync-")
	b.ReportMetric(float64(accept.N)/(2*round.Seconds()), "accepted/s")
	b.ReportMetric(float64(syncS.N)/(2*round.Seconds()), "sync/s")

	startLoaded := startDelays(b, s.Client, ids)
	startLoaded.report(b, "start-loaded-")
	var low []string
	for range 100 {
		acc, err := s.Client.InvokeAsync(ctx, "async-echo", []byte(`{"n":2}`), "")
		if err != nil {
			b.Fatal(err)
		}
		low = append(low, acc.ID)
		startDelays(b, s.Client, []string{acc.ID})
	}
	startLow := startDelays(b, s.Client, low)
	startLow.report(b, "start-idle-")

	// Recovery: submit a backlog, kill the server at once, restart.
	n := asyncBacklog()
	var backlog []string
	var wg sync.WaitGroup
	per := (n + clients - 1) / clients
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c * per; i < min(n, (c+1)*per); i++ {
				acc, err := s.Client.InvokeAsync(ctx, "async-echo", []byte(fmt.Sprintf(`{"i":%d}`, i)), "")
				if err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				backlog = append(backlog, acc.ID)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	s.Kill()
	restarted := time.Now()
	s = harness.Start(b, harness.Options{DataDir: dataDir, Args: args})
	lastDone := time.Time{}
	for _, id := range backlog {
		inv := awaitFinal(b, s.Client, id)
		if inv.State != "succeeded" {
			b.Fatalf("backlog invocation %s: %+v", id, inv)
		}
		if inv.Updated.After(lastDone) {
			lastDone = inv.Updated
		}
	}
	drain := lastDone.Sub(restarted)
	b.ReportMetric(drain.Seconds(), "drain-s")
	b.ReportMetric(float64(len(backlog)), "backlog")
	b.Logf("%s", table([]string{"what", "n", "p50", "p90", "p99", "max"}, [][]string{
		append([]string{"202 (ms)"}, accept.cells()...),
		append([]string{"sync call (ms)"}, syncS.cells()...),
		append([]string{"accept→start, loaded (ms)"}, startLoaded.cells()...),
		append([]string{"accept→start, idle (ms)"}, startLow.cells()...),
	}))
	b.Logf("accepted %.0f/s, sync %.0f/s (same clients, alternating %s rounds); backlog of %d drained %.1f s after the restart",
		float64(accept.N)/(2*round.Seconds()), float64(syncS.N)/(2*round.Seconds()), round, len(backlog), drain.Seconds())
}

// startDelays waits for the invocations to finish and summarizes the time
// from acceptance to their first attempt's start.
func startDelays(tb testing.TB, c *client.Client, ids []string) summary {
	var ms []float64
	for _, id := range ids {
		inv := awaitFinal(tb, c, id)
		if len(inv.Attempts) > 0 {
			ms = append(ms, msOf(inv.Attempts[0].Start.Sub(inv.Created)))
		}
	}
	return summarize(ms)
}

func awaitFinal(tb testing.TB, c *client.Client, id string) apiv1.AsyncInvocation {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		inv, err := c.AsyncInvocation(context.Background(), id)
		if err == nil {
			switch inv.State {
			case "succeeded", "failed", "dead-lettered", "expired":
				return inv
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("invocation %s did not finish: %+v, %v", id, inv, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
