package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/internal/async"
	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/function"
)

// maxIdempotencyKey bounds an idempotency key (as AWS's client tokens).
const maxIdempotencyKey = 256

// invocationType reads the requested invocation type: "" for a
// synchronous call, InvocationTypeEvent for an asynchronous one.
func invocationType(r *http.Request) (string, error) {
	t := r.Header.Get(apiv1.HeaderInvocationType)
	if t == "" {
		t = r.Header.Get(apiv1.HeaderAmzInvocationType)
	}
	switch t {
	case "", apiv1.InvocationTypeRequestResponse:
		return "", nil
	case apiv1.InvocationTypeEvent:
		return t, nil
	}
	return "", apiError(errdefs.Invalid, apiv1.CodeBadInvocationType,
		fmt.Sprintf("invocation type %q: want %s (asynchronous) or %s (synchronous, the default)", t, apiv1.InvocationTypeEvent, apiv1.InvocationTypeRequestResponse))
}

// idempotencyKey reads and checks the idempotency key header.
func idempotencyKey(r *http.Request) (string, error) {
	key := r.Header.Get(apiv1.HeaderIdempotencyKey)
	if len(key) > maxIdempotencyKey {
		return "", apiError(errdefs.Invalid, apiv1.CodeBadIdempotencyKey,
			fmt.Sprintf("idempotency key is %d bytes, more than %d", len(key), maxIdempotencyKey))
	}
	for _, c := range key {
		if c < 0x21 || c > 0x7e {
			return "", apiError(errdefs.Invalid, apiv1.CodeBadIdempotencyKey,
				"idempotency key must be printable ASCII without spaces")
		}
	}
	return key, nil
}

// invokeAsync stores an event and answers 202 with its id.
func (s *Server) invokeAsync(w http.ResponseWriter, r *http.Request, name string, payload []byte, key string) {
	acc, err := s.c.InvokeAsync(r.Context(), name, payload, key)
	if err != nil {
		if errdefs.Is(err, errdefs.NotFound) {
			err = apiError(errdefs.NotFound, apiv1.CodeFunctionNotFound, fmt.Sprintf("function %q not found", name))
		}
		s.writeErr(w, err)
		return
	}
	w.Header().Set(apiv1.HeaderInvocationID, acc.ID)
	writeJSON(w, http.StatusAccepted, apiv1.AsyncAccepted{ID: acc.ID, Duplicate: acc.Duplicate})
}

// asyncInvocation answers GET /v1/invocations/{id} for an asynchronous
// invocation; false means it is not one (the records are asked then).
func (s *Server) asyncInvocation(w http.ResponseWriter, r *http.Request, id string) bool {
	inv, err := s.c.AsyncInvocation(r.Context(), id)
	if err != nil {
		if errors.Is(err, async.ErrUnknown) || errdefs.Is(err, errdefs.NotImplemented) {
			return false
		}
		s.writeErr(w, err)
		return true
	}
	out := apiv1.AsyncInvocation{ID: inv.ID, Function: inv.Function, State: inv.State, Created: inv.Created, Updated: inv.Updated,
		Attempts: make([]apiv1.AsyncAttempt, 0, len(inv.Attempts)), Result: inv.Result, ResultTruncated: inv.ResultTruncated,
		Destination: inv.Destination, Reason: inv.Reason}
	for _, a := range inv.Attempts {
		out.Attempts = append(out.Attempts, apiv1.AsyncAttempt{Number: a.Number, Start: a.Start, End: a.End,
			Error: a.Error, ErrorType: a.ErrorType, Interrupted: a.Interrupted})
	}
	writeJSON(w, http.StatusOK, out)
	return true
}

func dlqName(w http.ResponseWriter, r *http.Request, s *Server) (string, bool) {
	name := r.PathValue("name")
	if err := function.ValidateName(name); err != nil {
		s.writeErr(w, apiError(errdefs.Invalid, apiv1.CodeInvalidDeadLetterName,
			fmt.Sprintf("dead-letter queue name %q must be 1-64 characters of a-z, 0-9 and '-'", name)))
		return "", false
	}
	return name, true
}

func (s *Server) listDeadLetters(w http.ResponseWriter, r *http.Request) {
	name, ok := dlqName(w, r, s)
	if !ok {
		return
	}
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			s.writeErr(w, apiError(errdefs.Invalid, apiv1.CodeBadLimit, fmt.Sprintf("limit %q must be 1 to 10000", v)))
			return
		}
		limit = n
	}
	entries, err := s.c.DeadLetters(r.Context(), name, limit)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	out := apiv1.DeadLetterList{Entries: make([]apiv1.DeadLetter, 0, len(entries))}
	for _, e := range entries {
		out.Entries = append(out.Entries, apiv1.DeadLetter(e))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getDeadLetter(w http.ResponseWriter, r *http.Request) {
	name, ok := dlqName(w, r, s)
	if !ok {
		return
	}
	seq, err := strconv.ParseUint(strings.TrimSpace(r.PathValue("seq")), 10, 64)
	if err != nil || seq == 0 {
		s.writeErr(w, apiError(errdefs.Invalid, apiv1.CodeDeadLetterNotFound, fmt.Sprintf("entry %q must be a sequence number from baton dlq ls", r.PathValue("seq"))))
		return
	}
	e, err := s.c.DeadLetter(r.Context(), name, seq)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, apiv1.DeadLetter(e))
}

func (s *Server) redrive(w http.ResponseWriter, r *http.Request) {
	name, ok := dlqName(w, r, s)
	if !ok {
		return
	}
	ids, err := s.c.Redrive(r.Context(), name)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, apiv1.Redriven{IDs: append([]string{}, ids...)})
}
