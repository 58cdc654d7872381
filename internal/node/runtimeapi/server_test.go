package runtimeapi

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
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/workerapi"
)

const apiVersionPath = "/2018-06-01/runtime"

// startServer serves a new Server on a loopback port and closes it (and
// checks Serve's result) when the test ends.
// waitTimeout bounds waits for something a busy host can delay (a
// process starting, a goroutine ending): generous, because what never
// happens still fails the test at this deadline.
const waitTimeout = time.Minute

func startServer(t *testing.T, opts Options) (*Server, string) {
	t.Helper()
	s := New(opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-errc; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, ln.Addr().String()
}

// httpClient plays the function's side of the Runtime API over HTTP.
type httpClient struct {
	t    *testing.T
	base string
	hc   *http.Client
}

func newClient(t *testing.T, addr string) *httpClient {
	tr := &http.Transport{Proxy: nil}
	t.Cleanup(tr.CloseIdleConnections)
	return &httpClient{t: t, base: "http://" + addr + apiVersionPath, hc: &http.Client{Transport: tr}}
}

type delivered struct {
	id      string
	header  http.Header
	payload []byte
}

func (c *httpClient) next(ctx context.Context) (delivered, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/invocation/next", nil)
	if err != nil {
		return delivered{}, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return delivered{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return delivered{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return delivered{}, fmt.Errorf("next: status %d: %s", resp.StatusCode, body)
	}
	return delivered{id: resp.Header.Get(headerRequestID), header: resp.Header, payload: body}, nil
}

func (c *httpClient) mustNext() delivered {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	d, err := c.next(ctx)
	if err != nil {
		c.t.Fatalf("next: %v", err)
	}
	return d
}

// post sends body (of unknown length when chunked) and returns the status
// and decoded JSON answer.
func (c *httpClient) post(path string, body []byte, chunked bool, header http.Header) (int, map[string]string) {
	c.t.Helper()
	var r io.Reader = bytes.NewReader(body)
	if chunked {
		r = io.MultiReader(r) // hides the length, forcing chunked encoding
	}
	req, err := http.NewRequest(http.MethodPost, c.base+path, r)
	if err != nil {
		c.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		c.t.Errorf("POST %s: Content-Type %q", path, ct)
	}
	var out map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		c.t.Fatalf("POST %s: decoding answer: %v", path, err)
	}
	return resp.StatusCode, out
}

func (c *httpClient) respond(id string, body string) {
	c.t.Helper()
	if status, out := c.post("/invocation/"+id+"/response", []byte(body), false, nil); status != http.StatusAccepted || out["status"] != "OK" {
		c.t.Fatalf("response for %s: %d %v", id, status, out)
	}
}

type invokeResult struct {
	res Result
	err error
}

// invokeAsync starts Invoke in the background; the deadline is generous
// so tests never hit it by accident.
func invokeAsync(ctx context.Context, s *Server, ev Event) <-chan invokeResult {
	if ev.Deadline.IsZero() {
		ev.Deadline = time.Now().Add(time.Minute)
	}
	ch := make(chan invokeResult, 1)
	go func() {
		res, err := s.Invoke(ctx, ev)
		ch <- invokeResult{res, err}
	}()
	return ch
}

func waitResult(t *testing.T, ch <-chan invokeResult) invokeResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(waitTimeout):
		t.Fatal("Invoke did not return")
		return invokeResult{}
	}
}

