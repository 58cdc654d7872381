package fake

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/baton-faas/baton/internal/sandbox"
)

// runClient is a fake instance: an AWS Lambda runtime client whose handler
// returns its event. It ends as a killed process when ctx ends, and as a
// crashed one (exit status 1) when the endpoint goes away or refuses it,
// as real runtime clients do.
func runClient(ctx context.Context, api string, latency time.Duration) sandbox.ExitStatus {
	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return killed
		}
	}
	// A transport of its own: a process has its own connections, and
	// they go with it.
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	base := (&url.URL{Scheme: "http", Host: api, Path: "/2018-06-01/runtime/invocation/"}).String()
	for {
		id, event, err := next(ctx, c, base)
		if err == nil {
			err = respond(ctx, c, base, id, event)
		}
		if ctx.Err() != nil {
			return killed
		}
		if err != nil {
			return sandbox.ExitStatus{Code: 1}
		}
	}
}

func next(ctx context.Context, c *http.Client, base string) (id string, event []byte, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"next", nil)
	if err != nil {
		return "", nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	event, err = io.ReadAll(resp.Body)
	if err != nil {
		return "", nil, fmt.Errorf("read event: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", nil, fmt.Errorf("next invocation: %s: %s", resp.Status, event)
	}
	id = resp.Header.Get("Lambda-Runtime-Aws-Request-Id")
	if id == "" {
		return "", nil, fmt.Errorf("next invocation: no request id")
	}
	return id, event, nil
}

func respond(ctx context.Context, c *http.Client, base, id string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+url.PathEscape(id)+"/response", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	// A refused response (too large, invocation gone) is the platform's
	// to report; the client goes on to the next event.
	return nil
}
