package httpapi

import (
	"fmt"
	"net/http"
	"strings"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/internal/errdefs"
)

// methods are those the fallback probes the routes with.
var methods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions}

// noRoute answers requests no route takes: 405 with Allow when the path
// exists for other methods, else 404, both with a JSON body.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range methods {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); pattern != "/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) == 0 {
		s.writeErr(w, apiError(errdefs.NotFound, apiv1.CodeNotFound, fmt.Sprintf("no API route for %s %s", r.Method, r.URL.Path)))
		return
	}
	w.Header().Set("Allow", strings.Join(allow, ", "))
	writeJSON(w, http.StatusMethodNotAllowed, apiv1.Error{Code: apiv1.CodeMethodNotAllowed,
		Message: fmt.Sprintf("%s is not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(allow, " or "))})
}
