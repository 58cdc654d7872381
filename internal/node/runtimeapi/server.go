// Package runtimeapi implements the AWS Lambda Runtime API endpoint that one
// function instance polls for events.
//
// Existing Lambda runtime clients work unmodified: the instance finds the
// endpoint through AWS_LAMBDA_RUNTIME_API=host:port, long-polls
// GET /2018-06-01/runtime/invocation/next and posts results to
// .../invocation/{id}/response or .../invocation/{id}/error. Several pollers
// may wait at once (N:1 concurrency), so several events can be outstanding.
//
// The endpoint also serves Baton's data layers to the instance's
// application (data.go), so that functions of any runtime reach them.
//
// Baton's own runtime clients run the invocation loop over a unix socket
// instead (ServeSocket, socket.go; the wire format is package frame), which
// saves HTTP's cost on every invocation; both transports hand out the same
// queue of events.
package runtimeapi

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/baton-faas/baton/internal/datalayer"
	"github.com/baton-faas/baton/internal/workerapi"
)

var (
	// ErrClosed is returned by Invoke when the server is closed before the
	// invocation completes.
	ErrClosed = errors.New("runtimeapi: server closed")
	// ErrNotDelivered marks an Invoke that ended (closed server, cancelled
	// context) before any runtime received the event, so it is safe to
	// run the event elsewhere.
	ErrNotDelivered = errors.New("runtimeapi: event was not delivered to the runtime")
	// ErrResponseTooLarge is returned by Invoke when the function posted a
	// response (or error) larger than Options.MaxResponseBytes.
	ErrResponseTooLarge = errors.New("runtimeapi: function response too large")
)

// DefaultMaxResponseBytes matches Lambda's limit for synchronous responses.
const DefaultMaxResponseBytes = 6 << 20

const (
	// readHeaderTimeout bounds how long a client may take to send request
	// headers; bodies and long polls are not time-limited.
	readHeaderTimeout = 10 * time.Second
	// idleTimeout closes keep-alive connections nobody uses. It is longer
	// than the 90s idle timeout of Go's default transport (which
	// aws-lambda-go uses), so the client normally closes first and never
	// races a server-side close when reusing a connection.
	idleTimeout = 5 * time.Minute
	// maxHeaderBytes is ample for the Runtime API's few small headers.
	maxHeaderBytes = 64 << 10
)

// Options configures a Server.
type Options struct {
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
	// MaxResponseBytes bounds response and error bodies posted by the
	// function. Larger posts get HTTP 413 and make Invoke return
	// ErrResponseTooLarge. Zero or negative means DefaultMaxResponseBytes.
	MaxResponseBytes int64
	// MaxConns bounds the connections one instance may hold open at once
	// on each transport (HTTP, socket), so a hostile function cannot
	// exhaust the worker's file descriptors. Zero or negative means
	// DefaultMaxConns.
	MaxConns int
	// Data is the data layers as the instance's application sees them,
	// served under /2018-06-01/baton/data/; nil answers those routes
	// with 501.
	Data *datalayer.AppData
	// Invoke runs invocations the function asks for under
	// /2018-06-01/baton/invoke/ (invoke.go); nil answers those routes
	// with 501.
	Invoke Invoker
}

// DefaultMaxConns is the connection bound when Options.MaxConns is unset:
// enough for a runtime with hundreds of concurrent long polls.
const DefaultMaxConns = 1024

// Event is one invocation to hand to the function.
type Event struct {
	// RequestID identifies the invocation. If empty, Invoke generates a
	// UUID. It may only contain letters, digits, '-', '_' and '.'.
	RequestID string
	// Payload is sent verbatim as the body of /next; Lambda clients expect
	// JSON. It must not be modified until Invoke returns.
	Payload []byte
	// Deadline is passed to the function in Lambda-Runtime-Deadline-Ms. If
	// zero, the deadline of Invoke's context is used. Invoke does not
	// enforce it; cancel the context for that.
	Deadline        time.Time
	FunctionARN     string
	TraceID         string
	ClientContext   []byte // JSON, sent only when non-empty
	CognitoIdentity []byte // JSON, sent only when non-empty
}