// waitFor polls cond (evaluated under the server lock) until it holds.
func waitFor(t *testing.T, s *Server, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		s.mu.Lock()
		ok := cond()
		s.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// checkNoLeaks fails if server-side goroutines are still running.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		leaked := strings.Contains(stacks, "runtimeapi.(*Server)") || strings.Contains(stacks, "runtimeapi.(*sockConn)") ||
			strings.Contains(stacks, "net/http.(*conn).serve")
		if !leaked {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines left after Close:\n%s", stacks)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFIFODelivery(t *testing.T) {
	eachTransport(t, Options{}, testFIFODelivery)
}

func testFIFODelivery(t *testing.T, s *Server, c rtClient) {
	var results []<-chan invokeResult
	for i := range 5 {
		results = append(results, invokeAsync(t.Context(), s, Event{
			RequestID: fmt.Sprintf("req-%d", i),
			Payload:   []byte(fmt.Sprintf(`{"n":%d}`, i)),
		}))
		waitFor(t, s, "event to be queued", func() bool { return len(s.queue) == i+1 })
	}
	for i := range 5 {
		d := mustNext(t, c)
		if want := fmt.Sprintf("req-%d", i); d.id != want {
			t.Fatalf("delivery %d: got %s, want %s", i, d.id, want)
		}
		respond(t, c, d.id, fmt.Sprintf(`{"echo":%s}`, d.payload))
	}
	for i, ch := range results {
		r := waitResult(t, ch)
		if r.err != nil {
			t.Fatalf("Invoke %d: %v", i, r.err)
		}
		if want := fmt.Sprintf(`{"echo":{"n":%d}}`, i); string(r.res.Payload) != want {
			t.Errorf("Invoke %d payload %s, want %s", i, r.res.Payload, want)
		}
		if r.res.DeliveredAt.IsZero() || r.res.CompletedAt.Before(r.res.DeliveredAt) {
			t.Errorf("Invoke %d timestamps: %v %v", i, r.res.DeliveredAt, r.res.CompletedAt)
		}
	}
}

func TestConcurrentOutstanding(t *testing.T) {
	eachTransport(t, Options{}, testConcurrentOutstanding)
}

func testConcurrentOutstanding(t *testing.T, s *Server, c rtClient) {
	const n = 4
	got := make(chan delivered, n)
	for range n {
		go func() {
			d, err := c.next(t.Context())
			if err != nil {
				t.Errorf("next: %v", err)
			}
			got <- d
		}()
	}
	waitFor(t, s, "pollers to park", func() bool { return len(s.waiters) == n })

	results := make(map[string]<-chan invokeResult)
	for i := range n {
		id := fmt.Sprintf("c-%d", i)
		results[id] = invokeAsync(t.Context(), s, Event{RequestID: id, Payload: []byte(`"` + id + `"`)})
	}
	// All n events are out at once; answer them in an arbitrary order.
	var ds []delivered
	for range n {
		ds = append(ds, <-got)
	}
	for i := len(ds) - 1; i >= 0; i-- {
		respond(t, c, ds[i].id, `{"for":`+string(ds[i].payload)+`}`)
	}
	for id, ch := range results {
		r := waitResult(t, ch)
		if r.err != nil || string(r.res.Payload) != `{"for":"`+id+`"}` {
			t.Errorf("%s: %s, %v", id, r.res.Payload, r.err)
		}
	}
}

func TestWithdrawOnCancel(t *testing.T) {
	eachTransport(t, Options{}, testWithdrawOnCancel)
}

func testWithdrawOnCancel(t *testing.T, s *Server, c rtClient) {
	// Cancelled before any poller arrives: withdrawn, never delivered.
	ctx, cancel := context.WithCancel(t.Context())
	ch := invokeAsync(ctx, s, Event{RequestID: "withdrawn", Payload: []byte(`{}`)})
	waitFor(t, s, "event to be queued", func() bool { return len(s.queue) == 1 })
	cancel()
	if r := waitResult(t, ch); !errors.Is(r.err, context.Canceled) || !errors.Is(r.err, ErrNotDelivered) {
		t.Fatalf("Invoke after cancel: %v, want cancelled and not delivered", r.err)
	}
	keep := invokeAsync(t.Context(), s, Event{RequestID: "kept", Payload: []byte(`{}`)})
	if d := mustNext(t, c); d.id != "kept" {
		t.Fatalf("poller got %s, want kept", d.id)
	}
	respond(t, c, "kept", `{}`)
	if r := waitResult(t, keep); r.err != nil {
		t.Fatal(r.err)
	}

	// Cancelled after delivery: Invoke returns, later posts are refused.
	ctx, cancel = context.WithCancel(t.Context())
	ch = invokeAsync(ctx, s, Event{RequestID: "abandoned", Payload: []byte(`{}`)})
	d := mustNext(t, c)
	cancel()
	if r := waitResult(t, ch); !errors.Is(r.err, context.Canceled) || errors.Is(r.err, ErrNotDelivered) {
		t.Fatalf("Invoke after cancel: %v, want cancelled after delivery", r.err)
	}
	status, out := c.postResult(d.id, false, []byte(`{}`), "")
	if status != http.StatusBadRequest || out["errorType"] != "InvalidRequestID" {
		t.Fatalf("post for abandoned event: %d %v", status, out)
	}
}

func TestInvalidRequestID(t *testing.T) {
	s, addr := startServer(t, Options{})
	c := newClient(t, addr)

	for _, kind := range []string{"response", "error"} {
		status, out := c.post("/invocation/no-such-id/"+kind, []byte(`{}`), false, nil)
		if status != http.StatusBadRequest || out["errorType"] != "InvalidRequestID" || out["errorMessage"] == "" {
			t.Errorf("%s for unknown id: %d %v", kind, status, out)
		}
	}

	// Queued but not yet delivered is not postable either.
	ch := invokeAsync(t.Context(), s, Event{RequestID: "queued", Payload: []byte(`{}`)})
	waitFor(t, s, "event to be queued", func() bool { return len(s.queue) == 1 })
	if status, _ := c.post("/invocation/queued/response", []byte(`{}`), false, nil); status != http.StatusBadRequest {
		t.Errorf("post for undelivered event: %d", status)
	}

	// A second post for a completed event is refused.
	d := c.mustNext()
	c.respond(d.id, `{"first":true}`)
	if status, _ := c.post("/invocation/"+d.id+"/error", []byte(`{}`), false, nil); status != http.StatusBadRequest {
		t.Errorf("second post: %d", status)
	}
	if r := waitResult(t, ch); r.err != nil || string(r.res.Payload) != `{"first":true}` || r.res.Error != nil {
		t.Errorf("result: %+v %v", r.res, r.err)
	}
}

func TestResponseTooLarge(t *testing.T) {
	for _, kind := range []string{"response", "error"} {
		t.Run(kind, func(t *testing.T) {
			eachTransport(t, Options{MaxResponseBytes: 1024}, func(t *testing.T, s *Server, c rtClient) {
				testResponseTooLarge(t, s, c, kind == "error", func(id string, body []byte) (int, map[string]string) {
					return c.postResult(id, kind == "error", body, "")
				})
			})
			t.Run("http-chunked", func(t *testing.T) {
				s, addr := startServer(t, Options{MaxResponseBytes: 1024})
				c := newClient(t, addr)
				testResponseTooLarge(t, s, c, kind == "error", func(id string, body []byte) (int, map[string]string) {
					return c.post("/invocation/"+id+"/"+kind, body, true, nil)
				})
			})
		})
	}
}

func testResponseTooLarge(t *testing.T, s *Server, c rtClient, isError bool, post func(id string, body []byte) (int, map[string]string)) {
	ch := invokeAsync(t.Context(), s, Event{Payload: []byte(`{}`)})
	d := mustNext(t, c)
	status, out := post(d.id, bytes.Repeat([]byte("x"), 1025))
	if status != http.StatusRequestEntityTooLarge || out["errorType"] == "" {
		t.Errorf("oversize post: %d %v", status, out)
	}
	if r := waitResult(t, ch); !errors.Is(r.err, ErrResponseTooLarge) {
		t.Errorf("Invoke: %v", r.err)
	}

	// Exactly the limit is fine.
	ch = invokeAsync(t.Context(), s, Event{Payload: []byte(`{}`)})
	d = mustNext(t, c)
	if status, out := c.postResult(d.id, isError, bytes.Repeat([]byte("y"), 1024), ""); status != http.StatusAccepted {
		t.Fatalf("post at the limit: %d %v", status, out)
	}
	r := waitResult(t, ch)
	if r.err != nil {
		t.Fatalf("Invoke at limit: %v", r.err)
	}
	if !isError && len(r.res.Payload) != 1024 {
		t.Errorf("Invoke at limit: %d bytes", len(r.res.Payload))
	}
	if isError && (r.res.Error == nil || len(r.res.Error.Message) == 0) {
		t.Errorf("Invoke at limit: error %+v", r.res.Error)
	}
}

func TestErrorPosts(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		header    string
		wantType  string
		wantMsg   string
		wantStack []string
	}{
		{"node style", `{"errorType":"TypeError","errorMessage":"x is undefined","trace":["a"],"stackTrace":["at f (index.js:1:2)","at g"]}`,
			"", "TypeError", "x is undefined", []string{"at f (index.js:1:2)", "at g"}},
		{"go style frames", `{"errorMessage":"boom","errorType":"errorString","stackTrace":[{"path":"main.go","line":3,"label":"main"}]}`,
			"", "errorString", "boom", []string{`{"path":"main.go","line":3,"label":"main"}`}},
		{"python style nested lists", `{"errorMessage":"bad","errorType":"ValueError","stackTrace":[["f.py",1,"h","raise"]]}`,
			"", "ValueError", "bad", []string{`["f.py",1,"h","raise"]`}},
		{"stack as one string", `{"errorMessage":"m","errorType":"T","stackTrace":"line1\nline2"}`,
			"", "T", "m", []string{"line1\nline2"}},
		{"type from header", `{"errorMessage":"only message"}`, "Runtime.Custom", "Runtime.Custom", "only message", nil},
		{"non-string fields", `{"errorMessage":{"nested":1},"errorType":42}`, "", "42", `{"nested":1}`, nil},
		{"plain text", "  something broke\n", "Runtime.ExitError", "Runtime.ExitError", "something broke", nil},
		{"empty body", "", "", "", "", nil},
	}
	eachTransport(t, Options{}, func(t *testing.T, s *Server, c rtClient) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				ch := invokeAsync(t.Context(), s, Event{Payload: []byte(`{}`)})
				d := mustNext(t, c)
				if status, out := c.postResult(d.id, true, []byte(tc.body), tc.header); status != http.StatusAccepted || out["status"] != "OK" {
					t.Fatalf("post: %d %v", status, out)
				}
				r := waitResult(t, ch)
				if r.err != nil || r.res.Error == nil {
					t.Fatalf("Invoke: %+v %v", r.res, r.err)
				}
				fe := r.res.Error
				if fe.Type != tc.wantType || fe.Message != tc.wantMsg || fmt.Sprint(fe.StackTrace) != fmt.Sprint(tc.wantStack) {
					t.Errorf("got %q %q %q", fe.Type, fe.Message, fe.StackTrace)
				}
			})
		}
	})
}

