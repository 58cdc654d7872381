// Package client talks to Baton's HTTP API; the CLI and the benchmark
// tools use it. Its types are the API's wire types, package api/v1.
package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	apiv1 "github.com/baton-faas/baton/api/v1"
)

// Client is an API client. It may know several servers (the controller
// replicas of a cluster): it sends to the one that answered last and moves
// on to the next when a server cannot be reached at all.
type Client struct {
	bases   []string
	current atomic.Int32 // index into bases
	http    *http.Client
	token   string
}

// Option configures a Client.
type Option func(*Client)

// WithToken sends token as the bearer token the management API requires.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// New returns a client for the server at base (http://host:port), or for
// any of several servers given as a comma-separated list.
func New(base string, hc *http.Client, opts ...Option) (*Client, error) {
	var bases []string
	for _, b := range strings.Split(base, ",") {
		b = strings.TrimSpace(b)
		u, err := url.Parse(b)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("server URL %q must look like http://host:port", b)
		}
		bases = append(bases, strings.TrimRight(b, "/"))
	}
	if hc == nil {
		hc = &http.Client{}
	}
	c := &Client{bases: bases, http: hc}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Error is an API error response.
type Error struct {
	Status int
	Body   apiv1.Error
}

func (e *Error) Error() string {
	if e.Body.Message != "" {
		return fmt.Sprintf("%s (HTTP %d %s)", e.Body.Message, e.Status, e.Body.Code)
	}
	return fmt.Sprintf("HTTP %d", e.Status)
}

func (c *Client) base() string { return c.bases[c.current.Load()] }

