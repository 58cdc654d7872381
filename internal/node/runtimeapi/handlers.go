package runtimeapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	apiPrefix = "/2018-06-01/runtime/"

	headerRequestID       = "Lambda-Runtime-Aws-Request-Id"
	headerDeadlineMs      = "Lambda-Runtime-Deadline-Ms"
	headerFunctionARN     = "Lambda-Runtime-Invoked-Function-Arn"
	headerTraceID         = "Lambda-Runtime-Trace-Id"
	headerClientContext   = "Lambda-Runtime-Client-Context"
	headerCognitoIdentity = "Lambda-Runtime-Cognito-Identity"
	// headerErrorType may accompany .../error posts. aws-lambda-go also
	// sends it, with headerErrorBody, as a trailer of a response whose
	// streamed body failed midway.
	headerErrorType = "Lambda-Runtime-Function-Error-Type"
	headerErrorBody = "Lambda-Runtime-Function-Error-Body"
)

// ServeHTTP routes Runtime API requests. It is exported only because
// http.Server needs it; use Serve.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, "ServiceUnavailable", "runtime API is shutting down")
		return
	}
	s.handlers.Add(1)
	s.mu.Unlock()
	defer s.handlers.Done()

	if key, ok := strings.CutPrefix(r.URL.Path, dataPrefix); ok {
		s.handleData(w, r, key)
		return
	}
	if name, ok := strings.CutPrefix(r.URL.Path, invokePrefix); ok {
		s.handleInvoke(w, r, name)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, apiPrefix)
	if !ok {
		s.notFound(w, r)
		return
	}
	switch {
	case rest == "invocation/next":
		if allow(w, r, http.MethodGet) {
			s.handleNext(w, r)
		}
	case rest == "init/error":
		if allow(w, r, http.MethodPost) {
			s.handleInitError(w, r)
		}
	case strings.HasPrefix(rest, "invocation/"):
		id, action, _ := strings.Cut(strings.TrimPrefix(rest, "invocation/"), "/")
		if id == "" || (action != "response" && action != "error") {
			s.notFound(w, r)
			return
		}
		if allow(w, r, http.MethodPost) {
			s.handleResult(w, r, id, action == "error")
		}
	default:
		s.notFound(w, r)
	}
}

func allow(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method {
		return true
	}
	w.Header().Set("Allow", method)
	writeError(w, http.StatusMethodNotAllowed, "MethodNotAllowed",
		fmt.Sprintf("method %s not allowed on %s", r.Method, r.URL.Path))
	return false
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	s.log.Debug("unknown runtime API path", "method", r.Method, "path", r.URL.Path)
	writeError(w, http.StatusNotFound, "NotFound", fmt.Sprintf("unknown path %s", r.URL.Path))
}

// handleNext is the long poll that hands out events.
func (s *Server) handleNext(w http.ResponseWriter, r *http.Request) {
	s.readyOnce.Do(func() { close(s.ready) })
	for {
		p, err := s.awaitEvent(r.Context())
		if err != nil {
			// The poller went away or we are closing. Returning normally
			// would make net/http send an empty 200, which a runtime
			// client could mistake for an event.
			abort()
		}
		if s.deliver(w, r, p) {
			return
		}
	}
}

// deliver writes p as the answer to a /next poll. It reports false if p was
// withdrawn before it could be written, in which case the poller should
// wait for another event.
func (s *Server) deliver(w http.ResponseWriter, r *http.Request, p *pending) bool {
	s.mu.Lock()
	if p.state != stateHanded {
		s.mu.Unlock()
		return false
	}
	if pollerGone(r) {
		// The poller disconnected while the event was on its way.
		s.enqueueLocked(p, true)
		s.mu.Unlock()
		s.log.Debug("poller left before delivery; requeued event", "request_id", p.ev.RequestID)
		abort()
	}
	p.state = stateDelivered
	p.deliveredAt = time.Now()
	s.mu.Unlock()

	ev := &p.ev
	h := w.Header()
	h.Set(headerRequestID, ev.RequestID)
	h.Set(headerDeadlineMs, strconv.FormatInt(ev.Deadline.UnixMilli(), 10))
	h.Set(headerFunctionARN, ev.FunctionARN)
	h.Set(headerTraceID, ev.TraceID)
	if len(ev.ClientContext) > 0 {
		h.Set(headerClientContext, string(ev.ClientContext))
	}
	if len(ev.CognitoIdentity) > 0 {
		h.Set(headerCognitoIdentity, string(ev.CognitoIdentity))
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(ev.Payload)))
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(ev.Payload)
	if err == nil {
		// Flush so a dead connection shows up as an error now rather than
		// after the handler has returned and the event is considered sent.
		err = http.NewResponseController(w).Flush()
	}
	if err != nil {
		s.log.Warn("delivering event failed; requeueing it",
			"request_id", ev.RequestID, "error", err)
		s.requeue(p, stateDelivered)
		return true
	}
	s.httpDeliveries.Add(1)
	s.log.Debug("event delivered", "request_id", ev.RequestID)
	return true
}

