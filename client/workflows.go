package client

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"strconv"

	apiv1 "github.com/baton-faas/baton/api/v1"
)

// DeployWorkflow stores definition (Amazon States Language, JSON or
// YAML) as the workflow's next version.
func (c *Client) DeployWorkflow(ctx context.Context, name string, definition []byte) (apiv1.Workflow, error) {
	var v apiv1.Workflow
	return v, c.do(ctx, http.MethodPut, "/v1/workflows/"+url.PathEscape(name), bytes.NewReader(definition), &v)
}

// Workflows lists the deployed workflows.
func (c *Client) Workflows(ctx context.Context) ([]apiv1.Workflow, error) {
	var v apiv1.WorkflowList
	return v.Workflows, c.do(ctx, http.MethodGet, "/v1/workflows", nil, &v)
}

// Workflow returns a workflow's current version.
func (c *Client) Workflow(ctx context.Context, name string) (apiv1.Workflow, error) {
	var v apiv1.Workflow
	return v, c.do(ctx, http.MethodGet, "/v1/workflows/"+url.PathEscape(name), nil, &v)
}

// DeleteWorkflow removes a workflow (its running executions finish on
// the version they started with).
func (c *Client) DeleteWorkflow(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/workflows/"+url.PathEscape(name), nil, nil)
}

// StartOptions tune StartExecution.
type StartOptions struct {
	// Sync waits for the execution to end and returns its output or
	// error.
	Sync bool
	// IdempotencyKey makes a repeated start return the first execution
	// (Existing set).
	IdempotencyKey string
}

// StartExecution starts an execution of a workflow with input (JSON).
func (c *Client) StartExecution(ctx context.Context, name string, input []byte, o StartOptions) (apiv1.Execution, error) {
	path := "/v1/workflows/" + url.PathEscape(name) + "/executions"
	if o.Sync {
		path += "?sync=true"
	}
	req, err := c.request(ctx, http.MethodPost, path, bytes.NewReader(input))
	if err != nil {
		return apiv1.Execution{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if o.IdempotencyKey != "" {
		req.Header.Set(apiv1.HeaderIdempotencyKey, o.IdempotencyKey)
	}
	var v apiv1.Execution
	return v, c.send(req, &v)
}

// Executions lists a workflow's executions, newest first (limit 0: the
// server's default).
func (c *Client) Executions(ctx context.Context, name string, limit int) ([]apiv1.Execution, error) {
	path := "/v1/workflows/" + url.PathEscape(name) + "/executions"
	if limit > 0 {
		path += "?limit=" + strconv.Itoa(limit)
	}
	var v apiv1.ExecutionList
	return v.Executions, c.do(ctx, http.MethodGet, path, nil, &v)
}

// DescribeExecution returns an execution with its history.
func (c *Client) DescribeExecution(ctx context.Context, id string) (apiv1.Execution, error) {
	var v apiv1.Execution
	return v, c.do(ctx, http.MethodGet, "/v1/executions/"+url.PathEscape(id), nil, &v)
}
