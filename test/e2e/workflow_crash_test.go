package e2e

import (
	"encoding/json"
	"fmt"
	"testing"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/test/harness"
)

const crashFlow = `{"StartAt": "A", "States": {
  "A": {"Type": "Task", "Resource": "wfstep", "Next": "B"},
  "B": {"Type": "Task", "Resource": "wfstep", "Next": "C"},
  "C": {"Type": "Task", "Resource": "wfstep", "End": true}}}`

// TestWorkflowResumesAfterServerKill: a server killed -9 while its
// executions sit in step B resumes them when it starts again: A is not run
// again (its end was recorded), B runs again with the same input as
// attempt 2, C runs once, and every execution succeeds.
func TestWorkflowResumesAfterServerKill(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	srv := harness.Start(t, harness.Options{DataDir: dataDir})
	spec := pySpec("step")
	spec.MaxScale = 8
	spec.TimeoutSeconds = 120
	deploy(t, srv, "wfstep", spec, "testdata/wfcrash")
	if _, err := srv.Client.DeployWorkflow(ctx(t), "crashy", []byte(crashFlow)); err != nil {
		t.Fatal(err)
	}
	const n = 4
	var ids []string
	for i := range n {
		x, err := srv.Client.StartExecution(ctx(t), "crashy", fmt.Appendf(nil, `{"i": %d, "slow": ["B"], "sleep": 600}`, i), client.StartOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, x.ID)
	}
	// Every execution is in B, and its journal says so.
	for _, id := range ids {
		waitFor(t, settle, id+" to be running B", func() (bool, string) {
			x, err := srv.Client.DescribeExecution(ctx(t), id)
			if err != nil {
				return false, err.Error()
			}
			running := false
			for _, ev := range x.History {
				running = running || ev.Kind == "TaskScheduled" && ev.State == "B" && ev.Attempt == 1
			}
			return x.ResumeAt == "B" && running, fmt.Sprintf("status %s %s %s, next %s", x.Status, x.Error, x.Cause, x.ResumeAt)
		})
	}
	srv.Kill()
	srv = harness.Start(t, harness.Options{DataDir: dataDir})
	for _, id := range ids {
		var x apiv1.Execution
		waitFor(t, settle, id+" to finish after the restart", func() (bool, string) {
			var err error
			x, err = srv.Client.DescribeExecution(ctx(t), id)
			if err != nil {
				return false, err.Error()
			}
			return x.Status != apiv1.ExecutionRunning, x.Status
		})
		if x.Status != apiv1.ExecutionSucceeded || x.Epoch != 1 {
			t.Fatalf("execution %s after the crash: %s %s %s (epoch %d)", id, x.Status, x.Error, x.Cause, x.Epoch)
		}
		var out struct {
			I     int     `json:"i"`
			Trail [][]any `json:"trail"`
		}
		if err := json.Unmarshal(x.Output, &out); err != nil {
			t.Fatal(err)
		}
		// B's second run saw the input its first run saw: A's output.
		if got := fmt.Sprint(out.Trail); got != "[[A 1] [B 2] [C 1]]" {
			t.Errorf("execution %s: trail %s, want A once, B as attempt 2, C once", id, got)
		}
		resumed := false
		for _, ev := range x.History {
			resumed = resumed || ev.Kind == "ExecutionResumed" && ev.State == "B" && ev.Attempt == 2
		}
		if !resumed {
			t.Errorf("execution %s: no ExecutionResumed at B (attempt 2) in its history", id)
		}
	}
}