// TestStreamingErrorTrailer covers aws-lambda-go's way of reporting a
// response body that failed while streaming: error trailers on /response.
func TestStreamingErrorTrailer(t *testing.T) {
	s, addr := startServer(t, Options{})
	c := newClient(t, addr)
	ch := invokeAsync(t.Context(), s, Event{Payload: []byte(`{}`)})
	d := c.mustNext()

	errBody := `{"errorMessage":"stream broke","errorType":"ReadError"}`
	req, _ := http.NewRequest(http.MethodPost, c.base+"/invocation/"+d.id+"/response", io.MultiReader(strings.NewReader("partial")))
	req.Trailer = http.Header{headerErrorType: {"ReadError"}, headerErrorBody: {base64Std(errBody)}}
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d", resp.StatusCode)
	}
	r := waitResult(t, ch)
	if r.err != nil || r.res.Error == nil || r.res.Error.Message != "stream broke" || string(r.res.Payload) != "partial" {
		t.Fatalf("result: %+v %v", r.res, r.err)
	}
}

func TestInitError(t *testing.T) {
	s, addr := startServer(t, Options{})
	c := newClient(t, addr)
	body := `{"errorMessage":"cannot load handler","errorType":"Runtime.ImportModuleError","extra":{"x":1},"stackTrace":[{"f":1}]}`
	if status, out := c.post("/init/error", []byte(body), false, nil); status != http.StatusAccepted || out["status"] != "OK" {
		t.Fatalf("init error post: %d %v", status, out)
	}
	select {
	case fe := <-s.InitError():
		if fe.Type != "Runtime.ImportModuleError" || fe.Message != "cannot load handler" || len(fe.StackTrace) != 1 {
			t.Errorf("init error: %+v", fe)
		}
		if fe.Error() != "Runtime.ImportModuleError: cannot load handler" {
			t.Errorf("Error() = %q", fe.Error())
		}
	case <-time.After(waitTimeout):
		t.Fatal("no init error")
	}
	// Only the first is delivered.
	c.post("/init/error", []byte(`{"errorMessage":"again"}`), false, nil)
	select {
	case fe := <-s.InitError():
		t.Errorf("second init error delivered: %+v", fe)
	case <-time.After(50 * time.Millisecond):
	}
	select {
	case <-s.Ready():
		t.Error("Ready closed without a /next poll")
	default:
	}
}

