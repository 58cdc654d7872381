package httpapi

import (
	"crypto/subtle"
	"net/http"
	"strings"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/internal/errdefs"
)

// openRoute says whether a request may go without the API token: health,
// synchronous invocation and function URLs (of functions and workflows) stay open because functions
// call each other through them; management and metrics need the token.
func openRoute(r *http.Request) bool {
	p := r.URL.Path
	switch {
	case p == "/healthz", p == "/fn" || strings.HasPrefix(p, "/fn/"), strings.HasPrefix(p, "/wf/"):
		return true
	case strings.HasPrefix(p, "/v1/functions/") && strings.HasSuffix(p, "/invoke"):
		// Only the invoke route: a function named "invoke" is not the
		// invoke route (/v1/functions/invoke), nor is anything deeper.
		return strings.Count(strings.TrimPrefix(p, "/v1/functions/"), "/") == 1
	}
	return false
}

// authorized checks the bearer token in constant time.
func (s *Server) authorized(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(s.opts.Token)) == 1
}

func (s *Server) writeUnauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="baton"`)
	s.writeErr(w, apiError(errdefs.Unauthenticated, apiv1.CodeUnauthorized, "this route needs the API token: send \"Authorization: Bearer <token>\". `baton server` writes the token to "+
		"the file api-token in its data directory (mode 0600) on first start; the CLI reads it from there, "+
		"or takes --token or BATON_TOKEN"))
}
