package asyncload

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
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

// Executions reads executions' states, without their histories (a
// history is read through a consumer of its own on the history stream,
// far slower than the state).
type Executions struct {
	HTTP  *http.Client
	URL   string // the server's
	Token string
}

// Get returns an execution's state.
func (e Executions) Get(ctx context.Context, id string) (apiv1.Execution, error) {
	var x apiv1.Execution
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.URL+"/v1/executions/"+url.PathEscape(id)+"?history=false", nil)
	if err != nil {
		return x, err
	}
	req.Header.Set("Authorization", "Bearer "+e.Token)
	resp, err := e.HTTP.Do(req)
	if err != nil {
		return x, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return x, err
	}
	if resp.StatusCode != http.StatusOK {
		return x, fmt.Errorf("GET execution %s: HTTP %d: %s", id, resp.StatusCode, bytes.TrimSpace(body))
	}
	return x, json.Unmarshal(body, &x)
}

// Await polls an execution until it ended or ctx ends.
func (e Executions) Await(ctx context.Context, id string) (apiv1.Execution, error) {
	for {
		x, err := e.Get(ctx, id)
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

// Finished waits for every execution to end and returns them, in the
// order of ids.
func (e Executions) Finished(ctx context.Context, ids []string) ([]apiv1.Execution, error) {
	out := make([]apiv1.Execution, 0, len(ids))
	for _, id := range ids {
		x, err := e.Await(ctx, id)
		if err != nil {
			return out, err
		}
		out = append(out, x)
	}
	return out, nil
}
