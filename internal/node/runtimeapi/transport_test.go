package runtimeapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/node/runtimeapi/frame"
)

// The invocation loop's tests run over both transports: HTTP and the
// socket. rtClient is the function's side of either.
type rtClient interface {
	// next asks for an event and waits for it.
	next(ctx context.Context) (delivered, error)
	// postResult posts a response (or, with isError, an error of
	// errType) for an event this client received, and returns the status
	// HTTP would answer with its JSON document (202 {"status":"OK"} when
	// the socket accepted it).
	postResult(id string, isError bool, body []byte, errType string) (int, map[string]string)
}

type transport string

const (
	overHTTP   transport = "http"
	overSocket transport = "socket"
)

var transports = []transport{overHTTP, overSocket}

// eachTransport runs f once per transport, each time with a fresh server
// (closed when the subtest ends) and a client of that transport.
func eachTransport(t *testing.T, opts Options, f func(t *testing.T, s *Server, c rtClient)) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			s, addr := startServerOn(t, tr, opts)
			f(t, s, newClientOn(t, tr, s, addr))
		})
	}
}

// startServerOn serves a new Server on tr and closes it (and checks the
// serve loop's result) when the test ends. addr is a loopback address or
// a socket path.
func startServerOn(t *testing.T, tr transport, opts Options) (*Server, string) {
	t.Helper()
	if tr == overHTTP {
		return startServer(t, opts)
	}
	s := New(opts)
	addr, errc := serveOn(t, tr, s)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-errc; err != nil {
			t.Errorf("ServeSocket: %v", err)
		}
	})
	return s, addr
}

// serveOn starts serving s on tr; errc receives the serve loop's result.
func serveOn(t *testing.T, tr transport, s *Server) (string, <-chan error) {
	t.Helper()
	network, addr := "tcp", "127.0.0.1:0"
	if tr == overSocket {
		network, addr = "unix", socketPath(t)
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		if tr == overSocket {
			errc <- s.ServeSocket(ln)
		} else {
			errc <- s.Serve(ln)
		}
	}()
	return ln.Addr().String(), errc
}

// socketPath is a fresh socket path short enough for sun_path, which a
// test's TempDir need not be.
func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "rtapi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "s")
}

func newClientOn(t *testing.T, tr transport, s *Server, addr string) rtClient {
	if tr == overHTTP {
		return newClient(t, addr)
	}
	return newSockClient(t, s, addr)
}

