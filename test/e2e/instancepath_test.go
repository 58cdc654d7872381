package e2e

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

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
