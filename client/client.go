// Package client talks to Baton's HTTP API; the CLI and the benchmark
// tools use it.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/baton-faas/baton/internal/controlplane/httpapi"
	"github.com/baton-faas/baton/internal/controlplane/records"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/image"
)

// Client is an API client.
type Client struct {
	base string
	http *http.Client
}

// New returns a client for the server at base (http://host:port).
func New(base string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server URL %q must look like http://host:port", base)
	}
	if hc == nil {
		hc = &http.Client{}
	}
	return &Client{base: strings.TrimRight(base, "/"), http: hc}, nil
}

// Error is an API error response.
type Error struct {
	Status int
	Body   httpapi.ErrorBody
}

func (e *Error) Error() string {
	if e.Body.Message != "" {
		return fmt.Sprintf("%s (HTTP %d %s)", e.Body.Message, e.Status, e.Body.Code)
	}
	return fmt.Sprintf("HTTP %d", e.Status)
}

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach baton server at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode >= 400 {
		return decodeError(resp.StatusCode, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode response: %w", err)
		}
	}
	return nil
}

func decodeError(status int, data []byte) error {
	e := &Error{Status: status}
	if json.Unmarshal(data, &e.Body) != nil || e.Body.Message == "" {
		e.Body.Message = strings.TrimSpace(string(data))
	}
	return e
}

// DeployRequest is a function spec with its code (a zip archive).
type DeployRequest struct {
	function.Spec
	Code []byte `json:"code"`
}

// Deploy creates or updates a function.
func (c *Client) Deploy(ctx context.Context, name string, req DeployRequest) (httpapi.FunctionView, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return httpapi.FunctionView{}, err
	}
	var v httpapi.FunctionView
	err = c.do(ctx, http.MethodPut, "/v1/functions/"+url.PathEscape(name), bytes.NewReader(body), &v)
	return v, err
}

// Get returns a function.
func (c *Client) Get(ctx context.Context, name string) (httpapi.FunctionView, error) {
	var v httpapi.FunctionView
	err := c.do(ctx, http.MethodGet, "/v1/functions/"+url.PathEscape(name), nil, &v)
	return v, err
}

// List returns all functions.
func (c *Client) List(ctx context.Context) ([]httpapi.FunctionView, error) {
	var v struct {
		Functions []httpapi.FunctionView `json:"functions"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/functions", nil, &v)
	return v.Functions, err
}

// Delete removes a function.
func (c *Client) Delete(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/functions/"+url.PathEscape(name), nil, nil)
}

// Recycle stops all instances of a function (busy ones once idle), so its
// next request is a cold start.
func (c *Client) Recycle(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/functions/"+url.PathEscape(name)+"/instances", nil, nil)
}

// InvokeResponse is the raw outcome of an invocation.
type InvokeResponse struct {
	Status  int
	Header  http.Header
	Body    []byte
	ID      string
	Cold    bool
	Version int
}

// Invoke calls a function synchronously. A non-2xx answer is returned as
// *Error together with the response.
func (c *Client) Invoke(ctx context.Context, name string, payload []byte) (InvokeResponse, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/functions/"+url.PathEscape(name)+"/invoke", bytes.NewReader(payload))
	if err != nil {
		return InvokeResponse{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return InvokeResponse{}, fmt.Errorf("cannot reach baton server at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return InvokeResponse{}, fmt.Errorf("read response: %w", err)
	}
	out := InvokeResponse{Status: resp.StatusCode, Header: resp.Header, Body: data,
		ID: resp.Header.Get("Baton-Invocation-Id"), Cold: resp.Header.Get("Baton-Cold-Start") == "true"}
	out.Version, _ = strconv.Atoi(resp.Header.Get("Baton-Function-Version"))
	if resp.StatusCode >= 400 {
		return out, decodeError(resp.StatusCode, data)
	}
	return out, nil
}

// Invocations lists recent invocation records, newest first.
func (c *Client) Invocations(ctx context.Context, fn string, limit int) ([]records.Record, error) {
	q := url.Values{}
	if fn != "" {
		q.Set("function", fn)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var v struct {
		Invocations []records.Record `json:"invocations"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/invocations?"+q.Encode(), nil, &v)
	return v.Invocations, err
}

// Invocation returns one record.
func (c *Client) Invocation(ctx context.Context, id string) (records.Record, error) {
	var r records.Record
	err := c.do(ctx, http.MethodGet, "/v1/invocations/"+url.PathEscape(id), nil, &r)
	return r, err
}

// Images lists the server's images.
func (c *Client) Images(ctx context.Context) ([]image.Image, error) {
	var v struct {
		Images []image.Image `json:"images"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/images", nil, &v)
	return v.Images, err
}

// ImportImage uploads an OCI layout tarball or docker-save archive.
func (c *Client) ImportImage(ctx context.Context, name string, archive io.Reader) (image.Image, error) {
	var img image.Image
	err := c.do(ctx, http.MethodPut, "/v1/images/"+name, archive, &img)
	return img, err
}

// RemoveImage deletes an image.
func (c *Client) RemoveImage(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/images/"+name, nil, nil)
}
