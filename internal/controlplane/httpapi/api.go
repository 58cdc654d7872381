// Package httpapi is Baton's HTTP API: function management, synchronous
// invocation, function URLs (/fn), invocation records, health and metrics.
// The CLI uses nothing else.
package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/controlplane/controller"
	"github.com/baton-faas/baton/internal/controlplane/records"
	"github.com/baton-faas/baton/internal/controlplane/router"
	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/store"
	"github.com/baton-faas/baton/internal/workerapi"
)

// Options configure the API.
type Options struct {
	Controller *controller.Controller
	Metrics    http.Handler
	Logger     *slog.Logger
	// MaxSpecBytes caps a deploy request (the base64 zip inflates it by 4/3).
	MaxSpecBytes int64
	// MaxPayloadBytes caps an invocation's request body.
	MaxPayloadBytes int64
	// MaxInflightBytes caps the request payload bytes held at once.
	MaxInflightBytes int64
}

// Server serves the API.
type Server struct {
	c    *controller.Controller
	opts Options
	log  *slog.Logger
	mux  *http.ServeMux

	inflightBytes atomic.Int64
}

// New builds the API handler.
func New(o Options) *Server {
	if o.MaxSpecBytes <= 0 {
		o.MaxSpecBytes = 100 << 20
	}
	if o.MaxPayloadBytes <= 0 {
		o.MaxPayloadBytes = 32 << 20
	}
	if o.MaxInflightBytes <= 0 {
		o.MaxInflightBytes = 1 << 30
	}
	o.MaxInflightBytes = max(o.MaxInflightBytes, o.MaxPayloadBytes)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{c: o.Controller, opts: o, log: o.Logger, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.Handle("GET /metrics", o.Metrics)
	s.mux.HandleFunc("GET /v1/functions", s.listFunctions)
	s.mux.HandleFunc("PUT /v1/functions/{name}", s.putFunction)
	s.mux.HandleFunc("GET /v1/functions/{name}", s.getFunction)
	s.mux.HandleFunc("DELETE /v1/functions/{name}", s.deleteFunction)
	s.mux.HandleFunc("POST /v1/functions/{name}/invoke", s.invoke)
	s.mux.HandleFunc("DELETE /v1/functions/{name}/instances", s.recycle)
	s.mux.HandleFunc("GET /v1/invocations", s.listInvocations)
	s.mux.HandleFunc("GET /v1/invocations/{id}", s.getInvocation)
	s.registerImageRoutes()
	s.mux.HandleFunc("/fn/{name}", s.functionURL)
	s.mux.HandleFunc("/fn/{name}/{path...}", s.functionURL)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no API route for %s %s", r.Method, r.URL.Path))
	})
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// ErrorBody is the JSON body of every API error.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Function errors carry the function's own error fields.
	ErrorMessage string   `json:"errorMessage,omitempty"`
	ErrorType    string   `json:"errorType,omitempty"`
	StackTrace   []string `json:"stackTrace,omitempty"`
	InvocationID string   `json:"invocationId,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, ErrorBody{Code: code, Message: msg})
}

// writeStoreError maps registry and validation errors.
func (s *Server) writeStoreError(w http.ResponseWriter, err error) {
	switch {
	case errdefs.Is(err, errdefs.TooLarge):
		// Code over a size limit: the message names the limit.
		_, code := errdefs.Classify(err)
		writeError(w, http.StatusRequestEntityTooLarge, code, err.Error())
	case errors.Is(err, function.ErrInvalid), errors.Is(err, archive.ErrInvalid):
		writeError(w, http.StatusBadRequest, "invalid_spec", err.Error())
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "function_not_found", err.Error())
	case errors.Is(err, store.ErrConflict):
		writeError(w, http.StatusConflict, "conflict", err.Error())
	default:
		s.log.Error("api", "err", err)
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
	}
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "isolation": s.c.Isolation()})
}

// deployRequest is the PUT body: the spec plus the code archive.
type deployRequest struct {
	function.Spec
	Code []byte `json:"code"`
}

// FunctionView is how the API shows a function.
type FunctionView struct {
	Name       string        `json:"name"`
	Version    int           `json:"version"`
	Spec       function.Spec `json:"spec"`
	CodeDigest string        `json:"codeDigest"`
	CodeSize   int64         `json:"codeSize"`
	CreatedAt  time.Time     `json:"createdAt"`
	UpdatedAt  time.Time     `json:"updatedAt"`
	Isolation  string        `json:"isolation"`
	Status     router.Status `json:"status"`
	// Set on deploy responses.
	Created    bool `json:"created,omitempty"`
	NewVersion bool `json:"newVersion,omitempty"`
}

func (s *Server) view(fn function.Function) FunctionView {
	return FunctionView{
		Name: fn.Name, Version: fn.Version, Spec: fn.Spec, CodeDigest: fn.CodeDigest, CodeSize: fn.CodeSize,
		CreatedAt: fn.CreatedAt, UpdatedAt: fn.UpdatedAt, Isolation: s.c.Isolation(), Status: s.c.Status(fn.Name),
	}
}

func (s *Server) putFunction(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := function.ValidateName(name); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_name", err.Error())
		return
	}
	body := http.MaxBytesReader(w, r.Body, s.opts.MaxSpecBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	var req deployRequest
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "spec_too_large",
				fmt.Sprintf("deploy request is larger than %d bytes", s.opts.MaxSpecBytes))
			return
		}
		writeError(w, http.StatusBadRequest, "malformed_json", "function spec is not valid JSON: "+err.Error())
		return
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "malformed_json", "function spec has trailing data after the JSON object")
		return
	}
	res, err := s.c.Deploy(r.Context(), name, req.Spec, req.Code)
	if err != nil {
		s.writeStoreError(w, err)
		return
	}
	v := s.view(res.Function)
	v.Created, v.NewVersion = res.Created, res.NewVersion
	status := http.StatusOK
	if res.Created {
		status = http.StatusCreated
	}
	writeJSON(w, status, v)
}

func (s *Server) getFunction(w http.ResponseWriter, r *http.Request) {
	fn, _, err := s.c.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		s.writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.view(fn))
}

func (s *Server) listFunctions(w http.ResponseWriter, r *http.Request) {
	fns, err := s.c.List(r.Context())
	if err != nil {
		s.writeStoreError(w, err)
		return
	}
	out := make([]FunctionView, 0, len(fns))
	for _, fn := range fns {
		out = append(out, s.view(fn))
	}
	writeJSON(w, http.StatusOK, map[string]any{"functions": out})
}

func (s *Server) deleteFunction(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.c.Delete(r.Context(), name); err != nil {
		s.writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"deleted": name})
}

// recycle stops a function's instances so that its next request is cold.
func (s *Server) recycle(w http.ResponseWriter, r *http.Request) {
	stopped, pending, err := s.c.Recycle(r.PathValue("name"))
	if err != nil {
		s.writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"stopped": stopped, "stoppingWhenIdle": pending})
}

// readPayload checks that the function exists, then reads an invocation
// body within the payload limit and the server's budget of request bytes
// held at once (queued requests keep their bodies in memory). The caller
// must call the returned release when the invocation is over.
func (s *Server) readPayload(w http.ResponseWriter, r *http.Request, name string) ([]byte, func(), bool) {
	if !s.c.Exists(name) {
		writeError(w, http.StatusNotFound, "function_not_found", fmt.Sprintf("function %q not found", name))
		return nil, nil, false
	}
	reserved := max(r.ContentLength, 0)
	if !s.reserve(reserved) {
		s.writeBusy(w)
		return nil, nil, false
	}
	release := func() { s.inflightBytes.Add(-reserved) }
	body, err := s.readBody(w, r)
	if err != nil {
		release()
		return nil, nil, false
	}
	if extra := int64(len(body)) - reserved; extra > 0 {
		if !s.reserve(extra) {
			release()
			s.writeBusy(w)
			return nil, nil, false
		}
		reserved += extra
	}
	return body, release, true
}

func (s *Server) reserve(n int64) bool {
	if s.inflightBytes.Add(n) > s.opts.MaxInflightBytes {
		s.inflightBytes.Add(-n)
		return false
	}
	return true
}

func (s *Server) writeBusy(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusTooManyRequests, "server_busy",
		fmt.Sprintf("the server already holds %d bytes of request payloads; retry later", s.opts.MaxInflightBytes))
}

func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxPayloadBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "payload_too_large",
				fmt.Sprintf("request body is larger than the %d byte payload limit", s.opts.MaxPayloadBytes))
			return nil, err
		}
		writeError(w, http.StatusBadRequest, "bad_body", "could not read request body: "+err.Error())
		return nil, err
	}
	return body, nil
}

func (s *Server) invoke(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := function.ValidateName(name); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_name", err.Error())
		return
	}
	payload, release, ok := s.readPayload(w, r, name)
	if !ok {
		return
	}
	defer release()
	if len(payload) == 0 {
		payload = []byte("{}")
	} else if !json.Valid(payload) {
		writeError(w, http.StatusBadRequest, "malformed_json", "the event (request body) must be valid JSON")
		return
	}
	inv, ok := s.runInvocation(w, r, name, "", payload)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(inv.Payload)
}

// runInvocation invokes and writes every failure response itself; it
// returns ok only when the function produced a result.
func (s *Server) runInvocation(w http.ResponseWriter, r *http.Request, name, id string, payload []byte) (controller.Invocation, bool) {
	inv, err := s.c.Invoke(r.Context(), name, id, payload)
	if err != nil {
		switch {
		case errors.Is(err, router.ErrUnknownFunction):
			writeError(w, http.StatusNotFound, "function_not_found", fmt.Sprintf("function %q not found", name))
		case errors.Is(err, router.ErrQueueFull):
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusTooManyRequests, "queue_full", err.Error())
		case errors.Is(err, router.ErrShuttingDown):
			w.Header().Set("Retry-After", "5")
			writeError(w, http.StatusServiceUnavailable, "shutting_down", err.Error())
		default:
			writeError(w, http.StatusInternalServerError, "internal", err.Error())
		}
		return inv, false
	}
	setTimingHeaders(w.Header(), inv)
	if inv.FunctionError != nil {
		fe := inv.FunctionError
		w.Header().Set("Baton-Function-Error", "Unhandled")
		writeJSON(w, http.StatusBadGateway, ErrorBody{
			Code: "function_error", Message: fmt.Sprintf("function %s failed: %s: %s", name, fe.Type, fe.Message),
			ErrorMessage: fe.Message, ErrorType: fe.Type, StackTrace: fe.StackTrace, InvocationID: inv.ID,
		})
		return inv, false
	}
	if inv.Err != nil {
		s.writeInvocationError(w, name, inv)
		return inv, false
	}
	return inv, true
}

func (s *Server) writeInvocationError(w http.ResponseWriter, name string, inv controller.Invocation) {
	var failure *workerapi.Failure
	var initErr *workerapi.InitError
	body := ErrorBody{InvocationID: inv.ID}
	status := http.StatusBadGateway
	switch err := inv.Err; {
	case errors.As(err, &failure):
		body.Code, body.Message = string(failure.Kind), fmt.Sprintf("function %s: %s", name, failure.Message)
		body.ErrorType, body.ErrorMessage = "Baton."+string(failure.Kind), failure.Message
		if failure.Kind == workerapi.FailureTimeout {
			status = http.StatusGatewayTimeout
		}
	case errors.As(err, &initErr):
		body.Code = "init_error"
		body.Message = fmt.Sprintf("function %s failed to initialise: %s: %s", name, initErr.Err.Type, initErr.Err.Message)
		body.ErrorType, body.ErrorMessage, body.StackTrace = initErr.Err.Type, initErr.Err.Message, initErr.Err.StackTrace
	case errors.Is(err, router.ErrQueueTimeout):
		status, body.Code, body.Message = http.StatusServiceUnavailable, "no_instance", err.Error()
		w.Header().Set("Retry-After", "1")
	case errors.Is(err, router.ErrStartFailed):
		status, body.Code, body.Message = http.StatusServiceUnavailable, "start_failed", fmt.Sprintf("function %s: %v", name, err)
		w.Header().Set("Retry-After", "1")
	case errors.Is(err, router.ErrFunctionRemoved):
		status, body.Code, body.Message = http.StatusNotFound, "function_not_found", err.Error()
	case errors.Is(err, router.ErrShuttingDown):
		status, body.Code, body.Message = http.StatusServiceUnavailable, "shutting_down", err.Error()
	default:
		status, body.Code, body.Message = http.StatusInternalServerError, "internal", err.Error()
	}
	writeJSON(w, status, body)
}

// setTimingHeaders reports where the time went, in the standard
// Server-Timing header (milliseconds) and Baton's own headers.
func setTimingHeaders(h http.Header, inv controller.Invocation) {
	h.Set("Baton-Invocation-Id", inv.ID)
	h.Set("Baton-Cold-Start", strconv.FormatBool(inv.Cold))
	if inv.Version > 0 {
		h.Set("Baton-Function-Version", strconv.Itoa(inv.Version))
	}
	if inv.Instance != "" {
		h.Set("Baton-Instance-Id", inv.Instance)
	}
	h.Set("Server-Timing", fmt.Sprintf("wait;dur=%.3f, init;dur=%.3f, exec;dur=%.3f",
		msf(inv.Wait), msf(inv.Init), msf(inv.Exec)))
}

func msf(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func (s *Server) listInvocations(w http.ResponseWriter, r *http.Request) {
	fn := r.URL.Query().Get("function")
	if fn != "" {
		if err := function.ValidateName(fn); err != nil {
			writeError(w, http.StatusBadRequest, "invalid_name", err.Error())
			return
		}
	}
	limit := 50
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 10000 {
			writeError(w, http.StatusBadRequest, "bad_limit", fmt.Sprintf("limit %q must be an integer between 1 and 10000", l))
			return
		}
		limit = n
	}
	writeJSON(w, http.StatusOK, map[string][]records.Record{"invocations": s.c.Records(fn, limit)})
}

func (s *Server) getInvocation(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	rec, ok := s.c.Record(id)
	if !ok {
		writeError(w, http.StatusNotFound, "invocation_not_found", fmt.Sprintf("no record of invocation %q (records are kept for the most recent invocations only)", id))
		return
	}
	writeJSON(w, http.StatusOK, rec)
}
