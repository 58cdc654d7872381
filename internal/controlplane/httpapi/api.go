// Package httpapi is Baton's HTTP API: function management, synchronous
// invocation, function URLs (/fn), invocation records, health and metrics.
// The CLI uses nothing else.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/internal/errdefs"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/baton-faas/baton/internal/controlplane/controller"
	"github.com/baton-faas/baton/internal/controlplane/router"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/triggers"
	"github.com/baton-faas/baton/internal/workflow/engine"
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
	// Token, if set, is the bearer token every route but health,
	// invocation and function URLs requires.
	Token string
	// Nodes answers GET /v1/nodes; nil answers 501.
	Nodes Nodes
	// Self is this controller's node id, named on requests it sends on to
	// the controller owning their function (cluster mode).
	Self string
	// Triggers serves /v1/triggers; nil answers 501.
	Triggers *triggers.Store
	// Workflows serves /v1/workflows, /v1/executions and /wf; nil
	// answers 501.
	Workflows *engine.Engine
}

// Server serves the API.
type Server struct {
	c    *controller.Controller
	opts Options
	log  *slog.Logger
	mux  *http.ServeMux
	// forwarder sends requests on to the controllers owning their
	// functions (cluster mode).
	forwarder *http.Client

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
	s := &Server{c: o.Controller, opts: o, log: o.Logger, mux: http.NewServeMux(), forwarder: newForwarder()}
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
	s.mux.HandleFunc("GET /v1/nodes", s.listNodes)
	s.mux.HandleFunc("GET /v1/dlq/{name}", s.listDeadLetters)
	s.mux.HandleFunc("GET /v1/dlq/{name}/{seq}", s.getDeadLetter)
	s.mux.HandleFunc("POST /v1/dlq/{name}/redrive", s.redrive)
	s.mux.HandleFunc("POST /v1/triggers", s.addTrigger)
	s.mux.HandleFunc("GET /v1/triggers", s.listTriggers)
	s.mux.HandleFunc("DELETE /v1/triggers/{id}", s.removeTrigger)
	s.mux.HandleFunc("GET /v1/workflows", s.listWorkflows)
	s.mux.HandleFunc("PUT /v1/workflows/{name}", s.putWorkflow)
	s.mux.HandleFunc("GET /v1/workflows/{name}", s.getWorkflow)
	s.mux.HandleFunc("DELETE /v1/workflows/{name}", s.deleteWorkflow)
	s.mux.HandleFunc("POST /v1/workflows/{name}/executions", s.startExecution)
	s.mux.HandleFunc("GET /v1/workflows/{name}/executions", s.listExecutions)
	s.mux.HandleFunc("GET /v1/executions/{id}", s.describeExecution)
	s.mux.HandleFunc("/wf/{name}", s.workflowURL)
	s.mux.HandleFunc("/fn/{name}", s.functionURL)
	s.mux.HandleFunc("/fn/{name}/{path...}", s.functionURL)
	s.mux.HandleFunc("/", s.noRoute)
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.opts.Token != "" && !openRoute(r) && !s.authorized(r) {
		s.writeUnauthorized(w)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// ErrorBody is the JSON body of every API error.
type ErrorBody = apiv1.Error

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, apiv1.Health{Status: "ok", Isolation: s.c.Isolation(r.Context()),
		MaxPayloadBytes: s.opts.MaxPayloadBytes, MaxDeployBytes: s.opts.MaxSpecBytes})
}

func (s *Server) view(ctx context.Context, fn function.Function) apiv1.Function {
	out := functionToWire(fn, s.c.Isolation(ctx), s.c.Status(fn.Name))
	out.Status.Owner = s.c.OwnerOf(fn.Name)
	return out
}

func (s *Server) putFunction(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := function.ValidateName(name); err != nil {
		s.writeErr(w, apiError(errdefs.Invalid, apiv1.CodeInvalidName, err.Error()))
		return
	}
	var req apiv1.DeployRequest
	if err := s.decodeBody(w, r, s.opts.MaxSpecBytes, "function spec", &req); err != nil {
		s.writeErr(w, err)
		return
	}
	res, err := s.c.Deploy(r.Context(), name, specFromWire(req.FunctionSpec), req.Code)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	v := s.view(r.Context(), res.Function)
	v.Created, v.NewVersion = res.Created, res.NewVersion
	status := http.StatusOK
	if res.Created {
		status = http.StatusCreated
	}
	writeJSON(w, status, v)
}

