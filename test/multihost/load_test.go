package multihost

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
)

// outcome is one request of the load.
type outcome struct {
	fn         string
	start, end time.Time
	ok         bool   // its own event came back
	status     int    // the HTTP status, 0 when none came
	code       string // the error body's code
	instance   string
	cold       bool
	err        error
}

// clear reports whether a failed request failed clearly: an HTTP error
// status with a JSON error code, rather than a hang, a dropped connection
// or somebody else's answer.
func (o outcome) clear() bool {
	return !o.ok && o.status >= 400 && o.code != ""
}

func (o outcome) String() string {
	if o.ok {
		return fmt.Sprintf("%s ok at %s", o.fn, o.start.Format("15:04:05.000"))
	}
	return fmt.Sprintf("%s %s..%s: HTTP %d code %q: %v", o.fn, o.start.Format("15:04:05.000"), o.end.Format("15:04:05.000"), o.status, o.code, o.err)
}

// load is a few clients invoking functions in a loop, each request with
// its own event so that a wrong answer is seen.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	outcomes []outcome
}

// perRequest bounds one request: far beyond any retry the cluster makes,
// so that a request that reaches it hung.
const perRequest = 60 * time.Second

// startLoad starts perFn clients for every function in fns, invoking it
// in a loop, each through one of cls in turn.
func startLoad(cls []*client.Client, fns []string, perFn int) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	for _, fn := range fns {
		for g := range perFn {
			cl := cls[g%len(cls)]
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				for i := 0; ctx.Err() == nil; i++ {
					l.add(invoke(cl, fn, fmt.Sprintf(`{"fn":%q,"client":%d,"n":%d}`, fn, g, i)))
					// A pause leaves the 2 cores to the cluster.
					select {
					case <-ctx.Done():
					case <-time.After(5 * time.Millisecond):
					}
				}
			}()
		}
	}
	return l
}

// invoke makes one request; stopping the load does not cut it short.
func invoke(cl *client.Client, fn, event string) outcome {
	ctx, cancel := context.WithTimeout(context.Background(), perRequest)
	defer cancel()
	o := outcome{fn: fn, start: time.Now()}
	resp, err := cl.Invoke(ctx, fn, []byte(event))
	o.end = time.Now()
	o.status, o.cold, o.err = resp.Status, resp.Cold, err
	o.instance = resp.Header.Get(apiv1.HeaderInstanceID)
	var apiErr *client.Error
	switch {
	case errors.As(err, &apiErr):
		o.code = apiErr.Body.Code
	case err != nil:
	case resp.Status != http.StatusOK || string(resp.Body) != event:
		o.err = fmt.Errorf("HTTP %d with %q, want its event %s back", resp.Status, resp.Body, event)
	default:
		o.ok = true
	}
	return o
}

func (l *load) add(o outcome) {
	l.mu.Lock()
	l.outcomes = append(l.outcomes, o)
	l.mu.Unlock()
}

func (l *load) snapshot() []outcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.outcomes)
}

// stop ends the load once the requests in flight have their answers.
func (l *load) stop() []outcome {
	l.cancel()
	l.wg.Wait()
	return l.snapshot()
}

// waitSucceeding waits until every function has had n requests in a row
// succeed that started after since.
func (l *load) waitSucceeding(t *testing.T, fns []string, since time.Time, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d requests in a row to succeed for every function", n), func() error {
		streak := map[string]int{}
		for _, o := range l.snapshot() {
			if o.start.Before(since) {
				continue
			}
			if o.ok {
				streak[o.fn]++
			} else {
				streak[o.fn] = 0
			}
		}
		for _, fn := range fns {
			if streak[fn] < n {
				return fmt.Errorf("function %s: %d in a row so far", fn, streak[fn])
			}
		}
		return nil
	})
}

// summary counts outcomes by kind, for the log.
func summary(outs []outcome) string {
	counts := map[string]int{}
	for _, o := range outs {
		switch {
		case o.ok:
			counts["ok"]++
		case o.clear():
			counts[fmt.Sprintf("HTTP %d %s", o.status, o.code)]++
		default:
			counts["unclear"]++
		}
	}
	var parts []string
	for _, k := range sortedKeys(counts) {
		parts = append(parts, fmt.Sprintf("%s: %d", k, counts[k]))
	}
	return fmt.Sprintf("%d requests (%s)", len(outs), strings.Join(parts, ", "))
}

// checkOutcomes fails the test for every request that got neither its
// result nor a clear error, unless excused says it may (a request cut off
// with the controller it was talking to).
func checkOutcomes(t *testing.T, outs []outcome, excused func(outcome) bool) {
	t.Helper()
	t.Logf("load: %s", summary(outs))
	bad := 0
	for _, o := range outs {
		if o.ok || o.clear() || excused != nil && excused(o) {
			continue
		}
		bad++
		if bad <= 10 {
			t.Errorf("a request got neither its result nor a clear error: %s", o)
		}
	}
	if bad > 10 {
		t.Errorf("... and %d more such requests", bad-10)
	}
	if len(outs) == 0 || !slices.ContainsFunc(outs, func(o outcome) bool { return o.ok }) {
		t.Errorf("no request of the load succeeded")
	}
}

// failuresAfter lists the failed requests that started after since.
func failuresAfter(outs []outcome, since time.Time) []outcome {
	var out []outcome
	for _, o := range outs {
		if !o.ok && !o.start.Before(since) {
			out = append(out, o)
		}
	}
	return out
}

// checkOnlyLost fails the test for failed requests other than those the
// lost node was running: at most one per load client (each has one
// request in flight) may fail, with code lost (worker-lost); every other
// request had not reached the lost node and must have run elsewhere.
func checkOnlyLost(t *testing.T, outs []outcome, clients int, lost string) {
	t.Helper()
	var other []outcome
	nLost := 0
	for _, o := range outs {
		switch {
		case o.ok:
		case o.code == lost:
			nLost++
		default:
			other = append(other, o)
		}
	}
	if nLost > clients {
		t.Errorf("%d requests failed with %s, but only %d were in flight", nLost, lost, clients)
	}
	if len(other) > 0 {
		t.Errorf("%d requests failed that the lost node was not running (they should have run elsewhere): %s; first: %v",
			len(other), summary(other), other[:min(len(other), 3)])
	}
}