func TestReady(t *testing.T) {
	eachTransport(t, Options{}, testReady)
}

func testReady(t *testing.T, s *Server, c rtClient) {
	select {
	case <-s.Ready():
		t.Fatal("Ready before any poll")
	default:
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go c.next(ctx)
	select {
	case <-s.Ready():
	case <-time.After(waitTimeout):
		t.Fatal("Ready not closed after /next")
	}
}

func TestNextHeaders(t *testing.T) {
	eachTransport(t, Options{}, testNextHeaders)
}

// testNextHeaders checks an event's fields, which the socket client turns
// into the headers HTTP sends.
func testNextHeaders(t *testing.T, s *Server, c rtClient) {
	deadline := time.Now().Add(42 * time.Second)

	ch := invokeAsync(t.Context(), s, Event{
		RequestID:       "hdr-1",
		Payload:         []byte(`{"a":1}`),
		Deadline:        deadline,
		FunctionARN:     "arn:aws:lambda:local:000000000000:function:f",
		TraceID:         "Root=1-abc",
		ClientContext:   []byte(`{"custom":{"k":"v"}}`),
		CognitoIdentity: []byte(`{"cognitoIdentityId":"id"}`),
	})
	d := mustNext(t, c)
	want := map[string]string{
		headerRequestID:       "hdr-1",
		headerDeadlineMs:      strconv.FormatInt(deadline.UnixMilli(), 10),
		headerFunctionARN:     "arn:aws:lambda:local:000000000000:function:f",
		headerTraceID:         "Root=1-abc",
		headerClientContext:   `{"custom":{"k":"v"}}`,
		headerCognitoIdentity: `{"cognitoIdentityId":"id"}`,
	}
	if _, ok := c.(*httpClient); ok {
		want["Content-Type"] = "application/json"
	}
	for k, v := range want {
		if got := d.header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if string(d.payload) != `{"a":1}` {
		t.Errorf("payload %q", d.payload)
	}
	respond(t, c, d.id, `{}`)
	waitResult(t, ch)

	// Optional headers are absent when unset; a missing id is generated.
	ch = invokeAsync(t.Context(), s, Event{Payload: []byte(`{}`)})
	d = mustNext(t, c)
	for _, k := range []string{headerClientContext, headerCognitoIdentity} {
		if _, ok := d.header[k]; ok {
			t.Errorf("%s sent although unset", k)
		}
	}
	if len(d.id) != 36 {
		t.Errorf("generated request id %q", d.id)
	}
	respond(t, c, d.id, `{}`)
	waitResult(t, ch)
}

func TestRouting(t *testing.T) {
	_, addr := startServer(t, Options{})
	base := "http://" + addr
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	tests := []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/", 404},
		{http.MethodGet, "/2018-06-01/runtime/invocation/", 404},
		{http.MethodGet, "/2018-06-01/runtime/invocation/x/other", 404},
		{http.MethodGet, "/2020-01-01/runtime/invocation/next", 404},
		{http.MethodPost, "/2018-06-01/runtime/invocation/next", 405},
		{http.MethodGet, "/2018-06-01/runtime/invocation/x/response", 405},
		{http.MethodGet, "/2018-06-01/runtime/init/error", 405},
	}
	for _, tc := range tests {
		req, _ := http.NewRequest(tc.method, base+tc.path, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]string
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if resp.StatusCode != tc.status || err != nil || out["errorType"] == "" || out["errorMessage"] == "" {
			t.Errorf("%s %s: %d %v %v", tc.method, tc.path, resp.StatusCode, out, err)
		}
	}
}

func TestInvokeValidation(t *testing.T) {
	s, _ := startServer(t, Options{})
	if _, err := s.Invoke(t.Context(), Event{RequestID: "a/b", Deadline: time.Now().Add(time.Minute)}); err == nil {
		t.Error("request id with a slash accepted")
	}
	if _, err := s.Invoke(t.Context(), Event{RequestID: "nodeadline"}); err == nil {
		t.Error("event without any deadline accepted")
	}
	ch := invokeAsync(t.Context(), s, Event{RequestID: "dup"})
	waitFor(t, s, "event to be queued", func() bool { return len(s.queue) == 1 })
	if _, err := s.Invoke(t.Context(), Event{RequestID: "dup", Deadline: time.Now().Add(time.Minute)}); err == nil {
		t.Error("duplicate in-flight request id accepted")
	}
	s.Close()
	if r := waitResult(t, ch); !errors.Is(r.err, ErrClosed) {
		t.Errorf("queued Invoke after Close: %v", r.err)
	}
	if _, err := s.Invoke(t.Context(), Event{Deadline: time.Now().Add(time.Minute)}); !errors.Is(err, ErrClosed) {
		t.Errorf("Invoke after Close: %v", err)
	}
}

func TestCloseUnblocksInvoke(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) { testCloseUnblocksInvoke(t, tr) })
	}
}

