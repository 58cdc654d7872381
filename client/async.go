package client

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"

	apiv1 "github.com/baton-faas/baton/api/v1"
)

// InvokeAsync submits an event for asynchronous invocation; it returns
// once the server stored the event durably. A non-empty key makes a
// repeat within the server's dedup window return the first invocation's
// id (Duplicate set) without storing anything.
func (c *Client) InvokeAsync(ctx context.Context, name string, payload []byte, key string) (apiv1.AsyncAccepted, error) {
	req, err := c.request(ctx, http.MethodPost, "/v1/functions/"+url.PathEscape(name)+"/invoke", bytes.NewReader(payload))
	if err != nil {
		return apiv1.AsyncAccepted{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(apiv1.HeaderInvocationType, apiv1.InvocationTypeEvent)
	if key != "" {
		req.Header.Set(apiv1.HeaderIdempotencyKey, key)
	}
	var out apiv1.AsyncAccepted
	return out, c.send(req, &out)
}

// AsyncInvocation returns the state of an asynchronous invocation.
func (c *Client) AsyncInvocation(ctx context.Context, id string) (apiv1.AsyncInvocation, error) {
	var v apiv1.AsyncInvocation
	return v, c.do(ctx, http.MethodGet, "/v1/invocations/"+url.PathEscape(id), nil, &v)
}

// DeadLetters lists a dead-letter queue, oldest first (limit 0: the
// server's default).
func (c *Client) DeadLetters(ctx context.Context, name string, limit int) ([]apiv1.DeadLetter, error) {
	path := "/v1/dlq/" + url.PathEscape(name)
	if limit > 0 {
		path += "?limit=" + strconv.Itoa(limit)
	}
	var v apiv1.DeadLetterList
	return v.Entries, c.do(ctx, http.MethodGet, path, nil, &v)
}

// DeadLetter returns one entry of a dead-letter queue.
func (c *Client) DeadLetter(ctx context.Context, name string, seq uint64) (apiv1.DeadLetter, error) {
	var v apiv1.DeadLetter
	return v, c.do(ctx, http.MethodGet, "/v1/dlq/"+url.PathEscape(name)+"/"+strconv.FormatUint(seq, 10), nil, &v)
}

// Redrive sends a dead-letter queue's events back to their functions and
// returns the new invocations' ids.
func (c *Client) Redrive(ctx context.Context, name string) ([]string, error) {
	var v apiv1.Redriven
	return v.IDs, c.do(ctx, http.MethodPost, "/v1/dlq/"+url.PathEscape(name)+"/redrive", nil, &v)
}

// AddTrigger creates a trigger.
func (c *Client) AddTrigger(ctx context.Context, req apiv1.TriggerRequest) (apiv1.Trigger, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return apiv1.Trigger{}, err
	}
	var v apiv1.Trigger
	return v, c.do(ctx, http.MethodPost, "/v1/triggers", bytes.NewReader(body), &v)
}

// Triggers lists the triggers (of one function, if named).
func (c *Client) Triggers(ctx context.Context, function string) ([]apiv1.Trigger, error) {
	path := "/v1/triggers"
	if function != "" {
		path += "?function=" + url.QueryEscape(function)
	}
	var v apiv1.TriggerList
	return v.Triggers, c.do(ctx, http.MethodGet, path, nil, &v)
}

// RemoveTrigger deletes a trigger.
func (c *Client) RemoveTrigger(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/triggers/"+url.PathEscape(id), nil, nil)
}
