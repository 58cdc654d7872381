package runtimes

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/node/runtimeapi/frame"
	"github.com/baton-faas/baton/internal/runtimes/node"
	"github.com/baton-faas/baton/internal/runtimes/provided"
	"github.com/baton-faas/baton/internal/runtimes/python"
)

const waitTimeout = time.Minute

// ---------------------------------------------------------------------------
// A minimal Runtime API: hands out queued events on /next and records what
// the runtime posts back.

type fakeEvent struct {
	ID      string
	Body    []byte
	Headers map[string]string
}

type posted struct {
	Kind      string // "response", "error" or "init/error"
	ID        string
	Body      []byte
	ErrorType string // Lambda-Runtime-Function-Error-Type header
}

type fakeAPI struct {
	t         *testing.T
	srv       *httptest.Server
	socket    string // the runtime socket's path, when offered
	queue     chan fakeEvent
	handedOut chan fakeEvent
	nextCalls chan time.Time
	posts     chan posted
	stop      chan struct{}

	release         chan struct{} // closing it releases all /release waiters
	releaseWaiters  atomic.Int32
	releaseArrivals chan struct{}
}

// transport is how the fake offers the invocation loop: over HTTP only,
// or over the runtime socket too (which the runtime must then use).
type transport string

const (
	overHTTP   transport = "http"
	overSocket transport = "socket"
)

// eachTransport runs f once per transport.
func eachTransport(t *testing.T, f func(t *testing.T, tr transport)) {
	for _, tr := range []transport{overHTTP, overSocket} {
		t.Run(string(tr), func(t *testing.T) { f(t, tr) })
	}
}

func newFakeAPI(t *testing.T, tr transport) *fakeAPI {
	t.Helper()
	f := &fakeAPI{
		t:               t,
		queue:           make(chan fakeEvent, 64),
		handedOut:       make(chan fakeEvent, 64),
		nextCalls:       make(chan time.Time, 64),
		posts:           make(chan posted, 64),
		stop:            make(chan struct{}),
		release:         make(chan struct{}),
		releaseArrivals: make(chan struct{}, 64),
	}
	const prefix = "/2018-06-01/runtime"
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+prefix+"/invocation/next", f.next)
	mux.HandleFunc("POST "+prefix+"/invocation/{id}/response", f.record("response"))
	mux.HandleFunc("POST "+prefix+"/invocation/{id}/error", f.record("error"))
	mux.HandleFunc("POST "+prefix+"/init/error", f.record("init/error"))
	mux.HandleFunc("GET /release", func(w http.ResponseWriter, r *http.Request) {
		f.releaseWaiters.Add(1)
		f.releaseArrivals <- struct{}{}
		select {
		case <-f.release:
		case <-f.stop:
		case <-r.Context().Done():
		}
		io.WriteString(w, "released")
	})
	f.srv = httptest.NewServer(mux)
	var sock *socketServer
	if tr == overSocket {
		sock = f.serveSocket(t)
	}
	t.Cleanup(func() {
		// Long polls only end when told to; the runtime processes are
		// killed by cleanups registered after this one, so they run first.
		close(f.stop)
		f.srv.CloseClientConnections()
		f.srv.Close()
		sock.close()
	})
	return f
}

// socketServer is the fake's runtime socket.
type socketServer struct {
	dir   string
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

// serveSocket serves the invocation loop on a unix socket in the framed
// protocol of package runtimeapi/frame.
func (f *fakeAPI) serveSocket(t *testing.T) *socketServer {
	t.Helper()
	// A short path: sun_path holds 108 bytes, which TempDir may exceed.
	dir, err := os.MkdirTemp("", "rtfake")
	if err != nil {
		t.Fatal(err)
	}
	f.socket = filepath.Join(dir, "s")
	ln, err := net.Listen("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	s := &socketServer{dir: dir, ln: ln}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Go(func() { f.serveSocketConn(c) })
		}
	})
	return s
}

func (s *socketServer) close() {
	if s == nil {
		return
	}
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	os.RemoveAll(s.dir)
}