// Result is the outcome of an invocation.
type Result struct {
	// Payload is the body of the response post. For a response whose
	// streaming failed midway (see Error) it holds what arrived.
	Payload []byte
	// Error is set when the function reported an error, either through
	// .../error or through the error trailers of a response post.
	Error *workerapi.FunctionError
	// DeliveredAt is when the event was handed to a /next poller;
	// CompletedAt is when the result arrived.
	DeliveredAt, CompletedAt time.Time
}

// Server is the Runtime API endpoint of one function instance. It has no
// global state; create one per instance.
type Server struct {
	log      *slog.Logger
	maxResp  int64
	maxConns int
	data     *datalayer.AppData
	invoke   Invoker
	srv      *http.Server

	ready     chan struct{}
	readyOnce sync.Once
	initErr   chan *workerapi.FunctionError
	initOnce  sync.Once
	done      chan struct{} // closed by Close

	// handlers tracks running HTTP handlers and socket connections so
	// Close can wait for them; Add is only called under mu while !closed,
	// which keeps it from racing with Wait.
	handlers sync.WaitGroup

	// Events handed to the runtime over each transport.
	httpDeliveries, socketDeliveries atomic.Uint64

	mu      sync.Mutex
	closed  bool
	queue   []*pending          // undelivered events, FIFO
	waiters []*waiter           // parked /next pollers, FIFO
	byID    map[string]*pending // every event Invoke is still waiting for
	// The socket transport's listeners and connections, closed by Close.
	sockLns   []net.Listener
	sockConns map[*sockConn]struct{}
}

// connKey is the context key under which the request's net.Conn is stored.
type connKey struct{}

type state int

const (
	stateQueued    state = iota // in s.queue
	stateHanded                 // given to a poller that has not written it yet
	stateDelivered              // written to a poller; awaiting a result post
	stateDone                   // completed, withdrawn or abandoned
)

type pending struct {
	ev          Event
	state       state
	deliveredAt time.Time
	done        chan struct{} // closed when result/err are set
	result      Result
	err         error
}

// waiter is a parked /next poller. Its channel receives at most one event,
// sent under s.mu at the moment the waiter is removed from s.waiters.
type waiter struct {
	ch chan *pending
}

// New returns a Server; call Serve to start answering requests.
func New(opts Options) *Server {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	maxResp := opts.MaxResponseBytes
	if maxResp <= 0 {
		maxResp = DefaultMaxResponseBytes
	}
	maxConns := opts.MaxConns
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	s := &Server{
		log:       logger,
		maxResp:   maxResp,
		data:      opts.Data,
		invoke:    opts.Invoke,
		maxConns:  maxConns,
		ready:     make(chan struct{}),
		initErr:   make(chan *workerapi.FunctionError, 1),
		done:      make(chan struct{}),
		byID:      make(map[string]*pending),
		sockConns: make(map[*sockConn]struct{}),
	}
	// Plain HTTP/1.1 with keep-alive: that is what Lambda runtime clients
	// speak. No write timeout because /next is a long poll.
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		Protocols:         protocols,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
		// Handlers need the connection to check whether a /next poller is
		// still there before handing it an event.
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
	}
	return s
}

// Serve answers Runtime API requests on ln until Close is called, and then
// returns nil. It closes ln.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		ln.Close()
		return nil
	}
	err := s.srv.Serve(&limitListener{Listener: ln, slots: make(chan struct{}, s.maxConns), done: s.done})
	select {
	case <-s.done:
		// Close ends a waiting Accept (net.ErrClosed) before the HTTP
		// server knows it is shutting down.
		return nil
	default:
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("runtimeapi: serving: %w", err)
	}
	return nil
}