func testCloseUnblocksInvoke(t *testing.T, tr transport) {
	s := New(Options{})
	addr, errc := serveOn(t, tr, s)
	c := newClientOn(t, tr, s, addr)

	delivered := invokeAsync(t.Context(), s, Event{RequestID: "delivered"})
	mustNext(t, c)
	queued := invokeAsync(t.Context(), s, Event{RequestID: "queued"})
	waitFor(t, s, "event to be queued", func() bool { return len(s.queue) == 1 })

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]<-chan invokeResult{"delivered": delivered, "queued": queued} {
		if r := waitResult(t, ch); !errors.Is(r.err, ErrClosed) {
			t.Errorf("%s Invoke: %v", name, r.err)
		}
	}
	if err := <-errc; err != nil {
		t.Errorf("Serve after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// Serving after Close returns at once.
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := s.Serve(ln2); err != nil {
		t.Errorf("Serve on closed server: %v", err)
	}
	ln3, _ := net.Listen("unix", socketPath(t))
	if err := s.ServeSocket(ln3); err != nil {
		t.Errorf("ServeSocket on closed server: %v", err)
	}
	checkNoLeaks(t)
}

func TestCloseWithParkedPoller(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) { testCloseWithParkedPoller(t, tr) })
	}
}

func testCloseWithParkedPoller(t *testing.T, tr transport) {
	s := New(Options{})
	addr, errc := serveOn(t, tr, s)
	c := newClientOn(t, tr, s, addr)

	pollErr := make(chan error, 1)
	go func() {
		_, err := c.next(context.Background())
		pollErr <- err
	}()
	waitFor(t, s, "poller to park", func() bool { return len(s.waiters) == 1 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-pollErr; err == nil {
		t.Error("parked poll succeeded after Close")
	}
	if err := <-errc; err != nil {
		t.Errorf("Serve after Close: %v", err)
	}
	checkNoLeaks(t)
}

// TestPollerDisconnect checks that an event handed to a poller whose
// connection has gone is delivered to another poller instead of being lost,
// however the disconnect races with the hand-off.
func TestPollerDisconnect(t *testing.T) {
	eachTransport(t, Options{}, testPollerDisconnect)
}

func testPollerDisconnect(t *testing.T, s *Server, c rtClient) {
	for i := range 20 {
		conn := rawPoll(t, c)
		waitFor(t, s, "raw poller to park", func() bool { return len(s.waiters) == 1 })
		if tc, ok := conn.(*net.TCPConn); ok && i%2 == 0 {
			tc.SetLinger(0) // reset rather than close, on every other round
		}
		conn.Close()
		if i%3 == 0 {
			// Sometimes let the server notice before the event arrives.
			waitFor(t, s, "raw poller to go", func() bool { return len(s.waiters) == 0 })
		}

		id := fmt.Sprintf("survivor-%d", i)
		ch := invokeAsync(t.Context(), s, Event{RequestID: id, Payload: []byte(`{}`)})
		d := mustNext(t, c)
		if d.id != id {
			t.Fatalf("round %d: got %s", i, d.id)
		}
		respond(t, c, d.id, `{}`)
		if r := waitResult(t, ch); r.err != nil {
			t.Fatalf("round %d: %v", i, r.err)
		}
	}
}

// TestConcurrentStress runs many pollers and invokers at once under -race.
func TestConcurrentStress(t *testing.T) {
	eachTransport(t, Options{}, testConcurrentStress)
}

func testConcurrentStress(t *testing.T, s *Server, c rtClient) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	var pollers sync.WaitGroup
	for range 8 {
		pollers.Go(func() {
			for ctx.Err() == nil {
				d, err := c.next(ctx)
				if err != nil {
					return
				}
				// Posts for events whose Invoke gave up are refused; fine.
				c.postResult(d.id, false, d.payload, "")
			}
		})
	}
	var invokers sync.WaitGroup
	for i := range 200 {
		invokers.Go(func() {
			ictx := ctx
			if i%5 == 0 {
				var c context.CancelFunc
				ictx, c = context.WithTimeout(ctx, time.Millisecond)
				defer c()
			}
			payload := []byte(strconv.Itoa(i))
			res, err := s.Invoke(ictx, Event{Payload: payload, Deadline: time.Now().Add(time.Minute)})
			if err == nil && !bytes.Equal(res.Payload, payload) {
				t.Errorf("invoke %d got %q", i, res.Payload)
			}
			if err != nil && i%5 != 0 {
				t.Errorf("invoke %d: %v", i, err)
			}
		})
	}
	invokers.Wait()
	cancel()
	pollers.Wait()
}

func base64Std(s string) string {
	return base64.StdEncoding.EncodeToString([]byte(s))
}

func TestConnectionLimit(t *testing.T) {
	s, addr := startServer(t, Options{MaxConns: 2})
	var conns []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	// A third connection is accepted by the kernel but not served until
	// one of the first two closes.
	third, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if _, err := third.Write([]byte("GET /2018-06-01/nope HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = third.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 64)
	if n, err := third.Read(buf); err == nil {
		t.Fatalf("third connection was served beyond the limit: %q", buf[:n])
	}
	conns[0].Close()
	_ = third.SetReadDeadline(time.Now().Add(waitTimeout))
	if n, err := third.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 404") {
		t.Fatalf("after a slot freed: %q, %v", buf[:n], err)
	}
	_ = s
}

// TestNotDeliveredWhenNeverReceived checks that every way an Invoke can end
// before a runtime received its event says ErrNotDelivered (the caller may
// run it elsewhere), and that one that was received does not.
func TestNotDeliveredWhenNeverReceived(t *testing.T) {
	future := time.Now().Add(time.Minute)

	// A server already closed (its instance died) and a context already
	// cancelled (the caller saw the death first).
	s := New(Options{})
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Invoke(cancelled, Event{RequestID: "late", Deadline: future}); !errors.Is(err, ErrNotDelivered) {
		t.Errorf("Invoke with a cancelled context: %v, want ErrNotDelivered", err)
	}
	s.Close()
	if _, err := s.Invoke(t.Context(), Event{RequestID: "closed", Deadline: future}); !errors.Is(err, ErrNotDelivered) {
		t.Errorf("Invoke on a closed server: %v, want ErrNotDelivered", err)
	}

	// An event handed to a poller that had not written it yet. The waiter
	// is registered by hand so the event stays in stateHanded.
	for _, end := range []string{"close", "cancel"} {
		s := New(Options{})
		w := &waiter{ch: make(chan *pending, 1)}
		s.mu.Lock()
		s.waiters = append(s.waiters, w)
		s.mu.Unlock()
		ctx, cancel := context.WithCancel(t.Context())
		ch := invokeAsync(ctx, s, Event{RequestID: "handed"})
		waitFor(t, s, "event to be handed", func() bool { return len(w.ch) == 1 })
		if end == "close" {
			s.Close()
		} else {
			cancel()
		}
		if r := waitResult(t, ch); !errors.Is(r.err, ErrNotDelivered) {
			t.Errorf("%s with the event handed to a poller: %v, want ErrNotDelivered", end, r.err)
		}
		p := <-w.ch
		s.mu.Lock()
		st := p.state
		s.mu.Unlock()
		if st != stateDone {
			t.Errorf("%s: handed event left in state %d; its poller would still write it", end, st)
		}
		cancel()
		s.Close()
	}

	// A delivered event is not "not delivered".
	eachTransport(t, Options{}, func(t *testing.T, s2 *Server, c rtClient) {
		delivered := invokeAsync(t.Context(), s2, Event{RequestID: "received"})
		mustNext(t, c)
		s2.Close()
		if r := waitResult(t, delivered); !errors.Is(r.err, ErrClosed) || errors.Is(r.err, ErrNotDelivered) {
			t.Errorf("delivered event: %v, want ErrClosed without ErrNotDelivered", r.err)
		}
	})
}

// A function's error is cut to workerapi's limits as soon as it is read:
// neither an invocation's error nor an init error can be made huge.
func TestFunctionErrorsAreBounded(t *testing.T) {
	huge := strings.Repeat("m", 10*workerapi.MaxErrorMessageBytes)
	frames := make([]string, 100)
	for i := range frames {
		frames[i] = strings.Repeat("f", 1<<10)
	}
	body, _ := json.Marshal(map[string]any{"errorMessage": huge, "errorType": huge, "stackTrace": frames})
	check := func(what string, fe *workerapi.FunctionError) {
		t.Helper()
		if len(fe.Message) > workerapi.MaxErrorMessageBytes+32 || len(fe.Type) > workerapi.MaxErrorTypeBytes+32 ||
			!strings.HasSuffix(fe.Message, "(truncated)") {
			t.Errorf("%s: message %d bytes, type %d bytes; want them cut", what, len(fe.Message), len(fe.Type))
		}
		n := 0
		for _, l := range fe.StackTrace {
			n += len(l)
		}
		if n > workerapi.MaxStackTraceBytes+64 || fe.StackTrace[len(fe.StackTrace)-1] != "… stack trace truncated" {
			t.Errorf("%s: stack trace %d bytes in %d lines; want it cut", what, n, len(fe.StackTrace))
		}
	}

	eachTransport(t, Options{}, func(t *testing.T, s *Server, c rtClient) {
		ch := invokeAsync(t.Context(), s, Event{Payload: []byte(`{}`)})
		d := mustNext(t, c)
		if status, out := c.postResult(d.id, true, body, ""); status != http.StatusAccepted {
			t.Fatalf("post: %d %v", status, out)
		}
		r := waitResult(t, ch)
		if r.err != nil || r.res.Error == nil {
			t.Fatalf("Invoke: %+v %v", r.res, r.err)
		}
		check("invocation error", r.res.Error)
	})

	s2, addr2 := startServer(t, Options{})
	if status, out := newClient(t, addr2).post("/init/error", body, false, nil); status != http.StatusAccepted {
		t.Fatalf("init error post: %d %v", status, out)
	}
	select {
	case fe := <-s2.InitError():
		check("init error", fe)
	case <-time.After(5 * time.Second):
		t.Fatal("no init error")
	}
}