func (f *fakeAPI) serveSocketConn(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		kind, n, err := frame.ReadHeader(br)
		if err != nil {
			return
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(br, body); err != nil {
			return
		}
		switch kind {
		case frame.Next:
			f.nextCalls <- time.Now()
			select {
			case ev := <-f.queue:
				fields := frame.EventFields{
					RequestID: ev.ID, DeadlineMs: time.Now().Add(30 * time.Second).UnixMilli(),
					FunctionARN: "arn:aws:lambda:us-east-1:123456789012:function:fn", TraceID: "Root=1-trace-" + ev.ID,
					ClientContext:   []byte(ev.Headers["Lambda-Runtime-Client-Context"]),
					CognitoIdentity: []byte(ev.Headers["Lambda-Runtime-Cognito-Identity"]),
				}
				f.handedOut <- ev
				if _, err := c.Write(append(frame.AppendEventHead(nil, &fields, len(ev.Body)), ev.Body...)); err != nil {
					return
				}
			case <-f.stop:
				return
			}
		case frame.Response:
			id, payload, err := frame.ParseResponse(body)
			if err != nil {
				f.t.Errorf("runtime sent a malformed response: %v", err)
				return
			}
			f.posts <- posted{Kind: "response", ID: id, Body: payload}
		case frame.Error:
			id, typ, doc, err := frame.ParseError(body)
			if err != nil {
				f.t.Errorf("runtime sent a malformed error: %v", err)
				return
			}
			f.posts <- posted{Kind: "error", ID: id, Body: doc, ErrorType: typ}
		default:
			f.t.Errorf("runtime sent a %s frame", kind)
			return
		}
	}
}

func (f *fakeAPI) addr() string { return strings.TrimPrefix(f.srv.URL, "http://") }

func (f *fakeAPI) next(w http.ResponseWriter, r *http.Request) {
	if f.socket != "" {
		f.t.Errorf("the runtime polled /next over HTTP although it was offered the socket")
	}
	f.nextCalls <- time.Now()
	select {
	case ev := <-f.queue:
		h := w.Header()
		h.Set("Lambda-Runtime-Aws-Request-Id", ev.ID)
		h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(30*time.Second).UnixMilli(), 10))
		h.Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:fn")
		h.Set("Lambda-Runtime-Trace-Id", "Root=1-trace-"+ev.ID)
		for k, v := range ev.Headers {
			h.Set(k, v)
		}
		h.Set("Content-Type", "application/json")
		f.handedOut <- ev
		w.Write(ev.Body)
	case <-f.stop:
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
	case <-r.Context().Done():
	}
}