// Close stops serving, closes all connections, makes pending Invoke calls
// return ErrClosed and waits for running handlers to finish. It is safe to
// call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	s.queue, s.waiters = nil, nil
	clear(s.byID)
	lns, conns := s.sockLns, make([]net.Conn, 0, len(s.sockConns))
	for c := range s.sockConns {
		conns = append(conns, c.nc)
	}
	s.mu.Unlock()

	err := s.srv.Close()
	for _, ln := range lns {
		ln.Close()
	}
	for _, c := range conns {
		c.Close()
	}
	s.handlers.Wait()
	if err != nil {
		return fmt.Errorf("runtimeapi: closing: %w", err)
	}
	return nil
}

// Deliveries counts the events handed to the runtime so far over HTTP and
// over the socket transport.
func (s *Server) Deliveries() (http, socket uint64) {
	return s.httpDeliveries.Load(), s.socketDeliveries.Load()
}

// Ready is closed when the function first asks for an event, which is the
// Runtime API's signal that initialisation has finished.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// InitError delivers the error the function posted to /runtime/init/error,
// if it does. Only the first such post is delivered; the channel is
// buffered, so nobody has to be receiving at the time.
func (s *Server) InitError() <-chan *workerapi.FunctionError { return s.initErr }

var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// Invoke queues ev for the function and waits for its result. Events are
// handed to /next pollers in FIFO order.
//
// If ctx ends before the event was delivered it is withdrawn and the
// function never sees it. If it was already delivered, Invoke returns and
// later posts for the event are refused with 400; stopping the function's
// work is up to the caller. The returned error is nil when the function
// reported an error; see Result.Error.
func (s *Server) Invoke(ctx context.Context, ev Event) (Result, error) {
	if ev.RequestID == "" {
		ev.RequestID = newRequestID()
	} else if !requestIDPattern.MatchString(ev.RequestID) {
		return Result{}, fmt.Errorf("runtimeapi: invalid request id %q", ev.RequestID)
	}
	if ev.Deadline.IsZero() {
		d, ok := ctx.Deadline()
		if !ok {
			return Result{}, fmt.Errorf("runtimeapi: invocation %s has no deadline", ev.RequestID)
		}
		ev.Deadline = d
	}
	// Ending before the event is queued is "not delivered": the caller
	// (an instance that died and closed us, say) may run it elsewhere.
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("runtimeapi: invocation %s: %w: %w", ev.RequestID, ErrNotDelivered, context.Cause(ctx))
	}

	p := &pending{ev: ev, done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Result{}, fmt.Errorf("%w: %w", ErrClosed, ErrNotDelivered)
	}
	if _, dup := s.byID[ev.RequestID]; dup {
		s.mu.Unlock()
		return Result{}, fmt.Errorf("runtimeapi: request id %q is already in flight", ev.RequestID)
	}
	s.byID[ev.RequestID] = p
	s.enqueueLocked(p, false)
	s.mu.Unlock()

	select {
	case <-p.done:
		return p.result, p.err
	case <-s.done:
		// An event a poller holds but has not written (stateHanded) was
		// not received either; marking it done under mu keeps the poller
		// from writing it after we said so.
		s.mu.Lock()
		undelivered := p.state == stateQueued || p.state == stateHanded
		if undelivered {
			p.state = stateDone
		}
		s.mu.Unlock()
		if undelivered {
			return Result{}, fmt.Errorf("%w: %w", ErrClosed, ErrNotDelivered)
		}
		return Result{}, ErrClosed
	case <-ctx.Done():
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	switch p.state {
	case stateDone:
		// The result raced with cancellation; it is still good.
		return p.result, p.err
	case stateQueued, stateHanded:
		// A poller holding it in stateHanded sees stateDone and skips it.
		s.queue = slices.DeleteFunc(s.queue, func(q *pending) bool { return q == p })
		s.log.Debug("invocation withdrawn before delivery", "request_id", ev.RequestID)
		p.state = stateDone
		delete(s.byID, ev.RequestID)
		return Result{}, fmt.Errorf("runtimeapi: invocation %s: %w: %w", ev.RequestID, ErrNotDelivered, context.Cause(ctx))
	default:
		// Result posts find no entry in byID and get 400.
		s.log.Debug("invocation abandoned after delivery", "request_id", ev.RequestID)
	}
	p.state = stateDone
	delete(s.byID, ev.RequestID)
	return Result{}, fmt.Errorf("runtimeapi: invocation %s: %w", ev.RequestID, context.Cause(ctx))
}

