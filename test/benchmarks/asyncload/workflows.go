package asyncload

import (
	"context"
	"fmt"
	"sync"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
)

// StartExecutions starts n executions of workflow wf asynchronously (each
// answered 202 with its id) from clients concurrent submitters, input(i)
// being the i-th's input. It returns their ids and each 202's latency in
// milliseconds.
func StartExecutions(ctx context.Context, c *client.Client, wf string, n, clients int, input func(i int) []byte) (ids []string, acceptMs []float64, err error) {
	ids, acceptMs = make([]string, n), make([]float64, n)
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	per := (n + clients - 1) / clients
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w * per; i < min(n, (w+1)*per); i++ {
				start := time.Now()
				x, err := c.StartExecution(ctx, wf, input(i), client.StartOptions{})
				if err != nil {
					errs <- fmt.Errorf("start execution %d of %s: %w", i, wf, err)
					return
				}
				ids[i], acceptMs[i] = x.ID, ms(time.Since(start))
			}
		}()
	}
	wg.Wait()
	close(errs)
	return ids, acceptMs, <-errs
}

// AwaitExecution polls an execution until it ended or ctx ends.
func AwaitExecution(ctx context.Context, c *client.Client, id string) (apiv1.Execution, error) {
	for {
		x, err := c.DescribeExecution(ctx, id)
		if err == nil && x.Status != apiv1.ExecutionRunning {
			return x, nil
		}
		select {
		case <-ctx.Done():
			return x, fmt.Errorf("execution %s did not end (status %q, last error %v): %w", id, x.Status, err, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ExecutionsFinished waits for every execution to end and returns them
// (history included), in the order of ids.
func ExecutionsFinished(ctx context.Context, c *client.Client, ids []string) ([]apiv1.Execution, error) {
	out := make([]apiv1.Execution, 0, len(ids))
	for _, id := range ids {
		x, err := AwaitExecution(ctx, c, id)
		if err != nil {
			return out, err
		}
		out = append(out, x)
	}
	return out, nil
}