func (f *fakeAPI) record(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.posts <- posted{
			Kind:      kind,
			ID:        r.PathValue("id"),
			Body:      body,
			ErrorType: r.Header.Get("Lambda-Runtime-Function-Error-Type"),
		}
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"status":"OK"}`)
	}
}

func (f *fakeAPI) enqueue(t *testing.T, id string, event any, headers map[string]string) {
	t.Helper()
	body, err := json.Marshal(event)
	if err != nil {
		t.Fatalf("encode event: %v", err)
	}
	f.queue <- fakeEvent{ID: id, Body: body, Headers: headers}
}

func (f *fakeAPI) waitPost(t *testing.T, p *proc) posted {
	t.Helper()
	select {
	case got := <-f.posts:
		return got
	case <-time.After(waitTimeout):
		t.Fatalf("no post from the runtime within %v; stderr:\n%s", waitTimeout, p.stderrText())
	}
	return posted{}
}

// ---------------------------------------------------------------------------
// Runtime processes.

type proc struct {
	cmd    *exec.Cmd
	stdout chan string
	exited chan struct{}
	err    error // valid after exited is closed

	mu     sync.Mutex
	stderr bytes.Buffer
}

func (p *proc) stderrText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

func startProc(t *testing.T, dir string, env []string, name string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, stdout: make(chan string, 256), exited: make(chan struct{})}
	cmd.Stdout = outW
	cmd.Stderr = &lockedWriter{mu: &p.mu, w: &p.stderr}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	outW.Close()
	go func() {
		defer outR.Close()
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			p.stdout <- sc.Text()
		}
		close(p.stdout)
	}()
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("%s stderr:\n%s", name, p.stderrText())
		}
	})
	return p
}

func (p *proc) waitExit(t *testing.T) error {
	t.Helper()
	select {
	case <-p.exited:
		return p.err
	case <-time.After(waitTimeout):
		t.Fatalf("process did not exit within %v", waitTimeout)
	}
	return nil
}

// stdoutLines collects n lines of stdout.
func (p *proc) stdoutLines(t *testing.T, n int) []string {
	t.Helper()
	var lines []string
	deadline := time.After(waitTimeout)
	for len(lines) < n {
		select {
		case l, ok := <-p.stdout:
			if !ok {
				t.Fatalf("stdout closed after %d of %d lines: %q", len(lines), n, lines)
			}
			lines = append(lines, l)
		case <-deadline:
			t.Fatalf("got %d of %d stdout lines: %q", len(lines), n, lines)
		}
	}
	return lines
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func installed(t *testing.T) Paths {
	t.Helper()
	p, err := Install(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func testdataDir(t *testing.T, sub string) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", sub))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func lambdaEnv(api *fakeAPI, handler, taskRoot string) []string {
	var socket []string
	if api.socket != "" {
		socket = []string{"BATON_RUNTIME_SOCKET=" + api.socket}
	}
	return append(socket,
		"_HANDLER="+handler,
		"LAMBDA_TASK_ROOT="+taskRoot,
		"AWS_LAMBDA_RUNTIME_API="+api.addr(),
		"AWS_LAMBDA_FUNCTION_NAME=fn",
		"AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256",
		"AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/fn",
		"AWS_LAMBDA_LOG_STREAM_NAME=2024/01/01/[$LATEST]abc",
		// Keep testdata free of __pycache__ directories.
		"PYTHONDONTWRITEBYTECODE=1",
	)
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	return m
}

func requireTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not found in PATH; skipping runtime test", name)
	}
}

// ---------------------------------------------------------------------------
// Install.

func TestInstall(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "rt")
	p, err := Install(dir)
	if err != nil {
		t.Fatal(err)
	}
	pyFile, pythonSource := python.Driver{}.ClientFile()
	_, nodeSource := node.Driver{}.ClientFile()
	if p.Client(python.Name) != filepath.Join(dir, pyFile) || p.Client(provided.Name) != "" {
		t.Errorf("install paths %+v", p)
	}
	for path, want := range map[string][]byte{p.Client(python.Name): pythonSource, p.Client(node.Name): nodeSource} {
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s does not hold the embedded script", path)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o644 {
			t.Errorf("%s mode %v, want 0644", path, fi.Mode().Perm())
		}
	}
	// A stale copy is replaced, an identical one is left alone.
	if err := os.WriteFile(p.Client(node.Name), []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(p.Client(python.Name))
	if _, err := Install(dir); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p.Client(node.Name)); !bytes.Equal(got, nodeSource) {
		t.Error("stale node script was not replaced")
	}
	after, _ := os.Stat(p.Client(python.Name))
	if !os.SameFile(before, after) {
		t.Error("identical python script was rewritten")
	}
	// The clients, and the directories of Baton's modules for functions.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 4 {
		t.Errorf("install left extra files: %v", entries)
	}
	for _, lib := range []string{"python/baton/data.py", "python/baton/__init__.py", "node_modules/baton/index.js"} {
		if fi, err := os.Stat(filepath.Join(dir, lib)); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: %v", lib, err)
		}
	}
}

// ---------------------------------------------------------------------------
// Node.

func startNode(t *testing.T, api *fakeAPI, handler string, extraEnv ...string) *proc {
	t.Helper()
	requireTool(t, "node")
	root := testdataDir(t, "node")
	env := append(lambdaEnv(api, handler, root), extraEnv...)
	return startProc(t, t.TempDir(), env, "node", installed(t).Client(node.Name))
}

type logLine struct {
	Time, RequestID, Level, Message string
}

func parseLogLine(t *testing.T, s string) logLine {
	t.Helper()
	f := strings.SplitN(s, "\t", 4)
	if len(f) != 4 {
		t.Fatalf("log line %q does not have 4 tab-separated fields", s)
	}
	if _, err := time.Parse(time.RFC3339Nano, f[0]); err != nil {
		t.Errorf("log line %q: bad time: %v", s, err)
	}
	return logLine{f[0], f[1], f[2], f[3]}
}

func TestNodeConcurrentInvocationsAndLogs(t *testing.T) {
	eachTransport(t, testNodeConcurrentInvocationsAndLogs)
}

func testNodeConcurrentInvocationsAndLogs(t *testing.T, tr transport) {
	api := newFakeAPI(t, tr)
	p := startNode(t, api, "barrier.handler", "BATON_CONCURRENCY=4")

	const n = 4
	for i := range n {
		api.enqueue(t, fmt.Sprintf("req-%d", i), map[string]any{"n": i, "releaseURL": api.srv.URL + "/release"}, nil)
	}
	// All four handlers must be parked on the barrier at the same time:
	// with less concurrency the runtime would not ask for the next event
	// before posting a result, which the barrier withholds.
	for i := range n {
		select {
		case <-api.releaseArrivals:
		case <-time.After(waitTimeout):
			t.Fatalf("only %d of %d invocations reached the barrier; stderr:\n%s", i, n, p.stderrText())
		}
	}
	select {
	case got := <-api.posts:
		t.Fatalf("result posted before the barrier was released: %+v", got)
	default:
	}
	close(api.release)

	ids := map[string]bool{}
	for range n {
		got := api.waitPost(t, p)
		if got.Kind != "response" {
			t.Fatalf("got %s %s: %s", got.Kind, got.ID, got.Body)
		}
		body := decode(t, got.Body)
		if want := fmt.Sprintf("req-%v", body["n"]); got.ID != want || body["requestId"] != want {
			t.Errorf("response %s carries %v", got.ID, body)
		}
		ids[got.ID] = true
	}
	if len(ids) != n {
		t.Errorf("responses for %d distinct ids, want %d", len(ids), n)
	}

	// Every line must carry the id of the invocation that printed it,
	// although all four ran interleaved.
	for _, raw := range p.stdoutLines(t, 2*n) {
		l := parseLogLine(t, raw)
		if l.Level != "INFO" {
			t.Errorf("stdout line %q: level %q, want INFO", raw, l.Level)
		}
		var word string
		var num int
		if _, err := fmt.Sscanf(l.Message, "%s %d", &word, &num); err != nil {
			t.Fatalf("unexpected message in %q", raw)
		}
		if want := fmt.Sprintf("req-%d", num); l.RequestID != want {
			t.Errorf("line %q attributed to %q, want %q", raw, l.RequestID, want)
		}
		if word == "end" && !strings.Contains(l.Message, "multi\rline") {
			t.Errorf("newline in message not replaced by \\r: %q", raw)
		}
	}
	// stderr got the console.error lines, one per invocation.
	deadline := time.Now().Add(waitTimeout)
	for strings.Count(p.stderrText(), "\tERROR\terr ") < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	for _, raw := range strings.Split(strings.TrimSpace(p.stderrText()), "\n") {
		if !strings.Contains(raw, "\tERROR\terr ") {
			continue
		}
		l := parseLogLine(t, raw)
		var num int
		fmt.Sscanf(l.Message, "err %d", &num)
		if want := fmt.Sprintf("req-%d", num); l.RequestID != want {
			t.Errorf("stderr line %q attributed to %q, want %q", raw, l.RequestID, want)
		}
	}
	if c := strings.Count(p.stderrText(), "\tERROR\terr "); c != n {
		t.Errorf("%d console.error lines on stderr, want %d", c, n)
	}
}

func TestNodeCallbackHandler(t *testing.T) { eachTransport(t, testNodeCallbackHandler) }

func testNodeCallbackHandler(t *testing.T, tr transport) {
	api := newFakeAPI(t, tr)
	p := startNode(t, api, "callback.handler")
	api.enqueue(t, "cb-1", map[string]any{"x": "hi"}, nil)
	got := api.waitPost(t, p)
	if got.Kind != "response" || got.ID != "cb-1" {
		t.Fatalf("got %s %s: %s", got.Kind, got.ID, got.Body)
	}
	body := decode(t, got.Body)
	if body["viaCallback"] != "hi" || body["requestId"] != "cb-1" {
		t.Errorf("response %v", body)
	}
}

func TestNodeCallbackError(t *testing.T) { eachTransport(t, testNodeCallbackError) }

func testNodeCallbackError(t *testing.T, tr transport) {
	api := newFakeAPI(t, tr)
	p := startNode(t, api, "callback.fails")
	api.enqueue(t, "cb-2", map[string]any{"x": "y"}, nil)
	got := api.waitPost(t, p)
	if got.Kind != "error" || got.ID != "cb-2" || got.ErrorType != "RangeError" {
		t.Fatalf("got %+v (%s)", got, got.Body)
	}
	if body := decode(t, got.Body); body["errorMessage"] != "callback failed: y" {
		t.Errorf("error body %v", body)
	}
}

func TestNodeThrownError(t *testing.T) { eachTransport(t, testNodeThrownError) }

func testNodeThrownError(t *testing.T, tr transport) {
	api := newFakeAPI(t, tr)
	p := startNode(t, api, "throws.handler")
	api.enqueue(t, "err-1", map[string]any{"x": 42}, nil)
	got := api.waitPost(t, p)
	if got.Kind != "error" || got.ID != "err-1" {
		t.Fatalf("got %s %s: %s", got.Kind, got.ID, got.Body)
	}
	if got.ErrorType != "ValidationError" {
		t.Errorf("error type header %q", got.ErrorType)
	}
	var body struct {
		ErrorMessage string   `json:"errorMessage"`
		ErrorType    string   `json:"errorType"`
		StackTrace   []string `json:"stackTrace"`
	}
	if err := json.Unmarshal(got.Body, &body); err != nil {
		t.Fatalf("error body %q: %v", got.Body, err)
	}
	if body.ErrorMessage != "bad input: 42" || body.ErrorType != "ValidationError" {
		t.Errorf("error body %+v", body)
	}
	if !slices.ContainsFunc(body.StackTrace, func(s string) bool { return strings.Contains(s, "throws.js") }) {
		t.Errorf("stack trace does not point at the handler: %q", body.StackTrace)
	}

	// The process survives a failed invocation.
	api.enqueue(t, "err-2", map[string]any{"x": 1}, nil)
	if got := api.waitPost(t, p); got.ID != "err-2" {
		t.Errorf("second invocation: %+v", got)
	}
}

func TestNodeStrayErrorsFailTheirInvocation(t *testing.T) {
	eachTransport(t, testNodeStrayErrorsFailTheirInvocation)
}

func testNodeStrayErrorsFailTheirInvocation(t *testing.T, tr transport) {
	for _, tc := range []struct{ handler, wantType, wantMsg string }{
		{"throws.stray", "TypeError", "stray a"},
		{"throws.rejects", "Error", "rejected a"},
	} {
		t.Run(tc.handler, func(t *testing.T) {
			api := newFakeAPI(t, tr)
			p := startNode(t, api, tc.handler)
			api.enqueue(t, "stray-1", map[string]any{"x": "a"}, nil)
			got := api.waitPost(t, p)
			if got.Kind != "error" || got.ID != "stray-1" || got.ErrorType != tc.wantType {
				t.Fatalf("got %+v (%s)", got, got.Body)
			}
			if body := decode(t, got.Body); body["errorMessage"] != tc.wantMsg {
				t.Errorf("error body %v", body)
			}
			// Attributed, so the process keeps serving.
			api.enqueue(t, "stray-2", map[string]any{"x": "b"}, nil)
			if got := api.waitPost(t, p); got.ID != "stray-2" {
				t.Errorf("second invocation: %+v", got)
			}
		})
	}
}

func TestNodeUnattributableErrorExits(t *testing.T) {
	eachTransport(t, testNodeUnattributableErrorExits)
}

func testNodeUnattributableErrorExits(t *testing.T, tr transport) {
	api := newFakeAPI(t, tr)
	p := startNode(t, api, "crashlater.handler")
	err := p.waitExit(t)
	if err == nil || p.cmd.ProcessState.ExitCode() == 0 {
		t.Fatalf("node exited with %v, want non-zero", err)
	}
	if !strings.Contains(p.stderrText(), "outside any invocation") {
		t.Errorf("stderr does not explain the exit:\n%s", p.stderrText())
	}
}

func TestNodeUndefinedResultIsNull(t *testing.T) { eachTransport(t, testNodeUndefinedResultIsNull) }

func testNodeUndefinedResultIsNull(t *testing.T, tr transport) {
	api := newFakeAPI(t, tr)
	p := startNode(t, api, "throws.undef")
	api.enqueue(t, "u-1", map[string]any{}, nil)
	got := api.waitPost(t, p)
	if got.Kind != "response" || string(got.Body) != "null" {
		t.Fatalf("got %s %q", got.Kind, got.Body)
	}
}

func TestNodeESMHandler(t *testing.T) { eachTransport(t, testNodeESMHandler) }

func testNodeESMHandler(t *testing.T, tr transport) {
	api := newFakeAPI(t, tr)
	p := startNode(t, api, "esm.handler")
	api.enqueue(t, "esm-1", map[string]any{"k": "v"}, nil)
	got := api.waitPost(t, p)
	if got.Kind != "response" {
		t.Fatalf("got %s: %s", got.Kind, got.Body)
	}
	body := decode(t, got.Body)
	if body["esm"] != true || body["functionName"] != "fn" {
		t.Errorf("response %v", body)
	}
	if g, _ := body["got"].(map[string]any); g["k"] != "v" {
		t.Errorf("event not passed through: %v", body)
	}
}

func TestNodeNestedExport(t *testing.T) { eachTransport(t, testNodeNestedExport) }

func testNodeNestedExport(t *testing.T, tr transport) {
	api := newFakeAPI(t, tr)
	p := startNode(t, api, "nested.api.v1")
	api.enqueue(t, "nest-1", map[string]any{"x": 7}, nil)
	got := api.waitPost(t, p)
	if got.Kind != "response" || string(got.Body) != `{"nested":7}` {
		t.Fatalf("got %s %s", got.Kind, got.Body)
	}
}

func TestNodeContext(t *testing.T) { eachTransport(t, testNodeContext) }

func testNodeContext(t *testing.T, tr transport) {
	api := newFakeAPI(t, tr)
	p := startNode(t, api, "context.handler")
	api.enqueue(t, "ctx-1", map[string]any{}, map[string]string{
		"Lambda-Runtime-Client-Context":   `{"custom":{"a":"b"}}`,
		"Lambda-Runtime-Cognito-Identity": `{"cognitoIdentityId":"id-1"}`,
	})
	got := api.waitPost(t, p)
	if got.Kind != "response" {
		t.Fatalf("got %s: %s", got.Kind, got.Body)
	}
	body := decode(t, got.Body)
	want := map[string]any{
		"awsRequestId":                   "ctx-1",
		"functionName":                   "fn",
		"functionVersion":                "$LATEST",
		"invokedFunctionArn":             "arn:aws:lambda:us-east-1:123456789012:function:fn",
		"memoryLimitInMB":                "256",
		"logGroupName":                   "/aws/lambda/fn",
		"logStreamName":                  "2024/01/01/[$LATEST]abc",
		"callbackWaitsForEmptyEventLoop": true,
		"cwd":                            testdataDir(t, "node"),
	}
	for k, v := range want {
		if body[k] != v {
			t.Errorf("context.%s = %v, want %v", k, body[k], v)
		}
	}
	if r, _ := body["remaining"].(float64); r <= 0 || r > 30000 {
		t.Errorf("getRemainingTimeInMillis() = %v", body["remaining"])
	}
	if cc, _ := body["clientContext"].(map[string]any); cc == nil || fmt.Sprint(cc["custom"]) != "map[a:b]" {
		t.Errorf("clientContext = %v", body["clientContext"])
	}
	if id, _ := body["identity"].(map[string]any); id == nil || id["cognitoIdentityId"] != "id-1" {
		t.Errorf("identity = %v", body["identity"])
	}
}

func TestNodeInitError(t *testing.T) { eachTransport(t, testNodeInitError) }

func testNodeInitError(t *testing.T, tr transport) {
	api := newFakeAPI(t, tr)
	p := startNode(t, api, "missing.handler")
	got := api.waitPost(t, p)
	if got.Kind != "init/error" || got.ErrorType != "Runtime.ImportModuleError" {
		t.Fatalf("got %+v (%s)", got, got.Body)
	}
	if body := decode(t, got.Body); !strings.Contains(fmt.Sprint(body["errorMessage"]), "missing") {
		t.Errorf("error body %v", body)
	}
	err := p.waitExit(t)
	if err == nil || p.cmd.ProcessState.ExitCode() == 0 {
		t.Errorf("node exited with %v after an init error, want non-zero", err)
	}
}

// ---------------------------------------------------------------------------
// Python plain mode.

func startPython(t *testing.T, api *fakeAPI, handler string) *proc {
	t.Helper()
	requireTool(t, "python3")
	root := testdataDir(t, "python")
	return startProc(t, t.TempDir(), lambdaEnv(api, handler, root), "python3", "-u", installed(t).Client(python.Name))
}

func TestPythonResult(t *testing.T) { eachTransport(t, testPythonResult) }

func testPythonResult(t *testing.T, tr transport) {
	api := newFakeAPI(t, tr)
	p := startPython(t, api, "app.handler")
	api.enqueue(t, "py-1", map[string]any{"x": "one"}, nil)
	got := api.waitPost(t, p)
	if got.Kind != "response" || got.ID != "py-1" || string(got.Body) != `{"echo": {"x": "one"}}` {
		t.Fatalf("got %s %s: %s", got.Kind, got.ID, got.Body)
	}
	// The print was flushed before the result was posted.
	select {
	case line := <-p.stdout:
		if line != "handling one" {
			t.Errorf("stdout %q", line)
		}
	case <-time.After(waitTimeout):
		t.Fatal("no stdout from the handler")
	}
	// And the loop goes on over the same runtime.
	api.enqueue(t, "py-2", map[string]any{"x": "two"}, nil)
	if got := api.waitPost(t, p); got.ID != "py-2" || got.Kind != "response" {
		t.Errorf("second invocation: %+v", got)
	}
}

// Large events arrive chunked from the fake API over HTTP (it sets no
// Content-Length) and large responses are sent in two writes: both paths of
// the runtime's own HTTP client, over one kept-alive connection; over the
// socket, large results go out in writes of their own.
func TestPythonLargePayloads(t *testing.T) { eachTransport(t, testPythonLargePayloads) }

func testPythonLargePayloads(t *testing.T, tr transport) {
	api := newFakeAPI(t, tr)
	p := startPython(t, api, "app.echo")
	for i, size := range []int{10, 100 << 10, 1 << 20} {
		x := strings.Repeat("a", size)
		id := fmt.Sprintf("py-large-%d", i)
		api.enqueue(t, id, map[string]any{"x": x}, nil)
		got := api.waitPost(t, p)
		want := `{"echo": {"x": "` + x + `"}}`
		if got.Kind != "response" || got.ID != id || string(got.Body) != want {
			t.Fatalf("%d bytes: got %s %s with %d bytes: %.300s", size, got.Kind, got.ID, len(got.Body), got.Body)
		}
	}
}

// Without -u stdout is block-buffered into a pipe; the runtime must still
// flush what the invocation printed before posting its result.
func TestPythonFlushesOutputWithoutUnbufferedMode(t *testing.T) {
	eachTransport(t, testPythonFlushesOutputWithoutUnbufferedMode)
}

func testPythonFlushesOutputWithoutUnbufferedMode(t *testing.T, tr transport) {
	requireTool(t, "python3")
	api := newFakeAPI(t, tr)
	env := append(lambdaEnv(api, "app.handler", testdataDir(t, "python")), "PYTHONUNBUFFERED=")
	p := startProc(t, t.TempDir(), env, "python3", installed(t).Client(python.Name))
	api.enqueue(t, "py-f", map[string]any{"x": "buffered"}, nil)
	if got := api.waitPost(t, p); got.Kind != "response" {
		t.Fatalf("got %s: %s", got.Kind, got.Body)
	}
	// The process now idles in its next long poll, so nothing else would
	// flush the line.
	if lines := p.stdoutLines(t, 1); lines[0] != "handling buffered" {
		t.Errorf("stdout %q", lines)
	}
}

func TestPythonException(t *testing.T) { eachTransport(t, testPythonException) }

func testPythonException(t *testing.T, tr transport) {
	api := newFakeAPI(t, tr)
	p := startPython(t, api, "app.fail")
	api.enqueue(t, "py-err", map[string]any{"x": 3}, nil)
	got := api.waitPost(t, p)
	if got.Kind != "error" || got.ID != "py-err" || got.ErrorType != "ValueError" {
		t.Fatalf("got %+v (%s)", got, got.Body)
	}
	var body struct {
		ErrorMessage string   `json:"errorMessage"`
		ErrorType    string   `json:"errorType"`
		StackTrace   []string `json:"stackTrace"`
	}
	if err := json.Unmarshal(got.Body, &body); err != nil {
		t.Fatal(err)
	}
	if body.ErrorMessage != "bad value: 3" || body.ErrorType != "ValueError" {
		t.Errorf("error body %+v", body)
	}
	if len(body.StackTrace) == 0 || !strings.Contains(body.StackTrace[len(body.StackTrace)-1], `raise ValueError("bad value`) {
		t.Errorf("stack trace %q", body.StackTrace)
	}
	for _, frame := range body.StackTrace {
		if strings.Contains(frame, PythonFile) {
			t.Errorf("stack trace shows the runtime's own frame: %q", frame)
		}
	}
}

