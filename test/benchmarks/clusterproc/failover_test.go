package clusterproc

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

// BenchmarkControllerFailover: two controllers and one worker (fake
// sandbox, 40 ms starts), warm functions under a steady open loop sent to
// both controllers; one controller is killed with -9 (then, in a second
// phase, stopped with SIGTERM), alternating which. Reported per round: how
// long each of the dead controller's functions took to answer again (end
// of the first successful request sent after the kill), and the requests
// that failed meanwhile, by error.
func BenchmarkControllerFailover(b *testing.B) {
	kills := envInt(b, "BATON_FAILOVER_KILLS", 10)
	terms := envInt(b, "BATON_FAILOVER_TERMS", 4)
	nfn := envInt(b, "BATON_FAILOVER_FUNCTIONS", 8)
	rate := float64(envInt(b, "BATON_FAILOVER_RATE", 200))

	r := newRig(b)
	r.worker("w1", "--sandbox", "fake", "--fake-start-latency", "40ms")
	ctrls := []*node{r.controller("c1"), r.controller("c2")}
	for _, c := range ctrls {
		waitHealthy(b, r.client(c), c.id+" to serve")
	}
	both := r.client(ctrls[0], ctrls[1])
	fns := make([]string, nfn)
	for i := range fns {
		fns[i] = fmt.Sprintf("fo-%02d", i)
	}
	deploy(b, both, fns...)
	steady := waitSteady(b, r, ctrls, fns, nil)
	b.Logf("ownership: %v", steady)

	b.ResetTimer()
	type round struct {
		how, victim string
		owned       int
		rc          recovery
	}
	var rounds []round
	for i := range kills + terms {
		how := "kill -9"
		if i >= kills {
			how = "SIGTERM"
		}
		victim := ctrls[i%2]
		var theirs []string
		for _, f := range fns {
			if steady[f] == victim.id {
				theirs = append(theirs, f)
			}
		}
		urls := []string{ctrls[0].url(), ctrls[1].url()}
		rc := underLoad(b, urls, fns, rate, theirs, func() {
			if how == "kill -9" {
				victim.p.kill()
			} else if err := victim.p.term(time.Minute); err != nil {
				b.Log(err)
			}
		})
		rounds = append(rounds, round{how: how, victim: victim.id, owned: len(theirs), rc: rc})
		b.Logf("round %d: %s %s (owned %d of %d): %s", i+1, how, victim.id, len(theirs), len(fns), describe(rc, theirs))
		victim.start()
		steady = waitSteady(b, r, ctrls, fns, steady)
	}
	b.StopTimer()

	for _, how := range []string{"kill -9", "SIGTERM"} {
		var gaps, worst []time.Duration
		var failed []int
		missing := 0
		for _, rd := range rounds {
			if rd.how != how {
				continue
			}
			var w time.Duration
			for _, g := range rd.rc.gap {
				gaps = append(gaps, g)
				w = max(w, g)
			}
			missing += rd.owned - len(rd.rc.gap)
			worst = append(worst, w)
			failed = append(failed, rd.rc.failed)
		}
		if len(worst) == 0 {
			continue
		}
		sort.Ints(failed)
		b.Logf("%s, %d rounds: gap per function p50 %s, max %s; slowest function per round p50 %s, max %s; failed requests per round %v; functions never answering %d",
			how, len(worst), ms(pct(gaps, 0.5)), ms(pct(gaps, 1)), ms(pct(worst, 0.5)), ms(pct(worst, 1)), failed, missing)
		b.ReportMetric(float64(pct(worst, 0.5))/1e6, strings.ReplaceAll(how, " ", "")+"-gap-p50-ms")
		b.ReportMetric(float64(pct(worst, 1))/1e6, strings.ReplaceAll(how, " ", "")+"-gap-max-ms")
	}
}

// underLoad runs the open loop, does event after 2 s of steady load, and
// keeps the load on until every function in watch answered after it (or
// 30 s passed) plus 2 s; it returns what the event did.
func underLoad(b *testing.B, urls, fns []string, rate float64, watch []string, event func()) recovery {
	b.Helper()
	l := newOpenLoop(urls, fns, rate)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.run(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(2 * time.Second)
	at := time.Now()
	event()
	deadline := at.Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if rc := recoveryOf(l.taken(), at, watch); len(rc.gap) == len(watch) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	cancel()
	<-done
	return recoveryOf(l.taken(), at, watch)
}

func describe(rc recovery, watch []string) string {
	var gaps []string
	for _, f := range watch {
		if g, ok := rc.gap[f]; ok {
			gaps = append(gaps, f+"="+ms(g))
		} else {
			gaps = append(gaps, f+"=never")
		}
	}
	var fails []string
	for what, n := range rc.failures {
		fails = append(fails, fmt.Sprintf("%d× %s", n, what))
	}
	sort.Strings(fails)
	return fmt.Sprintf("gaps [%s]; %d failed [%s], last failure ended %s after; %d failed before; %d sent to the other controller after a refused connection; successes after: slowest %s, %d over 1 s",
		strings.Join(gaps, " "), rc.failed, strings.Join(fails, ", "), ms(rc.lastFailure), rc.before, rc.failedOver, ms(rc.slowest), rc.slow)
}

// waitSteady waits until both controllers serve, every function answers
// through each controller, both report the same owner for each function,
// and (when want is given) the ownership is want again (the restarted
// controller took its share back). It returns the ownership.
func waitSteady(b *testing.B, r *rig, ctrls []*node, fns []string, want map[string]string) map[string]string {
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
			if want != nil && seen[0][f] != want[f] {
				return false, fmt.Sprintf("%s owned by %s, want %s", f, seen[0][f], want[f])
			}
		}
		own = seen[0]
		return true, ""
	})
	for _, c := range ctrls {
		cl := r.client(c)
		for _, f := range fns {
			invokeOK(b, cl, f)
		}
	}
	return own
}