// rawPoll asks for an event on a connection of its own and returns the
// connection without reading from it.
func rawPoll(t *testing.T, c rtClient) net.Conn {
	t.Helper()
	var conn net.Conn
	var err error
	switch c := c.(type) {
	case *httpClient:
		conn, err = net.Dial("tcp", strings.TrimSuffix(strings.TrimPrefix(c.base, "http://"), apiVersionPath))
		if err == nil {
			_, err = fmt.Fprintf(conn, "GET %s/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n", apiVersionPath)
		}
	case *sockClient:
		conn, err = net.Dial("unix", c.path)
		if err == nil {
			_, err = conn.Write(frame.AppendNext(nil))
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func mustNext(t *testing.T, c rtClient) delivered {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	d, err := c.next(ctx)
	if err != nil {
		t.Fatalf("next: %v", err)
	}
	return d
}

func respond(t *testing.T, c rtClient, id, body string) {
	t.Helper()
	if status, out := c.postResult(id, false, []byte(body), ""); status != http.StatusAccepted || out["status"] != "OK" {
		t.Fatalf("response for %s: %d %v", id, status, out)
	}
}

func (c *httpClient) postResult(id string, isError bool, body []byte, errType string) (int, map[string]string) {
	c.t.Helper()
	kind := "response"
	if isError {
		kind = "error"
	}
	var h http.Header
	if errType != "" {
		h = http.Header{headerErrorType: {errType}}
	}
	return c.post("/invocation/"+id+"/"+kind, body, false, h)
}

// sockClient speaks the socket transport as a runtime client with as many
// connections as it has events at once, one event per connection.
type sockClient struct {
	t    *testing.T
	s    *Server
	path string

	mu      sync.Mutex
	idle    []*rawSock
	holding map[string]*rawSock // by request id
}

type rawSock struct {
	nc net.Conn
	br *bufio.Reader
}

func newSockClient(t *testing.T, s *Server, path string) *sockClient {
	c := &sockClient{t: t, s: s, path: path, holding: map[string]*rawSock{}}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, r := range c.idle {
			r.nc.Close()
		}
		for _, r := range c.holding {
			r.nc.Close()
		}
	})
	return c
}

func dialSock(path string) (*rawSock, error) {
	nc, err := net.Dial("unix", path)
	if err != nil {
		return nil, err
	}
	return &rawSock{nc: nc, br: bufio.NewReader(nc)}, nil
}

// readable reports whether something (data or the end) can be read now.
func (r *rawSock) readable() bool {
	if r.br.Buffered() > 0 {
		return true
	}
	rc, err := r.nc.(syscall.Conn).SyscallConn()
	if err != nil {
		return true
	}
	ready := true
	_ = rc.Control(func(fd uintptr) {
		var b [1]byte
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		ready = !errors.Is(err, unix.EAGAIN)
	})
	return ready
}

// readFrame reads one whole frame.
func (r *rawSock) readFrame() (frame.Kind, []byte, error) {
	kind, n, err := frame.ReadHeader(r.br)
	if err != nil {
		return 0, nil, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r.br, body); err != nil {
		return 0, nil, err
	}
	return kind, body, nil
}

func (c *sockClient) next(ctx context.Context) (delivered, error) {
	c.mu.Lock()
	var r *rawSock
	if n := len(c.idle); n > 0 {
		r, c.idle = c.idle[n-1], c.idle[:n-1]
	}
	c.mu.Unlock()
	if r == nil {
		var err error
		if r, err = dialSock(c.path); err != nil {
			return delivered{}, err
		}
	}
	if _, err := r.nc.Write(frame.AppendNext(nil)); err != nil {
		r.nc.Close()
		return delivered{}, err
	}
	// Giving up on a poll drops its connection, as an HTTP client does.
	stop := context.AfterFunc(ctx, func() { r.nc.Close() })
	defer stop()
	kind, body, err := r.readFrame()
	if err != nil {
		r.nc.Close()
		if ctx.Err() != nil {
			return delivered{}, ctx.Err()
		}
		return delivered{}, err
	}
	if kind != frame.Event {
		r.nc.Close()
		return delivered{}, fmt.Errorf("next: got a %s frame: %q", kind, body)
	}
	f, payload, err := frame.ParseEvent(body)
	if err != nil {
		r.nc.Close()
		return delivered{}, err
	}
	// The fields as the HTTP transport's headers, so that tests check
	// both alike.
	h := http.Header{}
	h.Set(headerRequestID, f.RequestID)
	h.Set(headerDeadlineMs, strconv.FormatInt(f.DeadlineMs, 10))
	h.Set(headerFunctionARN, f.FunctionARN)
	h.Set(headerTraceID, f.TraceID)
	if len(f.ClientContext) > 0 {
		h.Set(headerClientContext, string(f.ClientContext))
	}
	if len(f.CognitoIdentity) > 0 {
		h.Set(headerCognitoIdentity, string(f.CognitoIdentity))
	}
	c.mu.Lock()
	c.holding[f.RequestID] = r
	c.mu.Unlock()
	return delivered{id: f.RequestID, header: h, payload: payload}, nil
}

// postResult sends the result on the connection that holds the event and
// waits until the server has read it; a rejection has then been written,
// so a read that finds nothing at once means the result was accepted.
func (c *sockClient) postResult(id string, isError bool, body []byte, errType string) (int, map[string]string) {
	c.t.Helper()
	c.mu.Lock()
	r := c.holding[id]
	delete(c.holding, id)
	c.mu.Unlock()
	if r == nil {
		c.t.Fatalf("no connection holds event %s", id)
	}
	var buf []byte
	if isError {
		buf = frame.AppendError(nil, id, errType, body)
	} else {
		buf = frame.AppendResponse(nil, id, body)
	}
	if _, err := r.nc.Write(buf); err != nil {
		// The server may drop a connection before reading all of a
		// result too large to read; its rejection is still there.
		c.t.Logf("writing the result: %v", err)
	}
	waitFor(c.t, c.s, "the result to be read", func() bool { return !c.s.connHolds(id) })
	if !r.readable() {
		c.mu.Lock()
		c.idle = append(c.idle, r)
		c.mu.Unlock()
		return http.StatusAccepted, map[string]string{"status": "OK"}
	}
	kind, doc, err := r.readFrame()
	if err != nil || kind != frame.Rejected {
		c.t.Fatalf("after the result: %s frame %q, %v", kind, doc, err)
	}
	status, doc, err := frame.ParseRejected(doc)
	if err != nil {
		c.t.Fatal(err)
	}
	var out map[string]string
	if err := json.Unmarshal(doc, &out); err != nil {
		c.t.Fatalf("rejection %q: %v", doc, err)
	}
	c.mu.Lock()
	c.idle = append(c.idle, r)
	c.mu.Unlock()
	return status, out
}

// connHolds reports whether a socket connection holds the event id; the
// caller holds s.mu.
func (s *Server) connHolds(id string) bool {
	for c := range s.sockConns {
		if p := c.holding(); p != nil && p.ev.RequestID == id {
			return true
		}
	}
	return false
}
