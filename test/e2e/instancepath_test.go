package e2e

import (
	"archive/zip"
	"bytes"
	"crypto/rand"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/controlplane/records"
	"github.com/baton-faas/baton/internal/function"
)

// TestNodeCrashOutputInRecords checks that what an N:1 Node instance prints
// as it dies, which names no invocation, is in the record of every
// invocation the crash failed.
func TestNodeCrashOutputInRecords(t *testing.T) {
	requireNode(t)
	t.Parallel()
	srv := startServer(t)
	const name = "die-together"
	deploy(t, srv, name, function.Spec{Runtime: function.RuntimeNode, Handler: "index.dieTogether", Concurrency: 2, MaxScale: 1}, nodeDir)

	marker := fmt.Sprintf("sky fell %d", time.Now().UnixNano())
	event := fmt.Sprintf(`{"target": 2, "waitMs": 20000, "marker": %q}`, marker)
	var wg sync.WaitGroup
	ids := make([]string, 2)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _ := invoke(t, srv, name, event)
			ids[i] = resp.ID
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id == "" {
			t.Fatal("an invocation has no id")
		}
		rec := record(t, srv, id)
		if rec.Status != records.StatusCrash {
			t.Errorf("record %s: status %s, want %s (logs %q)", id, rec.Status, records.StatusCrash, rec.Logs)
		}
		if !strings.Contains(rec.Logs, "FATAL: "+marker) {
			t.Errorf("record %s lacks the crash output: logs %q", id, rec.Logs)
		}
	}
}

// codeZip is a Python function plus extra files blob0.bin, blob1.bin, ...
func codeZip(t *testing.T, extra ...[]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	files := map[string][]byte{"app.py": []byte("def handler(e, c):\n    return 1\n")}
	for i, b := range extra {
		files[fmt.Sprintf("blob%d.bin", i)] = b
	}
	for name, body := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestCodeSizeLimits checks that code that would unpack far beyond its
// upload (a zip bomb) or beyond the per-function limit is refused at
// deploy with 413 and a message naming the limit, and that nothing of it
// is stored.
func TestCodeSizeLimits(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--max-code-bytes", "16777216")
	spec := function.Spec{Runtime: function.RuntimePython, Handler: "app.handler"}

	zeros := make([]byte, 3<<20)
	bomb := codeZip(t, zeros, zeros, zeros, zeros, zeros, zeros, zeros, zeros) // ~25 KiB that unpack to 24 MiB
	_, err := srv.Client.Deploy(ctx(t), "bomb", client.DeployRequest{FunctionSpec: apiv1.FunctionSpec(spec), Code: bomb})
	assertAPIError(t, err, http.StatusRequestEntityTooLarge, "limit of 100 times the archive's size")

	random := func() []byte { // incompressible: no ratio problem
		b := make([]byte, 9<<20)
		_, _ = rand.Read(b)
		return b
	}
	_, err = srv.Client.Deploy(ctx(t), "big", client.DeployRequest{FunctionSpec: apiv1.FunctionSpec(spec), Code: codeZip(t, random(), random())})
	assertAPIError(t, err, http.StatusRequestEntityTooLarge, "limit of 16 MiB unpacked per function")

	for _, name := range []string{"bomb", "big"} {
		if _, err := srv.Client.Get(ctx(t), name); err == nil {
			t.Errorf("refused function %s was stored", name)
		}
	}
}
