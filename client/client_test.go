package client_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
)

// TestDeployStreamsAValidRequest: the streamed deploy body is the JSON of
// the spec and the base64 code, of the announced length, with the token.
func TestDeployStreamsAValidRequest(t *testing.T) {
	spec := apiv1.FunctionSpec{Runtime: "python3", Handler: "app.h", Env: map[string]string{"A": "b"}, MaxScale: 3}
	code := bytes.Repeat([]byte{0, 1, 2, 250, 251}, 10007)
	var got apiv1.DeployRequest
	var length int64
	var auth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		length, auth = r.ContentLength, r.Header.Get("Authorization")
		if int64(len(body)) != length {
			t.Errorf("body is %d bytes, Content-Length %d", len(body), length)
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil {
			t.Errorf("deploy body is not the request's JSON: %v", err)
		}
		_ = json.NewEncoder(w).Encode(apiv1.Function{Name: "f", Version: 1, Created: true})
	}))
	defer srv.Close()
	c, err := client.New(srv.URL, nil, client.WithToken("tok"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.Deploy(t.Context(), "f", client.DeployRequest{FunctionSpec: spec, Code: code})
	if err != nil || !v.Created {
		t.Fatalf("deploy: %+v %v", v, err)
	}
	if got.Runtime != spec.Runtime || got.Env["A"] != "b" || got.MaxScale != 3 || !bytes.Equal(got.Code, code) {
		t.Errorf("server got %+v (code %d bytes)", got.FunctionSpec, len(got.Code))
	}
	if want, _ := client.DeployRequestSize(spec, int64(len(code))); want != length {
		t.Errorf("DeployRequestSize %d, request was %d bytes", want, length)
	}
	if auth != "Bearer tok" {
		t.Errorf("Authorization %q", auth)
	}
}