func TestPythonMarshalError(t *testing.T) { eachTransport(t, testPythonMarshalError) }

func testPythonMarshalError(t *testing.T, tr transport) {
	api := newFakeAPI(t, tr)
	p := startPython(t, api, "app.unmarshalable")
	api.enqueue(t, "py-m", map[string]any{}, nil)
	got := api.waitPost(t, p)
	if got.Kind != "error" || got.ErrorType != "Runtime.MarshalError" {
		t.Fatalf("got %+v (%s)", got, got.Body)
	}
	if body := decode(t, got.Body); body["errorType"] != "Runtime.MarshalError" {
		t.Errorf("error body %v", body)
	}
}

func TestPythonContext(t *testing.T) { eachTransport(t, testPythonContext) }

func testPythonContext(t *testing.T, tr transport) {
	api := newFakeAPI(t, tr)
	p := startPython(t, api, "app.ctx")
	api.enqueue(t, "py-ctx", map[string]any{}, map[string]string{
		"Lambda-Runtime-Client-Context":   `{"client":{"app_title":"app"},"custom":{"a":"b"}}`,
		"Lambda-Runtime-Cognito-Identity": `{"cognitoIdentityId":"id-1","cognitoIdentityPoolId":"pool"}`,
	})
	got := api.waitPost(t, p)
	if got.Kind != "response" {
		t.Fatalf("got %s: %s", got.Kind, got.Body)
	}
	body := decode(t, got.Body)
	want := map[string]any{
		"aws_request_id":       "py-ctx",
		"function_name":        "fn",
		"function_version":     "$LATEST",
		"invoked_function_arn": "arn:aws:lambda:us-east-1:123456789012:function:fn",
		"memory_limit_in_mb":   "256",
		"log_group_name":       "/aws/lambda/fn",
		"log_stream_name":      "2024/01/01/[$LATEST]abc",
		"cognito_identity_id":  "id-1",
		"client_app_title":     "app",
		"trace_env":            "Root=1-trace-py-ctx",
		"cwd":                  testdataDir(t, "python"),
	}
	for k, v := range want {
		if body[k] != v {
			t.Errorf("%s = %v, want %v", k, body[k], v)
		}
	}
	if r, _ := body["remaining"].(float64); r <= 0 || r > 30000 {
		t.Errorf("get_remaining_time_in_millis() = %v", body["remaining"])
	}
	if fmt.Sprint(body["client_custom"]) != "map[a:b]" {
		t.Errorf("client_context.custom = %v", body["client_custom"])
	}
}