// enqueueLocked gives p to the longest-waiting poller, or queues it (at the
// front when it is being retried after a failed delivery).
func (s *Server) enqueueLocked(p *pending, front bool) {
	if len(s.waiters) > 0 {
		w := s.waiters[0]
		s.waiters = s.waiters[1:]
		p.state = stateHanded
		w.ch <- p // buffered; each waiter receives exactly once
		return
	}
	p.state = stateQueued
	if front {
		s.queue = slices.Insert(s.queue, 0, p)
	} else {
		s.queue = append(s.queue, p)
	}
}

// awaitEvent returns the next event for a /next poller, parking until one
// is queued, the poller's request ends or the server closes.
func (s *Server) awaitEvent(ctx context.Context) (*pending, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	if len(s.queue) > 0 {
		p := s.queue[0]
		s.queue = s.queue[1:]
		p.state = stateHanded
		s.mu.Unlock()
		return p, nil
	}
	w := &waiter{ch: make(chan *pending, 1)}
	s.waiters = append(s.waiters, w)
	s.mu.Unlock()

	select {
	case p := <-w.ch:
		return p, nil
	case <-ctx.Done():
		s.cancelWait(w)
		return nil, ctx.Err()
	case <-s.done:
		return nil, ErrClosed
	}
}

// cancelWait unparks w. If an event was handed to it in the meantime, the
// event goes back to the front of the queue rather than being lost.
func (s *Server) cancelWait(w *waiter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := slices.Index(s.waiters, w); i >= 0 {
		s.waiters = slices.Delete(s.waiters, i, i+1)
		return
	}
	select {
	case p := <-w.ch:
		if p.state == stateHanded && !s.closed {
			s.enqueueLocked(p, true)
		}
	default:
	}
}

// requeue puts an event whose delivery failed back at the front of the
// queue, unless Invoke has given up on it meanwhile.
func (s *Server) requeue(p *pending, from state) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.state == from && !s.closed {
		s.enqueueLocked(p, true)
	}
}

// complete records the result of a delivered event and wakes its Invoke.
// It reports false if the event is no longer awaiting a result.
func (s *Server) complete(p *pending, res Result, err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.state != stateDelivered {
		return false
	}
	p.state = stateDone
	res.DeliveredAt = p.deliveredAt
	res.CompletedAt = time.Now()
	p.result, p.err = res, err
	delete(s.byID, p.ev.RequestID)
	close(p.done)
	return true
}

// lookupDelivered returns the event with the given id if a result may be
// posted for it.
func (s *Server) lookupDelivered(id string) *pending {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.byID[id]; p != nil && p.state == stateDelivered {
		return p
	}
	return nil
}

// newRequestID returns a random (version 4) UUID, the form Lambda uses.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails, per crypto/rand
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// limitListener accepts a new connection only while fewer than cap(slots)
// are open; further clients wait in the kernel's backlog.
type limitListener struct {
	net.Listener
	slots chan struct{}
	done  <-chan struct{} // the server's: closed by Close
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitedConn{Conn: c, release: func() { <-l.slots }}, nil
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

// SyscallConn exposes the socket for peerClosed's non-blocking peek.
func (c *limitedConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("runtimeapi: connection has no file descriptor")
	}
	return sc.SyscallConn()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