func (s *Server) getFunction(w http.ResponseWriter, r *http.Request) {
	// The live status (instances) is the owner's to tell.
	if s.c.Exists(r.PathValue("name")) && s.forwardToOwner(w, r, r.PathValue("name")) {
		return
	}
	fn, _, err := s.c.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		s.writeErr(w, err)
		return
	}
	v := s.view(r.Context(), fn)
	v.WorkingSet = workingSetToWire(fn.Spec.PrefetchOn(), s.c.WorkingSets(r.Context(), fn.Name, fn.Version))
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) listFunctions(w http.ResponseWriter, r *http.Request) {
	fns, err := s.c.List(r.Context())
	if err != nil {
		s.writeErr(w, err)
		return
	}
	// ?owned=true: only the functions this controller serves (what other
	// controllers ask for to complete their lists).
	ownedOnly := r.URL.Query().Get("owned") == "true"
	out := apiv1.FunctionList{Functions: make([]apiv1.Function, 0, len(fns))}
	for _, fn := range fns {
		v := s.view(r.Context(), fn)
		if ownedOnly && v.Status.Owner != s.opts.Self {
			continue
		}
		out.Functions = append(out.Functions, v)
	}
	if !ownedOnly && s.opts.Self != "" {
		s.ownersStatus(r, out.Functions)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteFunction(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.c.Delete(r.Context(), name); err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, apiv1.Deleted{Deleted: name})
}

// recycle stops a function's instances so that its next request is cold.
func (s *Server) recycle(w http.ResponseWriter, r *http.Request) {
	if s.c.Exists(r.PathValue("name")) && s.forwardToOwner(w, r, r.PathValue("name")) {
		return
	}
	stopped, pending, err := s.c.Recycle(r.PathValue("name"))
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, apiv1.Recycled{Stopped: stopped, StoppingWhenIdle: pending})
}

// readPayload checks that the function exists, then reads an invocation
// body within the payload limit and the server's budget of request bytes
// held at once (queued requests keep their bodies in memory). The caller
// must call the returned release when the invocation is over.
func (s *Server) readPayload(w http.ResponseWriter, r *http.Request, name string) ([]byte, func(), bool) {
	if !s.c.Lookup(r.Context(), name) {
		s.writeErr(w, apiError(errdefs.NotFound, apiv1.CodeFunctionNotFound, fmt.Sprintf("function %q not found", name)))
		return nil, nil, false
	}
	return s.readHeld(w, r)
}

// readHeld reads a request body within the payload limit and the budget
// of request bytes held at once.
func (s *Server) readHeld(w http.ResponseWriter, r *http.Request) ([]byte, func(), bool) {
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
	s.writeErr(w, apiError(errdefs.Overloaded, apiv1.CodeServerBusy,
		fmt.Sprintf("the server already holds %d bytes of request payloads; retry later", s.opts.MaxInflightBytes)))
}

func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxPayloadBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.writeErr(w, apiError(errdefs.TooLarge, apiv1.CodePayloadTooLarge,
				fmt.Sprintf("request body is larger than the %d byte payload limit (the server's --max-payload)", s.opts.MaxPayloadBytes)))
			return nil, err
		}
		s.writeErr(w, apiError(errdefs.Invalid, apiv1.CodeBadBody, "could not read request body: "+err.Error()))
		return nil, err
	}
	return body, nil
}