func TestPythonInitError(t *testing.T) { eachTransport(t, testPythonInitError) }

func testPythonInitError(t *testing.T, tr transport) {
	api := newFakeAPI(t, tr)
	p := startPython(t, api, "broken.handler")
	got := api.waitPost(t, p)
	if got.Kind != "init/error" || got.ErrorType != "Runtime.ImportModuleError" {
		t.Fatalf("got %+v (%s)", got, got.Body)
	}
	if body := decode(t, got.Body); !strings.Contains(fmt.Sprint(body["errorMessage"]), "baton_test_module_that_does_not_exist") {
		t.Errorf("error body %v", body)
	}
	if err := p.waitExit(t); err == nil {
		t.Error("python exited 0 after an init error")
	}
}

// TestPythonStartupLatency measures plain start to first /next, the number
// the zygote's fork path is compared with.
func TestPythonStartupLatency(t *testing.T) { eachTransport(t, testPythonStartupLatency) }

func testPythonStartupLatency(t *testing.T, tr transport) {
	requireTool(t, "python3")
	paths := installed(t)
	root := testdataDir(t, "python")
	var samples []time.Duration
	for range 5 {
		api := newFakeAPI(t, tr)
		start := time.Now()
		p := startProc(t, t.TempDir(), lambdaEnv(api, "app.handler", root), "python3", "-u", paths.Client(python.Name))
		select {
		case at := <-api.nextCalls:
			samples = append(samples, at.Sub(start))
		case <-time.After(waitTimeout):
			t.Fatalf("no /next; stderr:\n%s", p.stderrText())
		}
		p.cmd.Process.Kill()
		<-p.exited
	}
	slices.Sort(samples)
	t.Logf("python3 plain start -> first /next: median %v (samples %v)", samples[len(samples)/2], samples)
}