func (c *Client) request(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base()+path, body)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, out any) error {
	req, err := c.request(ctx, method, path, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.send(req, out)
}

// roundTrip sends req, and when its server cannot be reached (the
// connection was refused or timed out, so nothing was sent) sends it to
// the other servers in turn, if its body can be read again.
func (c *Client) roundTrip(req *http.Request) (*http.Response, error) {
	first := int(c.current.Load())
	resp, err := c.http.Do(req)
	for i := 1; err != nil && i < len(c.bases) && unreachable(err) && (req.Body == nil || req.GetBody != nil); i++ {
		next := (first + i) % len(c.bases)
		retry := req.Clone(req.Context())
		u, perr := url.Parse(c.bases[next] + req.URL.RequestURI())
		if perr != nil {
			break
		}
		retry.URL, retry.Host = u, ""
		if req.GetBody != nil {
			body, berr := req.GetBody()
			if berr != nil {
				break
			}
			retry.Body = body
		}
		if resp, err = c.http.Do(retry); err == nil {
			c.current.Store(int32(next))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("cannot reach baton server at %s: %w", strings.Join(c.bases, ", "), err)
	}
	return resp, nil
}

// unreachable reports whether err means the request cannot have been
// served: no connection was made, or the server had closed the (reused)
// connection before the request was written (a server that was killed).
func unreachable(err error) bool {
	var op *net.OpError
	return (errors.As(err, &op) && op.Op == "dial") || errors.Is(err, syscall.EPIPE)
}

func (c *Client) send(req *http.Request, out any) error {
	resp, err := c.roundTrip(req)
	if err != nil {
		return err
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

// Health returns the server's health and request limits.
func (c *Client) Health(ctx context.Context) (apiv1.Health, error) {
	var h apiv1.Health
	err := c.do(ctx, http.MethodGet, "/healthz", nil, &h)
	return h, err
}

// DeployRequest is a function spec with its code (a zip archive).
type DeployRequest = apiv1.DeployRequest

// Deploy creates or updates a function.
func (c *Client) Deploy(ctx context.Context, name string, req DeployRequest) (apiv1.Function, error) {
	return c.DeployCode(ctx, name, req.FunctionSpec, bytes.NewReader(req.Code), int64(len(req.Code)))
}

// DeployRequestSize is the size in bytes of the deploy request for spec
// and codeSize bytes of code, to check against the server's limit
// (Health's MaxDeployBytes) before sending.
func DeployRequestSize(spec apiv1.FunctionSpec, codeSize int64) (int64, error) {
	prefix, err := deployPrefix(spec)
	if err != nil {
		return 0, err
	}
	return int64(len(prefix)) + int64(base64.StdEncoding.EncodedLen(int(codeSize))) + int64(len(deploySuffix)), nil
}

const deploySuffix = `"}`

// deployPrefix is the deploy request's JSON up to the code's base64 text.
func deployPrefix(spec apiv1.FunctionSpec) ([]byte, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSuffix(b, []byte("}"))
	if len(b) > 1 {
		b = append(b, ',')
	}
	return append(b, `"code":"`...), nil
}

// DeployCode creates or updates a function, streaming size bytes of code
// (a zip archive) into the request instead of building it in memory.
func (c *Client) DeployCode(ctx context.Context, name string, spec apiv1.FunctionSpec, code io.Reader, size int64) (apiv1.Function, error) {
	prefix, err := deployPrefix(spec)
	if err != nil {
		return apiv1.Function{}, err
	}
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		enc := base64.NewEncoder(base64.StdEncoding, pw)
		_, err := io.Copy(enc, io.LimitReader(code, size))
		if err == nil {
			err = enc.Close()
		}
		if err == nil {
			_, err = io.WriteString(pw, deploySuffix)
		}
		pw.CloseWithError(err)
	}()
	// Closing the reader ends the writer if the transport stopped early.
	defer func() { pr.Close(); <-done }()
	req, err := c.request(ctx, http.MethodPut, "/v1/functions/"+url.PathEscape(name), io.MultiReader(bytes.NewReader(prefix), pr))
	if err != nil {
		return apiv1.Function{}, err
	}
	req.ContentLength = int64(len(prefix)) + int64(base64.StdEncoding.EncodedLen(int(size))) + int64(len(deploySuffix))
	req.Header.Set("Content-Type", "application/json")
	var v apiv1.Function
	err = c.send(req, &v)
	return v, err
}

// Get returns a function.
func (c *Client) Get(ctx context.Context, name string) (apiv1.Function, error) {
	var v apiv1.Function
	err := c.do(ctx, http.MethodGet, "/v1/functions/"+url.PathEscape(name), nil, &v)
	return v, err
}

// List returns all functions.
func (c *Client) List(ctx context.Context) ([]apiv1.Function, error) {
	var v apiv1.FunctionList
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
	return c.InvokeStream(ctx, name, bytes.NewReader(payload), int64(len(payload)))
}

// InvokeStream is Invoke with the event read from r (size bytes), so that
// a large event need not be held in memory.
func (c *Client) InvokeStream(ctx context.Context, name string, r io.Reader, size int64) (InvokeResponse, error) {
	req, err := c.request(ctx, http.MethodPost, "/v1/functions/"+url.PathEscape(name)+"/invoke", io.LimitReader(r, size))
	if err != nil {
		return InvokeResponse{}, err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/json")
	if seeker, ok := r.(io.Seeker); ok {
		// The event can be sent again to another server.
		if start, err := seeker.Seek(0, io.SeekCurrent); err == nil {
			req.GetBody = func() (io.ReadCloser, error) {
				if _, err := seeker.Seek(start, io.SeekStart); err != nil {
					return nil, err
				}
				return io.NopCloser(io.LimitReader(r, size)), nil
			}
		}
	}
	resp, err := c.roundTrip(req)
	if err != nil {
		return InvokeResponse{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return InvokeResponse{}, fmt.Errorf("read response: %w", err)
	}
	out := InvokeResponse{Status: resp.StatusCode, Header: resp.Header, Body: data,
		ID: resp.Header.Get(apiv1.HeaderInvocationID), Cold: resp.Header.Get(apiv1.HeaderColdStart) == "true"}
	out.Version, _ = strconv.Atoi(resp.Header.Get(apiv1.HeaderFunctionVersion))
	if resp.StatusCode >= 400 {
		return out, decodeError(resp.StatusCode, data)
	}
	return out, nil
}

// Invocations lists recent invocation records, newest first.
func (c *Client) Invocations(ctx context.Context, fn string, limit int) ([]apiv1.Invocation, error) {
	q := url.Values{}
	if fn != "" {
		q.Set("function", fn)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var v apiv1.InvocationList
	err := c.do(ctx, http.MethodGet, "/v1/invocations?"+q.Encode(), nil, &v)
	return v.Invocations, err
}

// Invocation returns one record.
func (c *Client) Invocation(ctx context.Context, id string) (apiv1.Invocation, error) {
	var r apiv1.Invocation
	err := c.do(ctx, http.MethodGet, "/v1/invocations/"+url.PathEscape(id), nil, &r)
	return r, err
}

// Images lists the server's images.
func (c *Client) Images(ctx context.Context) ([]apiv1.Image, error) {
	var v apiv1.ImageList
	err := c.do(ctx, http.MethodGet, "/v1/images", nil, &v)
	return v.Images, err
}

// Nodes returns the cluster's live nodes, sorted by id.
func (c *Client) Nodes(ctx context.Context) ([]apiv1.Node, error) {
	var v apiv1.NodeList
	err := c.do(ctx, http.MethodGet, "/v1/nodes", nil, &v)
	return v.Nodes, err
}

// ImportImage uploads an OCI layout tarball or docker-save archive.
func (c *Client) ImportImage(ctx context.Context, name string, archive io.Reader) (apiv1.Image, error) {
	var img apiv1.Image
	err := c.do(ctx, http.MethodPut, "/v1/images/"+name, archive, &img)
	return img, err
}

// RemoveImage deletes an image.
func (c *Client) RemoveImage(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/images/"+name, nil, nil)
}