func (s *Server) invoke(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := function.ValidateName(name); err != nil {
		s.writeErr(w, apiError(errdefs.Invalid, apiv1.CodeInvalidName, err.Error()))
		return
	}
	// Bad headers are refused before anything is read or stored.
	kind, err := invocationType(r)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	key, err := idempotencyKey(r)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	body, release, ok := s.readPayload(w, r, name)
	if !ok {
		return
	}
	defer release()
	payload := body
	if len(payload) == 0 {
		payload = []byte("{}")
	} else if !json.Valid(payload) {
		s.writeErr(w, apiError(errdefs.Invalid, apiv1.CodeMalformedJSON, "the event (request body) must be valid JSON"))
		return
	}
	if kind == apiv1.InvocationTypeEvent {
		s.invokeAsync(w, r, name, payload, key)
		return
	}
	inv, ok := s.runInvocation(w, r, name, "", payload, body)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(inv.Payload)
}

// runInvocation invokes and writes every failure response itself; it
// returns ok only when the function produced a result here. A request for
// a function another controller owns is sent on to it as it came (body is
// the request's own body) and answered from there.
func (s *Server) runInvocation(w http.ResponseWriter, r *http.Request, name, id string, payload, body []byte) (controller.Invocation, bool) {
	var inv controller.Invocation
	var err error
	for attempt := 1; ; attempt++ {
		if s.routeOrForward(w, r, name, body) {
			return inv, false
		}
		inv, err = s.c.Invoke(r.Context(), name, id, payload)
		// The function moved while the request waited here; it did not
		// run, so it follows the function.
		if !errors.Is(err, router.ErrReleased) || attempt == maxOwnerMoves {
			break
		}
	}
	if err != nil {
		if errdefs.Is(err, errdefs.NotFound) {
			err = apiError(errdefs.NotFound, apiv1.CodeFunctionNotFound, fmt.Sprintf("function %q not found", name))
		}
		s.writeErr(w, err)
		return inv, false
	}
	setTimingHeaders(w.Header(), inv)
	if inv.FunctionError != nil || inv.Err != nil {
		s.writeErr(w, &functionFailure{name: name, id: inv.ID, fe: inv.FunctionError, err: inv.Err})
		return inv, false
	}
	return inv, true
}

// maxOwnerMoves bounds how often one request follows its function to a
// new owner.
const maxOwnerMoves = 3

// setTimingHeaders reports where the time went, in the standard
// Server-Timing header (milliseconds) and Baton's own headers.
func setTimingHeaders(h http.Header, inv controller.Invocation) {
	h.Set(apiv1.HeaderInvocationID, inv.ID)
	h.Set(apiv1.HeaderColdStart, strconv.FormatBool(inv.Cold))
	if inv.Version > 0 {
		h.Set(apiv1.HeaderFunctionVersion, strconv.Itoa(inv.Version))
	}
	if inv.Instance != "" {
		h.Set(apiv1.HeaderInstanceID, inv.Instance)
	}
	h.Set("Server-Timing", fmt.Sprintf("wait;dur=%.3f, init;dur=%.3f, exec;dur=%.3f",
		msf(inv.Wait), msf(inv.Init), msf(inv.Exec)))
}

func msf(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func (s *Server) listInvocations(w http.ResponseWriter, r *http.Request) {
	fn := r.URL.Query().Get("function")
	if fn != "" {
		if err := function.ValidateName(fn); err != nil {
			s.writeErr(w, apiError(errdefs.Invalid, apiv1.CodeInvalidName, err.Error()))
			return
		}
	}
	limit := 50
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 10000 {
			s.writeErr(w, apiError(errdefs.Invalid, apiv1.CodeBadLimit, fmt.Sprintf("limit %q must be an integer between 1 and 10000", l)))
			return
		}
		limit = n
	}
	recs := s.c.Records(fn, limit)
	out := apiv1.InvocationList{Invocations: make([]apiv1.Invocation, 0, len(recs))}
	for _, r := range recs {
		out.Invocations = append(out.Invocations, recordToWire(r))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getInvocation(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if s.asyncInvocation(w, r, id) {
		return
	}
	rec, ok := s.c.Record(id)
	if !ok {
		s.writeErr(w, apiError(errdefs.NotFound, apiv1.CodeInvocationNotFound, fmt.Sprintf("no record of invocation %q (records are kept for the most recent invocations only)", id)))
		return
	}
	writeJSON(w, http.StatusOK, recordToWire(rec))
}