// ---------------------------------------------------------------------------
// JSON edge cases, both runtimes.

// enqueueRaw queues an event body as is.
func (f *fakeAPI) enqueueRaw(id string, body []byte) {
	f.queue <- fakeEvent{ID: id, Body: body}
}

// deepJSON is a valid document nested depth arrays deep.
func deepJSON(depth int) []byte {
	return []byte(strings.Repeat("[", depth) + strings.Repeat("]", depth))
}

// wantFunctionError checks that the runtime answered id with an error of
// type typ and then goes on serving: the instance survived.
func wantFunctionError(t *testing.T, api *fakeAPI, p *proc, id, typ string) {
	t.Helper()
	got := api.waitPost(t, p)
	if got.Kind != "error" || got.ID != id || got.ErrorType != typ {
		t.Fatalf("got %s %s type %q: %s\nstderr:\n%s", got.Kind, got.ID, got.ErrorType, got.Body, p.stderrText())
	}
	if body := decode(t, got.Body); body["errorType"] != typ || body["errorMessage"] == "" {
		t.Errorf("error body %v", body)
	}
}

func wantAlive(t *testing.T, api *fakeAPI, p *proc, id string) {
	t.Helper()
	api.enqueue(t, id, map[string]any{"x": 1}, nil)
	if got := api.waitPost(t, p); got.Kind != "response" || got.ID != id {
		t.Fatalf("after the failed invocation: got %s %s: %s\nstderr:\n%s", got.Kind, got.ID, got.Body, p.stderrText())
	}
}

