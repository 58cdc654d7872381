package runtimeapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/baton-faas/baton/internal/node/runtimeapi/frame"
)

// The socket transport. The invocation loop (next event, response, error)
// is also served over a stream socket (ServeSocket, a unix socket the node
// makes per instance) in the framed format of package frame, for Baton's
// own runtime clients, which find its path in SocketEnv. It saves what
// HTTP costs per invocation on both ends: request lines, headers, their
// parsing, and one of the two round trips (a result and the next Next go
// out in one write). Init errors, the data layers and invocations of
// other functions stay on HTTP.
//
// A connection holds at most one event at a time, in this order:
//
//	client: Next                  (the first Next marks the runtime ready, as /next does)
//	server: Event                 (when one is queued)
//	client: Response or Error     (for that event's request id)
//	client: Next ...
//
// A result the server refuses while the connection stays usable (too
// large, or for an event Invoke gave up on: HTTP's 413 and 400) is
// answered with a Rejected frame; an accepted result gets no answer.
// Anything else is a protocol error: a malformed frame, an unknown kind, a
// Next while the connection holds an event or already waits, a result for
// another event or none, a result frame too large to read
// (MaxResponseBytes plus resultOverhead). The server then drops the
// connection and fails the event it held with ErrProtocol (or, for the
// result too large to read, ErrResponseTooLarge after a Rejected frame),
// so that a broken client never leaves an invocation hanging.
//
// A connection that merely closes fails nothing: a runtime that died is
// reported by whoever watches its process (the node), as with HTTP. An
// event being handed over when the client left goes back to the queue: a
// write into a unix socket whose peer has closed fails (EPIPE) rather than
// vanishing into a buffer.

// SocketEnv is the environment variable that gives Baton's runtime
// clients the path of their instance's socket; a client that finds it
// unset, or cannot connect, uses HTTP.
const SocketEnv = "BATON_RUNTIME_SOCKET"

// ErrProtocol is returned (wrapped) by Invoke when the runtime broke the
// socket protocol while it held the event.
var ErrProtocol = errors.New("runtimeapi: runtime broke the socket protocol")

// resultOverhead is the room a result frame may take besides its payload:
// the request id's and the error type's fields.
const resultOverhead = 4 + 128 + 4 + maxHeaderBytes

// smallPayload is the largest event payload copied into the frame's
// buffer to go out in one write; larger ones follow the head in a second.
const smallPayload = 64 << 10

// ServeSocket answers the socket transport on ln (a unix socket) until
// Close is called, and then returns nil. It closes ln. Its connections
// are bounded by Options.MaxConns (a limit of their own: a listener that
// waits for a slot shared with another could take it and sit on it).
func (s *Server) ServeSocket(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.sockLns = append(s.sockLns, ln)
	s.mu.Unlock()

	lln := &limitListener{Listener: ln, slots: make(chan struct{}, s.maxConns), done: s.done}
	backoff := time.Duration(0)
	for {
		nc, err := lln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return nil
			default:
			}
			if !temporaryAcceptError(err) {
				return fmt.Errorf("runtimeapi: serving socket: %w", err)
			}
			// Out of descriptors, say: wait rather than spin, as
			// net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("runtime socket accept failed; retrying", "error", err, "in", backoff)
			select {
			case <-time.After(backoff):
			case <-s.done:
				return nil
			}
			continue
		}
		backoff = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return nil
		}
		c := s.newSockConn(nc)
		s.handlers.Add(1)
		s.sockConns[c] = struct{}{}
		s.mu.Unlock()
		go func() {
			defer s.handlers.Done()
			c.serve()
			s.mu.Lock()
			delete(s.sockConns, c)
			s.mu.Unlock()
		}()
	}
}