// pollerGone reports whether the client behind r has disconnected.
func pollerGone(r *http.Request) bool {
	if r.Context().Err() != nil {
		return true
	}
	c, ok := r.Context().Value(connKey{}).(net.Conn)
	return ok && peerClosed(c)
}

// abort ends the current handler and drops the connection without sending
// a response; net/http recovers this panic silently.
func abort() {
	panic(http.ErrAbortHandler)
}

// handleResult accepts .../{id}/response and .../{id}/error.
func (s *Server) handleResult(w http.ResponseWriter, r *http.Request, id string, isError bool) {
	p := s.lookupDelivered(id)
	if p == nil {
		writeError(w, http.StatusBadRequest, "InvalidRequestID",
			fmt.Sprintf("invalid request id %q: unknown, not delivered, or already completed", id))
		return
	}
	body, err := s.readBody(r)
	if errors.Is(err, ErrResponseTooLarge) {
		s.complete(p, Result{}, fmt.Errorf("runtimeapi: invocation %s: %w (limit %d bytes)", id, ErrResponseTooLarge, s.maxResp))
		s.log.Warn("function response too large", "request_id", id, "limit", s.maxResp)
		writeError(w, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge",
			fmt.Sprintf("exceeded maximum allowed payload size (%d bytes)", s.maxResp))
		return
	}
	if err != nil {
		// Most likely the function's connection broke mid-body; leave the
		// invocation open so the function may still post again.
		s.log.Warn("reading function result failed", "request_id", id, "error", err)
		writeError(w, http.StatusBadRequest, "InvalidRequest", "could not read request body")
		return
	}

	var res Result
	if isError {
		res.Error = parseFunctionError(body, r.Header.Get(headerErrorType))
	} else {
		res.Payload = body
		// Trailers are only populated once the body has been read to EOF,
		// which readBody has done.
		if typ := r.Trailer.Get(headerErrorType); typ != "" {
			res.Error = trailerError(typ, r.Trailer.Get(headerErrorBody))
		}
	}
	if !s.complete(p, res, nil) {
		writeError(w, http.StatusBadRequest, "InvalidRequestID",
			fmt.Sprintf("invalid request id %q: already completed or abandoned", id))
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "OK"})
}

func (s *Server) handleInitError(w http.ResponseWriter, r *http.Request) {
	body, err := s.readBody(r)
	if errors.Is(err, ErrResponseTooLarge) {
		// Keep what fits: an oversized init error is still an init error.
		err = nil
	}
	if err != nil {
		s.log.Warn("reading init error failed", "error", err)
		writeError(w, http.StatusBadRequest, "InvalidRequest", "could not read request body")
		return
	}
	fe := parseFunctionError(body, r.Header.Get(headerErrorType))
	s.initOnce.Do(func() {
		s.log.Info("function reported an init error", "type", fe.Type, "message", fe.Message)
		s.initErr <- fe
	})
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "OK"})
}

// readBody reads at most maxResp bytes of the request body. On
// ErrResponseTooLarge it returns the first maxResp bytes.
func (s *Server) readBody(r *http.Request) ([]byte, error) {
	if r.ContentLength > s.maxResp {
		return nil, ErrResponseTooLarge
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, s.maxResp+1))
	if err != nil {
		return nil, fmt.Errorf("reading body: %w", err)
	}
	if int64(len(body)) > s.maxResp {
		return body[:s.maxResp], ErrResponseTooLarge
	}
	return body, nil
}

type apiError struct {
	Message string `json:"errorMessage"`
	Type    string `json:"errorType"`
}

func writeError(w http.ResponseWriter, status int, typ, msg string) {
	writeJSON(w, status, apiError{Message: msg, Type: typ})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own fixed types are marshalled here.
		panic(fmt.Sprintf("runtimeapi: marshalling response: %v", err))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b) // a failed write means the client left; nothing to do
}
