package synthetic

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/function"
)

// pageSize is the stride of TouchMB: one write per 4 KiB page is enough to
// make the kernel back every page.
const pageSize = 4096

// chainHTTP is shared so that chain calls reuse kept-alive connections, as
// the Python and Node functions do.
var chainHTTP = &http.Client{}

// RunGo serves the Go synthetic function over the Lambda Runtime API. The
// baton binary calls it when started as bootstrap; it does not return.
func RunGo() {
	lambda.Start(handle)
}

// handle is the Go implementation of the synthetic behaviour; the Python
// and Node files implement the same steps in the same order.
func handle(ctx context.Context, b Behavior) (Reply, error) {
	start := time.Now()
	cpu0 := processCPU()
	if b.TouchMB > 0 {
		if err := touch(b.TouchMB); err != nil {
			return Reply{}, err
		}
	}
	if b.BusyMs > 0 {
		busy(duration(b.BusyMs))
	}
	if b.SleepMs > 0 {
		if err := sleep(ctx, duration(b.SleepMs)); err != nil {
			return Reply{}, err
		}
	}
	var hops []Hop
	var callMs float64
	if len(b.Chain) > 0 {
		var err error
		if hops, callMs, err = callNext(ctx, b); err != nil {
			return Reply{}, err
		}
	}
	r := Reply{Runtime: function.RuntimeProvided}
	if b.ResponseBytes > 0 {
		r.Body = strings.Repeat("x", b.ResponseBytes)
	}
	r.MaxRSSMB = maxRSSMB()
	r.CPUMs = millis(processCPU() - cpu0)
	r.ExecMs = millis(time.Since(start))
	if hops != nil {
		hops[0] = Hop{Function: lambdacontext.FunctionName, ExecMs: r.ExecMs, CallMs: callMs}
		r.Hops = hops
	}
	return r, nil
}

// busy burns CPU until d has passed on the monotonic clock.
func busy(d time.Duration) {
	start := time.Now()
	for time.Since(start) < d {
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("sleep of %v cut short: %w", d, context.Cause(ctx))
	}
}

// callNext invokes b.Chain[0] with the rest of the chain. It returns the
// hops with a zero first entry for the caller to fill in once its own
// execution time is known, and the time spent waiting on the call.
func callNext(ctx context.Context, b Behavior) ([]Hop, float64, error) {
	next := b.Chain[0]
	if b.Server == "" {
		return nil, 0, fmt.Errorf("chain call to %s: the event has no server URL", next)
	}
	c, err := client.New(b.Server, chainHTTP)
	if err != nil {
		return nil, 0, fmt.Errorf("chain call to %s: %w", next, err)
	}
	ev := b
	ev.Chain = b.Chain[1:]
	payload, err := json.Marshal(ev)
	if err != nil {
		return nil, 0, fmt.Errorf("chain call to %s: %w", next, err)
	}
	start := time.Now()
	resp, err := c.Invoke(ctx, next, payload)
	callMs := millis(time.Since(start))
	if err != nil {
		return nil, 0, fmt.Errorf("chain call to %s failed: %w", next, err)
	}
	var down Reply
	if err := json.Unmarshal(resp.Body, &down); err != nil {
		return nil, 0, fmt.Errorf("chain call to %s: the reply is not a synthetic function's: %w", next, err)
	}
	return chainHops(next, resp.Cold, down), callMs, nil
}

// chainHops lists a zero hop for the caller followed by the downstream
// hops; a downstream function that called nobody has no hops of its own,
// so its entry is made from its reply.
func chainHops(next string, cold bool, down Reply) []Hop {
	hops := make([]Hop, 1, 2+len(down.Hops))
	if len(down.Hops) == 0 {
		hops = append(hops, Hop{ExecMs: down.ExecMs})
	} else {
		hops = append(hops, down.Hops...)
	}
	// Only the caller sees the downstream's name as invoked and its
	// cold-start header.
	hops[1].Function, hops[1].Cold = next, cold
	return hops
}

func duration(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