func temporaryAcceptError(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// sockConn is one client connection. Its reader (serveSocketConn's
// goroutine) reads frames and takes results; its writer waits for events
// when asked by a Next and writes them.
type sockConn struct {
	s  *Server
	nc net.Conn
	br *bufio.Reader
	// ctx ends when the reader stops, which stops the writer's wait.
	ctx    context.Context
	cancel context.CancelFunc
	next   chan struct{} // a Next for the writer; buffered, see waiting

	wmu  sync.Mutex // one frame written at a time
	wbuf []byte     // guarded by wmu

	mu      sync.Mutex
	waiting bool     // a Next is not yet answered with an event
	held    *pending // delivered here and not yet answered
}

func (s *Server) newSockConn(nc net.Conn) *sockConn {
	ctx, cancel := context.WithCancel(context.Background())
	return &sockConn{s: s, nc: nc, br: bufio.NewReaderSize(nc, 16<<10), ctx: ctx, cancel: cancel, next: make(chan struct{}, 1)}
}

// serve runs the connection's reader here and its writer beside, until
// the client leaves, breaks the protocol or the server closes.
func (c *sockConn) serve() {
	var writer sync.WaitGroup
	writer.Go(c.writeEvents)
	err := c.readFrames()
	c.cancel()
	c.nc.Close()
	writer.Wait()
	if err == nil {
		return
	}
	c.s.log.Warn("runtime socket connection dropped", "error", err)
	// The writer is gone: held is final.
	if p := c.holding(); p != nil && errors.Is(err, ErrProtocol) {
		c.s.complete(p, Result{}, fmt.Errorf("runtimeapi: invocation %s: %w", p.ev.RequestID, err))
	}
}

// holding returns the event delivered on c and not yet answered.
func (c *sockConn) holding() *pending {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.held
}

// readFrames reads and handles the client's frames until the connection
// ends. It returns nil when the client left, and the reason when the
// connection must be dropped.
func (c *sockConn) readFrames() error {
	for {
		kind, n, err := frame.ReadHeader(c.br)
		if errors.Is(err, frame.ErrMalformed) {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		if err != nil {
			return nil // closed, reset, or cut mid-header: the client left
		}
		switch kind {
		case frame.Next:
			if n != 0 {
				return fmt.Errorf("%w: Next frame with a %d byte body", ErrProtocol, n)
			}
			if err := c.onNext(); err != nil {
				return err
			}
		case frame.Response, frame.Error:
			if err := c.onResult(kind, n); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: unknown frame %s", ErrProtocol, kind)
		}
	}
}

func (c *sockConn) onNext() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held != nil {
		return fmt.Errorf("%w: Next before answering event %s", ErrProtocol, c.held.ev.RequestID)
	}
	if c.waiting {
		return fmt.Errorf("%w: Next while the previous Next still waits", ErrProtocol)
	}
	c.waiting = true
	c.s.readyOnce.Do(func() { close(c.s.ready) })
	c.next <- struct{}{} // never blocks: one Next at a time
	return nil
}

// onResult reads a Response or Error frame with an n byte body.
func (c *sockConn) onResult(kind frame.Kind, n int64) error {
	s := c.s
	p := c.holding()
	if p == nil {
		return fmt.Errorf("%w: %s without an event", ErrProtocol, kind)
	}
	if n > s.maxResp+resultOverhead {
		// Not worth reading: the event fails as with HTTP's 413, and
		// the connection goes, which is what skipping the body would
		// otherwise take.
		s.complete(p, Result{}, s.tooLarge(p.ev.RequestID))
		c.reject(http.StatusRequestEntityTooLarge, "RequestEntityTooLarge",
			fmt.Sprintf("exceeded maximum allowed payload size (%d bytes)", s.maxResp))
		return fmt.Errorf("runtimeapi: %s frame of %d bytes for invocation %s: %w", kind, n, p.ev.RequestID, ErrResponseTooLarge)
	}
	body, err := c.readBody(n)
	if err != nil {
		return nil // the client left mid-frame
	}
	var id, typ string
	var data []byte
	if kind == frame.Response {
		id, data, err = frame.ParseResponse(body)
	} else {
		id, typ, data, err = frame.ParseError(body)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if id != p.ev.RequestID {
		return fmt.Errorf("%w: %s for request %q while holding %s", ErrProtocol, kind, id, p.ev.RequestID)
	}
	// Let go of p once it is answered, rejections included (which tests
	// rely on to know that a rejection was written).
	defer func() {
		c.mu.Lock()
		c.held = nil
		c.mu.Unlock()
	}()
	if int64(len(data)) > s.maxResp {
		s.complete(p, Result{}, s.tooLarge(id))
		s.log.Warn("function response too large", "request_id", id, "limit", s.maxResp)
		c.reject(http.StatusRequestEntityTooLarge, "RequestEntityTooLarge",
			fmt.Sprintf("exceeded maximum allowed payload size (%d bytes)", s.maxResp))
		return nil
	}
	var res Result
	if kind == frame.Response {
		res.Payload = data
	} else {
		res.Error = parseFunctionError(data, typ)
	}
	if !s.complete(p, res, nil) {
		c.reject(http.StatusBadRequest, "InvalidRequestID",
			fmt.Sprintf("invalid request id %q: already completed or abandoned", id))
	}
	return nil
}

func (s *Server) tooLarge(id string) error {
	return fmt.Errorf("runtimeapi: invocation %s: %w (limit %d bytes)", id, ErrResponseTooLarge, s.maxResp)
}

// readBody reads an n byte body, growing its buffer as bytes arrive rather
// than trusting the announced length with memory up front.
func (c *sockConn) readBody(n int64) ([]byte, error) {
	const step = 64 << 10
	buf := make([]byte, 0, min(n, step))
	for int64(len(buf)) < n {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(n, 2*int64(cap(buf))))
			copy(grown, buf)
			buf = grown
		}
		m, err := c.br.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err != nil && int64(len(buf)) < n {
			return nil, err
		}
	}
	return buf, nil
}

