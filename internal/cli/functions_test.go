package cli

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	apiv1 "github.com/baton-faas/baton/api/v1"
)

// TestOversizedRequestsAreNotSent: an event or code archive over the
// server's limit fails in the CLI before the request is built or sent.
func TestOversizedRequestsAreNotSent(t *testing.T) {
	const limit = 2 << 20
	var sent atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			_ = json.NewEncoder(w).Encode(apiv1.Health{Status: "ok", MaxPayloadBytes: limit, MaxDeployBytes: limit})
			return
		}
		sent.Add(1)
		http.Error(w, "should not be called", http.StatusTeapot)
	}))
	defer srv.Close()

	big := filepath.Join(t.TempDir(), "big.zip")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(3 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()

	for _, args := range [][]string{
		{"invoke", "fn", "--server", srv.URL, "--data", "@" + big},
		{"deploy", "fn", "--server", srv.URL, "--runtime", "python3", "--handler", "app.h", "--code", big},
	} {
		root := NewRoot()
		root.SetArgs(args)
		root.SetOut(new(strings.Builder))
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), "over the server's limit of 2097152 bytes") {
			t.Errorf("%s: got %v, want a refusal naming the limit", args[0], err)
		}
	}
	if n := sent.Load(); n != 0 {
		t.Errorf("%d oversized requests were sent", n)
	}
}