func TestPythonDeepEventIsUnmarshalError(t *testing.T) {
	eachTransport(t, testPythonDeepEventIsUnmarshalError)
}

func testPythonDeepEventIsUnmarshalError(t *testing.T, tr transport) {
	api := newFakeAPI(t, tr)
	p := startPython(t, api, "app.echo")
	api.enqueueRaw("py-deep", deepJSON(10000))
	wantFunctionError(t, api, p, "py-deep", "Runtime.UnmarshalError")
	wantAlive(t, api, p, "py-after-deep")
}

func TestPythonNaNIsMarshalError(t *testing.T) { eachTransport(t, testPythonNaNIsMarshalError) }

func testPythonNaNIsMarshalError(t *testing.T, tr transport) {
	api := newFakeAPI(t, tr)
	p := startPython(t, api, "app.nan")
	api.enqueue(t, "py-nan", map[string]any{}, nil)
	wantFunctionError(t, api, p, "py-nan", "Runtime.MarshalError")
}

func TestNodeDeepEvent(t *testing.T) { eachTransport(t, testNodeDeepEvent) }

func testNodeDeepEvent(t *testing.T, tr transport) {
	api := newFakeAPI(t, tr)
	p := startNode(t, api, "json.echo")
	// V8 parses deep documents without recursing, so the handler gets the
	// event; echoing it back overflows JSON.stringify, which must fail the
	// invocation, not the instance.
	api.enqueueRaw("node-deep", deepJSON(10000))
	wantFunctionError(t, api, p, "node-deep", "Runtime.MarshalError")
	wantAlive(t, api, p, "node-after-deep")
}

func TestNodeNaNResultIsValidJSON(t *testing.T) { eachTransport(t, testNodeNaNResultIsValidJSON) }

func testNodeNaNResultIsValidJSON(t *testing.T, tr transport) {
	api := newFakeAPI(t, tr)
	p := startNode(t, api, "json.nan")
	api.enqueue(t, "node-nan", map[string]any{}, nil)
	got := api.waitPost(t, p)
	if got.Kind != "response" {
		t.Fatalf("got %s: %s", got.Kind, got.Body)
	}
	// JSON.stringify writes NaN and Infinity as null, as Lambda's Node
	// runtime does: the response is valid JSON.
	var v map[string]any
	if err := json.Unmarshal(got.Body, &v); err != nil || v["ratio"] != nil || v["limit"] != nil {
		t.Fatalf("response %s: %v", got.Body, err)
	}
}
