// Package loadgen drives load against Baton and records what every request
// saw: closed and open loops, bursts, cold-start sweeps and warm-only runs.
// Latency is measured with the monotonic clock from the request's intended
// send time, so a client that falls behind its schedule shows up in the
// numbers (coordinated omission) instead of hiding it.
package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Response is what one request returned.
type Response struct {
	Status   int
	Cold     bool
	WaitMs   float64
	InitMs   float64
	ExecMs   float64
	Instance string
	Body     []byte
	Err      error
}

// Target sends one request.
type Target interface {
	Send(ctx context.Context, payload []byte) Response
}

// HTTPTarget invokes a function through Baton's HTTP API.
type HTTPTarget struct {
	client *http.Client
	url    string
	method string
}

// NewHTTPTarget targets function name on server. viaURL sends plain HTTP
// through the function URL (/fn/name/) instead of the invoke API.
// maxConns sizes the kept-alive connection pool.
func NewHTTPTarget(server, name string, viaURL bool, maxConns int) (*HTTPTarget, error) {
	u, err := url.Parse(server)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("server URL %q must look like http://host:port", server)
	}
	base := strings.TrimRight(server, "/")
	t := &HTTPTarget{method: http.MethodPost, url: base + "/v1/functions/" + url.PathEscape(name) + "/invoke"}
	if viaURL {
		t.url = base + "/fn/" + url.PathEscape(name) + "/"
	}
	t.client = &http.Client{Transport: NewTransport(maxConns)}
	return t, nil
}

// NewURLTarget posts to an arbitrary URL (the baseline server).
func NewURLTarget(rawURL string, maxConns int) *HTTPTarget {
	return &HTTPTarget{method: http.MethodPost, url: rawURL, client: &http.Client{Transport: NewTransport(maxConns)}}
}

// NewTransport returns a transport that keeps enough connections alive
// for maxConns concurrent requests, so the client never pays connection
// set-up inside a measurement.
func NewTransport(maxConns int) *http.Transport {
	maxConns = max(maxConns, 1)
	return &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        2 * maxConns,
		MaxIdleConnsPerHost: 2 * maxConns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
}

// Send implements Target.
func (t *HTTPTarget) Send(ctx context.Context, payload []byte) Response {
	req, err := http.NewRequestWithContext(ctx, t.method, t.url, bytes.NewReader(payload))
	if err != nil {
		return Response{Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := t.client.Do(req)
	if err != nil {
		return Response{Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	r := Response{Status: resp.StatusCode, Body: body, Err: err,
		Cold: resp.Header.Get("Baton-Cold-Start") == "true", Instance: resp.Header.Get("Baton-Instance-Id")}
	r.WaitMs, r.InitMs, r.ExecMs = ParseServerTiming(resp.Header.Get("Server-Timing"))
	if r.Err == nil && resp.StatusCode >= 400 {
		r.Err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, errorMessage(body))
	}
	return r
}

// CloseIdle drops kept-alive connections.
func (t *HTTPTarget) CloseIdle() { t.client.CloseIdleConnections() }

// errorMessage prefers the message of Baton's JSON error body.
func errorMessage(b []byte) string {
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(b, &e) == nil && e.Message != "" {
		return e.Code + ": " + firstLine([]byte(e.Message))
	}
	return firstLine(b)
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// ParseServerTiming extracts Baton's wait, init and exec phases (ms) from a
// Server-Timing header; missing metrics are 0.
func ParseServerTiming(h string) (wait, init, exec float64) {
	for _, part := range strings.Split(h, ",") {
		fields := strings.Split(strings.TrimSpace(part), ";")
		if len(fields) == 0 {
			continue
		}
		var dur float64
		for _, f := range fields[1:] {
			if v, ok := strings.CutPrefix(strings.TrimSpace(f), "dur="); ok {
				dur, _ = strconv.ParseFloat(v, 64)
			}
		}
		switch strings.TrimSpace(fields[0]) {
		case "wait":
			wait = dur
		case "init":
			init = dur
		case "exec":
			exec = dur
		}
	}
	return wait, init, exec
}
