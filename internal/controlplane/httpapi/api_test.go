package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	apiv1 "github.com/baton-faas/baton/api/v1"
)

// newTestServer builds the API without a controller: enough for what is
// answered before the controller is asked.
func newTestServer(t *testing.T, o Options) *Server {
	t.Helper()
	o.Metrics = http.NotFoundHandler()
	return New(o)
}

func serve(s http.Handler, method, target, body string, header map[string]string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	for k, v := range header {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w
}

func decodeError(t *testing.T, w *httptest.ResponseRecorder) apiv1.Error {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json (body %q)", ct, w.Body.String())
	}
	var e apiv1.Error
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Code == "" || e.Message == "" {
		t.Fatalf("error body %q: %v", w.Body.String(), err)
	}
	return e
}

func TestWrongMethodIs405(t *testing.T) {
	s := newTestServer(t, Options{})
	cases := []struct {
		method, path, allow string
	}{
		{http.MethodGet, "/v1/functions/hello/invoke", "POST"},
		{http.MethodPut, "/v1/functions/hello/invoke", "POST"},
		{http.MethodPost, "/v1/functions", "GET, HEAD"},
		{http.MethodPost, "/v1/functions/hello", "GET, HEAD, PUT, DELETE"},
		{http.MethodGet, "/v1/functions/hello/instances", "DELETE"},
		{http.MethodDelete, "/v1/invocations", "GET, HEAD"},
		{http.MethodPatch, "/v1/images/base/python", "PUT, DELETE"},
		{http.MethodPost, "/healthz", "GET, HEAD"},
	}
	for _, tc := range cases {
		w := serve(s, tc.method, tc.path, "", nil)
		if w.Code != http.StatusMethodNotAllowed {
			t.Errorf("%s %s: HTTP %d, want 405", tc.method, tc.path, w.Code)
			continue
		}
		if got := w.Header().Get("Allow"); got != tc.allow {
			t.Errorf("%s %s: Allow %q, want %q", tc.method, tc.path, got, tc.allow)
		}
		if e := decodeError(t, w); e.Code != apiv1.CodeMethodNotAllowed {
			t.Errorf("%s %s: code %q", tc.method, tc.path, e.Code)
		}
	}
	w := serve(s, http.MethodGet, "/v2/nothing", "", nil)
	if w.Code != http.StatusNotFound || decodeError(t, w).Code != apiv1.CodeNotFound {
		t.Errorf("unknown route: HTTP %d %s", w.Code, w.Body.String())
	}
}

func TestDeployRefusesDuplicateKeysAndUnknownFields(t *testing.T) {
	s := newTestServer(t, Options{})
	cases := []struct {
		body, code, mention string
	}{
		{`{"runtime":"python3","handler":"app.h","runtime":"nodejs","code":""}`, apiv1.CodeDuplicateKey, `"runtime"`},
		{`{"runtime":"python3","handler":"app.h","env":{"A":"1","A":"2"},"code":""}`, apiv1.CodeDuplicateKey, `"A"`},
		{`{"runtime":"python3","handler":"app.h","code":"","c\u006fde":""}`, apiv1.CodeDuplicateKey, `"code"`},
		{`{"runtime":"python3","handler":"app.h","memory":256,"code":""}`, apiv1.CodeMalformedJSON, `unknown field "memory"`},
	}
	for _, tc := range cases {
		w := serve(s, http.MethodPut, "/v1/functions/hello", tc.body, map[string]string{"Content-Type": "application/json"})
		if w.Code != http.StatusBadRequest {
			t.Errorf("%s: HTTP %d, want 400", tc.body, w.Code)
			continue
		}
		e := decodeError(t, w)
		if e.Code != tc.code || !strings.Contains(e.Message, tc.mention) {
			t.Errorf("%s: %s %q, want %s naming %s", tc.body, e.Code, e.Message, tc.code, tc.mention)
		}
	}
}

func TestDuplicateKey(t *testing.T) {
	for doc, want := range map[string]string{
		`{"a":1,"b":{"a":2},"c":[{"a":1},{"a":2}]}`: "",
		`{"a":"{\"a\":1,\"a\":2}","b":"x,\"b\""}`:   "",
		`[{"x":1,"y":[1,{"y":2}],"x":3}]`:           "x",
		`{"a":{"b":1,"b":2}}`:                       "b",
		`{"a\"b":1,"a\"b":2}`:                       `a"b`,
		`"just a string"`:                           "",
	} {
		got, dup := duplicateKey([]byte(doc))
		if got != want || dup != (want != "") {
			t.Errorf("%s: got %q %v, want %q", doc, got, dup, want)
		}
	}
}

func TestTokenGuardsManagementRoutes(t *testing.T) {
	s := newTestServer(t, Options{Token: "s3cret"})
	for _, tc := range []struct {
		method, path, auth string
		want               int
	}{
		{http.MethodGet, "/v1/functions", "", 401},
		{http.MethodGet, "/v1/functions", "Bearer wrong", 401},
		{http.MethodGet, "/v1/functions", "s3cret", 401},
		{http.MethodGet, "/metrics", "", 401},
		{http.MethodGet, "/v1/images", "", 401},
		{http.MethodPut, "/v1/functions/invoke", "", 401},
		{http.MethodGet, "/v1/functions/a/b/invoke", "", 401},
		{http.MethodGet, "/v2/unknown", "", 401},
		{http.MethodGet, "/metrics", "Bearer s3cret", 404}, // the test's metrics handler
		{http.MethodGet, "/v1/functions/hello/invoke", "", 405},
		{http.MethodPost, "/v1/functions", "Bearer s3cret", 405},
	} {
		w := serve(s, tc.method, tc.path, "", map[string]string{"Authorization": tc.auth})
		if w.Code != tc.want {
			t.Errorf("%s %s (%q): HTTP %d, want %d", tc.method, tc.path, tc.auth, w.Code, tc.want)
			continue
		}
		if tc.want == 401 {
			if e := decodeError(t, w); e.Code != apiv1.CodeUnauthorized || !strings.Contains(e.Message, "api-token") {
				t.Errorf("%s %s: 401 body %+v", tc.method, tc.path, e)
			}
		}
	}
}
