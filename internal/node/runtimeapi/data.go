package runtimeapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/baton-faas/baton/internal/datalayer"
	"github.com/baton-faas/baton/internal/errdefs"
)

// The data layers (SAND) on the instance's endpoint, so that any runtime
// reaches them with plain HTTP:
//
//	PUT    /2018-06-01/baton/data/{key}[?scope=local|global]   body = value; 204
//	GET    /2018-06-01/baton/data/{key}[?scope=local|global]   200 with the value, or 404
//	DELETE /2018-06-01/baton/data/{key}[?scope=local|global]   204
//
// A put's Content-Type is kept and returned by gets. The application is
// the instance's (Options.Data is bound to it); a request cannot name
// another.
const dataPrefix = "/2018-06-01/baton/data/"

// headerDataScope tells which layer answered a get.
const headerDataScope = "Baton-Data-Scope"

// dataTimeout bounds one data request's wait for the global layer.
const dataTimeout = 30 * time.Second

func (s *Server) handleData(w http.ResponseWriter, r *http.Request, key string) {
	if s.data == nil {
		writeError(w, http.StatusNotImplemented, "DataLayerUnavailable", "the data layer is not enabled on this node")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodPut && r.Method != http.MethodDelete {
		w.Header().Set("Allow", "GET, PUT, DELETE")
		writeError(w, http.StatusMethodNotAllowed, "MethodNotAllowed",
			fmt.Sprintf("method %s not allowed on %s", r.Method, r.URL.Path))
		return
	}
	if err := datalayer.ValidKey(key); err != nil {
		s.dataError(w, err)
		return
	}
	scope, err := datalayer.ParseScope(r.URL.Query().Get("scope"))
	if err != nil {
		s.dataError(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dataTimeout)
	defer cancel()
	switch r.Method {
	case http.MethodPut:
		s.putData(ctx, w, r, key, scope)
	case http.MethodGet:
		v, from, err := s.data.Get(ctx, key, scope)
		if err != nil {
			s.dataError(w, err)
			return
		}
		h := w.Header()
		h.Set("Content-Type", v.ContentType)
		h.Set("Content-Length", strconv.Itoa(len(v.Data)))
		h.Set(headerDataScope, string(from))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(v.Data) // a failed write means the client left
	case http.MethodDelete:
		if err := s.data.Delete(ctx, key, scope); err != nil {
			s.dataError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *Server) putData(ctx context.Context, w http.ResponseWriter, r *http.Request, key string, scope datalayer.Scope) {
	limit := s.data.MaxValue()
	if r.ContentLength > limit {
		drain(r)
		s.dataError(w, fmt.Errorf("%w: %d bytes, at most %d", datalayer.ErrTooLarge, r.ContentLength, limit))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		s.log.Debug("reading a data value failed", "key", key, "error", err)
		writeError(w, http.StatusBadRequest, "InvalidRequest", "could not read request body")
		return
	}
	if int64(len(body)) > limit {
		drain(r)
		s.dataError(w, fmt.Errorf("%w: more than %d bytes", datalayer.ErrTooLarge, limit))
		return
	}
	v := datalayer.Value{ContentType: r.Header.Get("Content-Type"), Data: body}
	if err := s.data.Put(ctx, key, scope, v); err != nil {
		s.dataError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// drainBytes bounds what drain reads of a refused value.
const drainBytes = 64 << 20

// drain reads what is left of a refused value's body, up to drainBytes,
// before the refusal is sent: simple clients (urllib, http.client) send
// the whole body before they read an answer, and a server that closes the
// connection on an unread body makes them see a reset instead of the 413.
// The instance's own loopback bandwidth is all it costs.
func drain(r *http.Request) {
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, drainBytes))
}

// dataError answers a data layer error in the Runtime API's error shape:
// the status of its class, its code as the error type (invalid_key:
// InvalidKey), and a message naming what is wrong.
func (s *Server) dataError(w http.ResponseWriter, err error) {
	class, code := errdefs.Classify(err)
	status := errdefs.HTTPStatus(class)
	msg := err.Error()
	switch {
	case class == errdefs.Internal:
		s.log.Warn("data layer request failed", "error", err)
		code = "data_layer_error"
	case errors.Is(err, datalayer.ErrNotFound):
		msg = "key not found"
	}
	writeError(w, status, errorType(code), msg)
}

// errorType turns an error code into the CamelCase of the Runtime API's
// error types.
func errorType(code string) string {
	var b strings.Builder
	for part := range strings.SplitSeq(code, "_") {
		if part != "" {
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String()
}
