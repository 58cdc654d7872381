package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// urlEvent is the part of the function URL event (payload 2.0) the tests
// look at.
type urlEvent struct {
	Version               string            `json:"version"`
	RouteKey              string            `json:"routeKey"`
	RawPath               string            `json:"rawPath"`
	RawQueryString        string            `json:"rawQueryString"`
	Cookies               []string          `json:"cookies"`
	Headers               map[string]string `json:"headers"`
	QueryStringParameters map[string]string `json:"queryStringParameters"`
	Body                  string            `json:"body"`
	IsBase64Encoded       bool              `json:"isBase64Encoded"`
	RequestContext        struct {
		RequestID string `json:"requestId"`
		HTTP      struct {
			Method    string `json:"method"`
			Path      string `json:"path"`
			SourceIP  string `json:"sourceIp"`
			UserAgent string `json:"userAgent"`
		} `json:"http"`
	} `json:"requestContext"`
}

// TestFunctionURL checks /fn/{name}/{path...}: the request becomes a Lambda
// function URL event, and the function's answer becomes the HTTP response.
func TestFunctionURL(t *testing.T) {
	requirePython(t)
	t.Parallel()
	srv := startServer(t)
	deploy(t, srv, "web", pySpec("http"), pyDir)
	base := srv.URL + "/fn/web"

	event := func(t *testing.T, res httpResult) urlEvent {
		t.Helper()
		if res.Status != http.StatusOK {
			t.Fatalf("HTTP %d: %s", res.Status, res.Body)
		}
		if res.Header.Get("Baton-Invocation-Id") == "" || res.Header.Get("Server-Timing") == "" {
			t.Errorf("function URL response lacks Baton headers: %v", res.Header)
		}
		var ev urlEvent
		if err := json.Unmarshal(res.Body, &ev); err != nil {
			t.Fatalf("event echo %q: %v", res.Body, err)
		}
		if ev.Version != "2.0" || ev.RouteKey != "$default" {
			t.Errorf("event version %q routeKey %q", ev.Version, ev.RouteKey)
		}
		if ev.RequestContext.RequestID != res.Header.Get("Baton-Invocation-Id") {
			t.Errorf("requestContext.requestId %q != Baton-Invocation-Id %q", ev.RequestContext.RequestID, res.Header.Get("Baton-Invocation-Id"))
		}
		return ev
	}

	t.Run("get-query-headers-cookies", func(t *testing.T) {
		res := do(t, http.MethodGet, base+"/some/deep/path?a=1&b=two&a=3&empty=", nil, map[string]string{
			"X-Custom-Header": "custom value",
			"Cookie":          "session=abc; theme=dark",
			"User-Agent":      "baton-e2e/1.0",
		})
		ev := event(t, res)
		if ev.RawPath != "/some/deep/path" || ev.RequestContext.HTTP.Path != "/some/deep/path" {
			t.Errorf("rawPath %q, http.path %q", ev.RawPath, ev.RequestContext.HTTP.Path)
		}
		if ev.RequestContext.HTTP.Method != "GET" || ev.RequestContext.HTTP.UserAgent != "baton-e2e/1.0" || ev.RequestContext.HTTP.SourceIP != "127.0.0.1" {
			t.Errorf("requestContext.http = %+v", ev.RequestContext.HTTP)
		}
		if ev.RawQueryString != "a=1&b=two&a=3&empty=" {
			t.Errorf("rawQueryString %q", ev.RawQueryString)
		}
		wantQ := map[string]string{"a": "1,3", "b": "two", "empty": ""}
		if !jsonEqual(ev.QueryStringParameters, wantQ) {
			t.Errorf("queryStringParameters %v, want %v", ev.QueryStringParameters, wantQ)
		}
		if ev.Headers["x-custom-header"] != "custom value" || ev.Headers["user-agent"] != "baton-e2e/1.0" || ev.Headers["host"] == "" {
			t.Errorf("headers %v", ev.Headers)
		}
		if _, ok := ev.Headers["cookie"]; ok {
			t.Errorf("cookie header should move to the cookies list: %v", ev.Headers)
		}
		if !slices.Equal(ev.Cookies, []string{"session=abc", "theme=dark"}) {
			t.Errorf("cookies %q", ev.Cookies)
		}
		if ev.Body != "" || ev.IsBase64Encoded {
			t.Errorf("GET without body: body %q base64 %v", ev.Body, ev.IsBase64Encoded)
		}
	})

	t.Run("root-path", func(t *testing.T) {
		ev := event(t, do(t, http.MethodGet, base, nil, nil))
		if ev.RawPath != "/" || ev.QueryStringParameters != nil || ev.RawQueryString != "" {
			t.Errorf("bare /fn/web: rawPath %q query %v %q", ev.RawPath, ev.QueryStringParameters, ev.RawQueryString)
		}
	})

	t.Run("post-json", func(t *testing.T) {
		body := `{"name":"baton","list":[1,2,3]}`
		ev := event(t, do(t, http.MethodPost, base+"/items", []byte(body), map[string]string{"Content-Type": "application/json"}))
		if ev.RequestContext.HTTP.Method != "POST" || ev.Body != body || ev.IsBase64Encoded {
			t.Errorf("JSON POST: method %q body %q base64 %v", ev.RequestContext.HTTP.Method, ev.Body, ev.IsBase64Encoded)
		}
		if ev.Headers["content-type"] != "application/json" {
			t.Errorf("content-type header %q", ev.Headers["content-type"])
		}
	})

	t.Run("post-binary", func(t *testing.T) {
		body := []byte{0, 1, 2, 0xff, 0xfe, '\n', 'x', 0x80}
		ev := event(t, do(t, http.MethodPut, base+"/upload", body, map[string]string{"Content-Type": "application/octet-stream"}))
		if !ev.IsBase64Encoded {
			t.Fatalf("binary body not marked isBase64Encoded: %+v", ev)
		}
		got, err := base64.StdEncoding.DecodeString(ev.Body)
		if err != nil || !bytes.Equal(got, body) {
			t.Errorf("binary body: %q decodes to %v (%v), want %v", ev.Body, got, err, body)
		}
		if ev.RequestContext.HTTP.Method != "PUT" {
			t.Errorf("method %q", ev.RequestContext.HTTP.Method)
		}
	})

	t.Run("response-object", func(t *testing.T) {
		res := do(t, http.MethodGet, base+"/respond", nil, nil)
		if res.Status != http.StatusCreated {
			t.Fatalf("status %d, want 201: %s", res.Status, res.Body)
		}
		want := make([]byte, 256)
		for i := range want {
			want[i] = byte(i)
		}
		if !bytes.Equal(res.Body, want) {
			t.Errorf("body is not the decoded base64 (%d bytes): %q", len(res.Body), res.Body)
		}
		if res.Header.Get("Content-Type") != "application/octet-stream" || res.Header.Get("X-Baton-Test") != "yes" {
			t.Errorf("headers %v", res.Header)
		}
		cookies := res.Header.Values("Set-Cookie")
		if !slices.Equal(cookies, []string{"session=abc; Path=/; HttpOnly", "theme=dark"}) {
			t.Errorf("Set-Cookie %q", cookies)
		}
	})

	t.Run("response-text-status", func(t *testing.T) {
		res := do(t, http.MethodGet, base+"/text", nil, nil)
		if res.Status != http.StatusNotFound || string(res.Body) != "nothing here" || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("status %d, content-type %q, body %q", res.Status, res.Header.Get("Content-Type"), res.Body)
		}
	})

	t.Run("plain-object", func(t *testing.T) {
		res := do(t, http.MethodGet, base+"/plain", nil, nil)
		if res.Status != http.StatusOK || res.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("status %d content-type %q: %s", res.Status, res.Header.Get("Content-Type"), res.Body)
		}
		var got map[string]any
		if err := json.Unmarshal(res.Body, &got); err != nil || got["plain"] != true || got["answer"] != float64(42) {
			t.Errorf("plain object body %q (%v)", res.Body, err)
		}
	})

	t.Run("unknown-function", func(t *testing.T) {
		res := do(t, http.MethodGet, srv.URL+"/fn/nope/x", nil, nil)
		if res.Status != http.StatusNotFound {
			t.Errorf("status %d, want 404: %s", res.Status, res.Body)
		}
		if eb := errorBody(t, res.Status, res.Body); eb.Code != "function_not_found" {
			t.Errorf("code %q", eb.Code)
		}
	})
}