// reject answers a result with a Rejected frame. A failed write needs no
// handling: the reader sees the connection go.
func (c *sockConn) reject(status uint16, typ, msg string) {
	doc, err := json.Marshal(apiError{Message: msg, Type: typ})
	if err != nil {
		panic(fmt.Sprintf("runtimeapi: marshalling a rejection: %v", err)) // our own fixed type
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = frame.AppendRejected(c.wbuf[:0], status, doc)
	_, _ = c.nc.Write(c.wbuf)
}

// writeEvents answers each Next with an event, until the connection ends.
func (c *sockConn) writeEvents() {
	for {
		select {
		case <-c.next:
		case <-c.ctx.Done():
			return
		}
		for {
			p, err := c.s.awaitEvent(c.ctx)
			if err != nil {
				return // the connection or the server is closing
			}
			if c.deliver(p) {
				break
			}
		}
	}
}

// deliver writes p to the client. It reports false if p was withdrawn
// before it could be written, in which case the writer waits for another.
func (c *sockConn) deliver(p *pending) bool {
	s := c.s
	s.mu.Lock()
	if p.state != stateHanded {
		s.mu.Unlock()
		return false
	}
	if c.ctx.Err() != nil {
		s.enqueueLocked(p, true)
		s.mu.Unlock()
		return true
	}
	p.state = stateDelivered
	p.deliveredAt = time.Now()
	s.mu.Unlock()
	// Held before it is written: the client may answer before Write
	// returns.
	c.mu.Lock()
	c.held, c.waiting = p, false
	c.mu.Unlock()

	ev := &p.ev
	fields := frame.EventFields{
		RequestID: ev.RequestID, DeadlineMs: ev.Deadline.UnixMilli(), FunctionARN: ev.FunctionARN,
		TraceID: ev.TraceID, ClientContext: ev.ClientContext, CognitoIdentity: ev.CognitoIdentity,
	}
	c.wmu.Lock()
	c.wbuf = frame.AppendEventHead(c.wbuf[:0], &fields, len(ev.Payload))
	var err error
	if len(ev.Payload) <= smallPayload {
		c.wbuf = append(c.wbuf, ev.Payload...)
		_, err = c.nc.Write(c.wbuf)
	} else {
		bufs := net.Buffers{c.wbuf, ev.Payload}
		_, err = bufs.WriteTo(c.nc)
	}
	c.wmu.Unlock()
	if err != nil {
		// The client is gone (EPIPE) or going: the event goes to another
		// poller.
		c.mu.Lock()
		if c.held == p {
			c.held = nil
		}
		c.mu.Unlock()
		s.log.Warn("delivering event over the socket failed; requeueing it", "request_id", ev.RequestID, "error", err)
		s.requeue(p, stateDelivered)
		return true
	}
	s.socketDeliveries.Add(1)
	return true
}
