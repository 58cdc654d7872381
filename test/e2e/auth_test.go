package e2e

import (
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/baton-faas/baton/internal/function"
)

// TestHostNetworkFunctionCannotManage: a function with network host
// reaches the server's port, but the management API wants the token,
// which the function (uid 1000 in its container) cannot read.
func TestHostNetworkFunctionCannotManage(t *testing.T) {
	t.Parallel()
	srv := startContainerServer(t)
	_, sp, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	port, err := strconv.Atoi(sp)
	if err != nil {
		t.Fatalf("server URL %s: %v", srv.URL, err)
	}
	spec := pySpec("listfunctions")
	spec.Network = function.NetworkHost
	deploy(t, srv, "snoop", spec, isoDir)

	var r struct {
		TokenRead  bool   `json:"tokenRead"`
		TokenError string `json:"tokenError"`
		Status     int    `json:"status"`
		Body       string `json:"body"`
		Error      string `json:"error"`
	}
	mustInvoke(t, srv, "snoop", map[string]any{"port": port, "tokenFile": filepath.Join(srv.DataDir, "api-token")}, &r)
	if r.TokenRead {
		t.Errorf("the function read the server's API token file")
	}
	if r.Status != http.StatusUnauthorized {
		t.Fatalf("a host-network function listing functions got %+v, want HTTP 401", r)
	}
	if !strings.Contains(r.Body, `"unauthorized"`) || !strings.Contains(r.Body, "api-token") {
		t.Errorf("401 body does not say how to get the token: %s", r.Body)
	}
}

// TestManagementAPINeedsToken: management routes and metrics answer 401
// without the right token; health, invoke and function URLs stay open.
func TestManagementAPINeedsToken(t *testing.T) {
	requirePython(t)
	t.Parallel()
	srv := startServer(t)
	deploy(t, srv, "echo", pySpec("echo"), pyDir)
	wrong := map[string]string{"Authorization": "Bearer not-the-token"}
	for _, tc := range []struct {
		method, path string
		header       map[string]string
		want         int
	}{
		{http.MethodGet, "/v1/functions", nil, 401},
		{http.MethodGet, "/v1/functions", wrong, 401},
		{http.MethodGet, "/v1/functions/echo", nil, 401},
		{http.MethodDelete, "/v1/functions/echo", nil, 401},
		{http.MethodGet, "/v1/invocations", nil, 401},
		{http.MethodGet, "/v1/images", nil, 401},
		{http.MethodGet, "/metrics", nil, 401},
		{http.MethodGet, "/v1/functions", srv.AuthHeader(), 200},
		{http.MethodGet, "/healthz", nil, 200},
		{http.MethodPost, "/v1/functions/echo/invoke", nil, 200},
		{http.MethodGet, "/fn/echo", nil, 200},
		{http.MethodGet, "/v1/functions/echo/invoke", nil, 405},
	} {
		var body []byte
		if tc.method == http.MethodPost {
			body = []byte(`{}`)
		}
		res := do(t, tc.method, srv.URL+tc.path, body, tc.header)
		if res.Status != tc.want {
			t.Errorf("%s %s: HTTP %d, want %d: %s", tc.method, tc.path, res.Status, tc.want, res.Body)
			continue
		}
		switch tc.want {
		case 401:
			if eb := errorBody(t, res.Status, res.Body); eb.Code != "unauthorized" || !strings.Contains(eb.Message, "api-token") {
				t.Errorf("%s %s: 401 body %+v", tc.method, tc.path, eb)
			}
		case 405:
			if allow := res.Header.Get("Allow"); allow != "POST" {
				t.Errorf("%s %s: Allow %q, want POST", tc.method, tc.path, allow)
			}
			if eb := errorBody(t, res.Status, res.Body); eb.Code != "method_not_allowed" {
				t.Errorf("%s %s: body %+v", tc.method, tc.path, eb)
			}
		}
	}
}
