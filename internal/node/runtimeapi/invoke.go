package runtimeapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/workerapi"
)

// Functions invoking other functions through Baton, on the instance's
// endpoint:
//
//	POST /2018-06-01/baton/invoke/{function}   body = the payload
//
// 200 answers the callee's result. A function error answers 200 with the
// Lambda error JSON and HeaderFunctionError set, as Lambda's Invoke does;
// a platform error answers its 4xx/5xx with {code, message}. The caller's
// application is the instance's (Options.Invoke is bound to it).
const invokePrefix = "/2018-06-01/baton/invoke/"

// HeaderFunctionError marks an answer that is the callee's own error
// ("Unhandled"), the name the HTTP API uses too.
const HeaderFunctionError = "Baton-Function-Error"

// Invoker runs one invocation of a function for the instance's
// application: the platform's error (unknown function, throttled, too
// large) as an error classified by errdefs, the function's own in
// InvokeResult.Error.
type Invoker interface {
	Invoke(ctx context.Context, function string, payload []byte) (InvokeResult, error)
}

// InvokeResult is a callee's answer.
type InvokeResult struct {
	Payload []byte
	Error   *workerapi.FunctionError
}

// platformError is the body of a platform error on the invoke route.
type platformError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (s *Server) handleInvoke(w http.ResponseWriter, r *http.Request, name string) {
	if s.invoke == nil {
		writeJSON(w, http.StatusNotImplemented, platformError{Code: "invoke_unavailable",
			Message: "invoking functions through Baton is not available on this node"})
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, platformError{Code: "method_not_allowed",
			Message: fmt.Sprintf("method %s not allowed on %s", r.Method, r.URL.Path)})
		return
	}
	if err := function.ValidateName(name); err != nil {
		writeJSON(w, http.StatusBadRequest, platformError{Code: "invalid_name", Message: err.Error()})
		return
	}
	// The callee's payload is bounded like any invocation's: by the
	// node's max payload bytes, the same bound as a result.
	limit := s.maxResp
	tooLarge := platformError{Code: "payload_too_large",
		Message: fmt.Sprintf("the payload for %s is larger than the %d bytes an invocation may carry", name, limit)}
	if r.ContentLength > limit {
		drain(r)
		writeJSON(w, http.StatusRequestEntityTooLarge, tooLarge)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		s.log.Debug("reading an invoke payload failed", "function", name, "error", err)
		writeJSON(w, http.StatusBadRequest, platformError{Code: "bad_body", Message: "could not read request body"})
		return
	}
	if int64(len(body)) > limit {
		drain(r)
		writeJSON(w, http.StatusRequestEntityTooLarge, tooLarge)
		return
	}
	if len(body) == 0 {
		body = []byte("{}")
	}
	// The request's context ends when the calling instance goes away;
	// the callee's own timeout bounds the rest.
	res, err := s.invoke.Invoke(r.Context(), name, body)
	if err != nil {
		s.invokeError(w, name, err)
		return
	}
	if res.Error != nil {
		w.Header().Set(HeaderFunctionError, "Unhandled")
		writeJSON(w, http.StatusOK, res.Error)
		return
	}
	h := w.Header()
	if json.Valid(res.Payload) {
		h.Set("Content-Type", "application/json")
	} else {
		h.Set("Content-Type", "application/octet-stream")
	}
	h.Set("Content-Length", strconv.Itoa(len(res.Payload)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(res.Payload) // a failed write means the caller left
}

// invokeError answers a platform error with the status of its class and
// its errdefs code.
func (s *Server) invokeError(w http.ResponseWriter, name string, err error) {
	class, code := errdefs.Classify(err)
	msg := fmt.Sprintf("invoke %s: %v", name, err)
	switch {
	case class == errdefs.NotFound:
		code, msg = "function_not_found", fmt.Sprintf("function %q not found", name)
	case class == errdefs.Internal:
		s.log.Warn("invoke from a function failed", "function", name, "error", err)
	}
	if class == errdefs.Overloaded || class == errdefs.Unavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, errdefs.HTTPStatus(class), platformError{Code: code, Message: msg})
}
