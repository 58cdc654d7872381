package httpapi

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestBuildURLEvent(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "/fn/hello/a/b?x=1&x=2&y=3", strings.NewReader("\x00\x01binary"))
	r.SetPathValue("name", "hello")
	r.SetPathValue("path", "a/b")
	r.Header.Set("Content-Type", "application/octet-stream")
	r.Header.Set("X-Thing", "v")
	r.Header.Add("Cookie", "a=1; b=2")
	ev := buildURLEvent(r, "hello", "req-1", []byte("\x00\x01binary"))
	if ev.Version != "2.0" || ev.RawPath != "/a/b" || ev.RawQueryString != "x=1&x=2&y=3" {
		t.Fatalf("bad event: %+v", ev)
	}
	if ev.QueryStringParameters["x"] != "1,2" || ev.Headers["x-thing"] != "v" {
		t.Fatalf("query/headers: %+v %+v", ev.QueryStringParameters, ev.Headers)
	}
	if len(ev.Cookies) != 2 || ev.Cookies[1] != "b=2" {
		t.Fatalf("cookies: %v", ev.Cookies)
	}
	if !ev.IsBase64Encoded || ev.Body != base64.StdEncoding.EncodeToString([]byte("\x00\x01binary")) {
		t.Fatalf("binary body must be base64: %+v", ev)
	}
	if ev.RequestContext.HTTP.Method != http.MethodPost || ev.RequestContext.RequestID != "req-1" {
		t.Fatalf("request context: %+v", ev.RequestContext)
	}
	r2 := httptest.NewRequest(http.MethodPost, "/fn/hello", strings.NewReader(`{"a":1}`))
	r2.Header.Set("Content-Type", "application/json; charset=utf-8")
	r3 := httptest.NewRequest(http.MethodGet, "/fn/hello/a%20b/c%2Fd", nil)
	if ev3 := buildURLEvent(r3, "hello", "r", nil); ev3.RawPath != "/a%20b/c%2Fd" {
		t.Fatalf("rawPath must stay encoded: %q", ev3.RawPath)
	}
	if ev2 := buildURLEvent(r2, "hello", "r", []byte(`{"a":1}`)); ev2.IsBase64Encoded || ev2.Body != `{"a":1}` || ev2.RawPath != "/" {
		t.Fatalf("json body must be plain text: %+v", ev2)
	}
}

func TestWriteURLResponse(t *testing.T) {
	w := httptest.NewRecorder()
	respondURL(t, w, []byte(`{"statusCode":201,"headers":{"X-A":"b"},"cookies":["c=1"],"body":"aGk=","isBase64Encoded":true}`))
	if w.Code != 201 || w.Body.String() != "hi" || w.Header().Get("X-A") != "b" || w.Header().Get("Set-Cookie") != "c=1" {
		t.Fatalf("got %d %q %v", w.Code, w.Body.String(), w.Header())
	}
	w = httptest.NewRecorder()
	respondURL(t, w, []byte(`{"hello":"world"}`))
	if w.Code != 200 || w.Body.String() != `{"hello":"world"}` || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("plain object: %d %q", w.Code, w.Body.String())
	}
	w = httptest.NewRecorder()
	respondURL(t, w, []byte(`{"statusCode":200,"body":"%%%","isBase64Encoded":true}`))
	if w.Code != http.StatusBadGateway {
		t.Fatalf("bad base64 must be 502, got %d", w.Code)
	}
}

func TestWriteURLResponseRefusesInvalidShapes(t *testing.T) {
	for result, mention := range map[string]string{
		`{"statusCode":101}`:                                       "out of range",
		`{"statusCode":999}`:                                       "out of range",
		`{"statusCode":100,"body":"x"}`:                            "out of range",
		`{"statusCode":"200"}`:                                     "statusCode must be an integer",
		`{"statusCode":200.5}`:                                     "statusCode must be an integer",
		`{"statusCode":200,"headers":{"X-A":1}}`:                   "headers must be an object of string values",
		`{"statusCode":200,"headers":["X-A"]}`:                     "headers must be an object of string values",
		`{"statusCode":200,"headers":{"X A":"b"}}`:                 `header name "X A"`,
		`{"statusCode":200,"headers":{"X-A":"b\r\nX-Evil: 1"}}`:    "line break",
		`{"statusCode":200,"body":{"a":1}}`:                        "body must be a string",
		`{"statusCode":200,"cookies":"a=1"}`:                       "cookies must be an array of strings",
		`{"statusCode":200,"isBase64Encoded":"yes","body":"aGk="}`: "isBase64Encoded must be true or false",
		`{"statusCode":200,"body":"%%%","isBase64Encoded":true}`:   "not base64",
	} {
		w := httptest.NewRecorder()
		respondURL(t, w, []byte(result))
		if w.Code != http.StatusBadGateway {
			t.Errorf("%s: HTTP %d, want 502", result, w.Code)
			continue
		}
		e := decodeError(t, w)
		if e.Code != "bad_function_response" || !strings.Contains(e.Message, mention) {
			t.Errorf("%s: %s %q, want a message with %q", result, e.Code, e.Message, mention)
		}
	}
}

func TestWriteURLResponseKeepsFramingAndPlatformHeaders(t *testing.T) {
	w := httptest.NewRecorder()
	w.Header().Set("Baton-Invocation-Id", "real-id")
	w.Header().Set("Server-Timing", "exec;dur=1")
	respondURL(t, w, []byte(`{"statusCode":203,"body":"hello","headers":{
		"Content-Length":"2","Transfer-Encoding":"chunked","Connection":"close","Keep-Alive":"timeout=1",
		"Upgrade":"websocket","TE":"trailers","Trailer":"X-T","Proxy-Authenticate":"Basic","proxy-connection":"close",
		"Baton-Invocation-Id":"forged","baton-cold-start":"true","Server-Timing":"forged","X-Own":"kept"}}`))
	if w.Code != 203 || w.Body.String() != "hello" {
		t.Fatalf("got %d %q", w.Code, w.Body.String())
	}
	h := w.Header()
	for _, k := range []string{"Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Upgrade", "Te", "Trailer", "Proxy-Authenticate", "Proxy-Connection", "Baton-Cold-Start"} {
		if v := h.Get(k); v != "" {
			t.Errorf("function's %s: %q passed through", k, v)
		}
	}
	if h.Get("Baton-Invocation-Id") != "real-id" || h.Get("Server-Timing") != "exec;dur=1" || h.Get("X-Own") != "kept" {
		t.Errorf("headers: %v", h)
	}
}

// respondURL answers as the function URL handler does.
func respondURL(t *testing.T, w *httptest.ResponseRecorder, result []byte) {
	if err := writeURLResponse(w, result); err != nil {
		newTestServer(t, Options{}).writeErr(w, err)
	}
}
