// Package asyncload drives asynchronous invocations, and synchronous ones
// of the same function as their baseline, for the benchmarks of
// test/benchmarks (baton server on loopback) and
// test/benchmarks/clusterproc (baton server and a cluster on network
// namespace hosts), so that both measure the same way.
package asyncload

import (
	"context"
	"fmt"
	"sync"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
)

// Samples are what Alternate measured, in milliseconds.
type Samples struct {
	AcceptMs []float64 // submission to 202 Accepted
	SyncMs   []float64 // submission to the synchronous result
	IDs      []string  // the accepted invocations
	// AsyncTime and SyncTime are how long each kind of round lasted in
	// all, to turn counts into rates.
	AsyncTime, SyncTime time.Duration
}

// AcceptedPerSecond and SyncPerSecond are the rates of the rounds.
func (s Samples) AcceptedPerSecond() float64 {
	return float64(len(s.AcceptMs)) / s.AsyncTime.Seconds()
}

func (s Samples) SyncPerSecond() float64 { return float64(len(s.SyncMs)) / s.SyncTime.Seconds() }

// Alternate runs rounds of round each, async first and then alternating
// with sync, every round with clients closed-loop clients invoking fn
// through c. Alternating rounds let a busy machine's noise fall on both
// kinds alike.
func Alternate(ctx context.Context, c *client.Client, fn string, clients, rounds int, round time.Duration) (Samples, error) {
	var s Samples
	var mu sync.Mutex
	var firstErr error
	for r := range rounds {
		async := r%2 == 0
		began := time.Now()
		end := began.Add(round)
		var wg sync.WaitGroup
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(end) && ctx.Err() == nil {
					start := time.Now()
					var id string
					var err error
					if async {
						var acc apiv1.AsyncAccepted
						acc, err = c.InvokeAsync(ctx, fn, []byte(`{"n":1}`), "")
						id = acc.ID
					} else {
						_, err = c.Invoke(ctx, fn, []byte(`{"n":1}`))
					}
					el := ms(time.Since(start))
					mu.Lock()
					if err != nil && firstErr == nil {
						firstErr = fmt.Errorf("%s invoke of %s: %w", kind(async), fn, err)
					}
					if err == nil && async {
						s.AcceptMs, s.IDs = append(s.AcceptMs, el), append(s.IDs, id)
					} else if err == nil {
						s.SyncMs = append(s.SyncMs, el)
					}
					mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
		}
		wg.Wait()
		if async {
			s.AsyncTime += time.Since(began)
		} else {
			s.SyncTime += time.Since(began)
		}
		if firstErr != nil {
			return s, firstErr
		}
	}
	return s, nil
}

func kind(async bool) string {
	if async {
		return "async"
	}
	return "sync"
}

// Submit accepts n events for fn from clients concurrent submitters and
// returns their ids.
func Submit(ctx context.Context, c *client.Client, fn string, n, clients int) ([]string, error) {
	ids := make([]string, n)
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	per := (n + clients - 1) / clients
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w * per; i < min(n, (w+1)*per); i++ {
				acc, err := c.InvokeAsync(ctx, fn, fmt.Appendf(nil, `{"i":%d}`, i), "")
				if err != nil {
					errs <- fmt.Errorf("submit event %d to %s: %w", i, fn, err)
					return
				}
				ids[i] = acc.ID
			}
		}()
	}
	wg.Wait()
	close(errs)
	return ids, <-errs
}

// AwaitFinal polls an invocation until its state is final or ctx ends.
func AwaitFinal(ctx context.Context, c *client.Client, id string) (apiv1.AsyncInvocation, error) {
	for {
		inv, err := c.AsyncInvocation(ctx, id)
		if err == nil {
			switch inv.State {
			case "succeeded", "failed", "dead-lettered", "expired":
				return inv, nil
			}
		}
		select {
		case <-ctx.Done():
			return inv, fmt.Errorf("invocation %s did not finish (state %q, last error %v): %w", id, inv.State, err, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Finished waits for every invocation to end, each succeeded, and returns
// the milliseconds from acceptance to the start of its first attempt (as
// the state records them: the server's clock only) and the latest time
// one finished.
func Finished(ctx context.Context, c *client.Client, ids []string) (startMs []float64, last time.Time, err error) {
	for _, id := range ids {
		inv, err := AwaitFinal(ctx, c, id)
		if err != nil {
			return nil, last, err
		}
		if inv.State != "succeeded" {
			return nil, last, fmt.Errorf("invocation %s ended %s: %+v", id, inv.State, inv)
		}
		if len(inv.Attempts) > 0 {
			startMs = append(startMs, ms(inv.Attempts[0].Start.Sub(inv.Created)))
		}
		if inv.Updated.After(last) {
			last = inv.Updated
		}
	}
	return startMs, last, nil
}

// OneAtATime submits n events one after the other, each after the
// previous one finished: acceptance-to-start on an idle function.
func OneAtATime(ctx context.Context, c *client.Client, fn string, n int) ([]float64, error) {
	var out []float64
	for i := range n {
		acc, err := c.InvokeAsync(ctx, fn, fmt.Appendf(nil, `{"low":%d}`, i), "")
		if err != nil {
			return nil, err
		}
		startMs, _, err := Finished(ctx, c, []string{acc.ID})
		if err != nil {
			return nil, err
		}
		out = append(out, startMs...)
	}
	return out, nil
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }
