package multihost

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
)

// stepApp records each run ("<execution> <state> <attempt> <worker pid>")
// in the file STEP_LOG names before it works, so a run cut short still
// shows; a state named in event["slow"] sleeps event["sleep"] seconds on
// its first attempt.
const stepApp = `import os
import time


def step(event, context):
    custom = (context.client_context.custom if context.client_context is not None else None) or {}
    state, attempt = custom.get("baton-state", "?"), int(custom.get("baton-attempt", "0"))
    line = "%s %s %d %d\n" % (custom.get("baton-execution", "?"), state, attempt, os.getpid())
    fd = os.open(os.environ["STEP_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    if attempt == 1 and state in event.get("slow", []):
        time.sleep(event.get("sleep", 20))
    event.setdefault("trail", []).append([state, attempt])
    return event
`

// stepFlow runs A on one function, B (the slow one) and C on the other,
// and a Map of three items on the first between them.
func stepFlow(first, second string) string {
	return fmt.Sprintf(`{"StartAt": "A", "States": {
  "A": {"Type": "Task", "Resource": %[1]q, "Next": "B"},
  "B": {"Type": "Task", "Resource": %[2]q, "Next": "M"},
  "M": {"Type": "Map", "ItemsPath": "$.items", "ResultPath": "$.mapped", "Next": "C",
        "Iterator": {"StartAt": "Item", "States": {"Item": {"Type": "Task", "Resource": %[1]q, "End": true}}}},
  "C": {"Type": "Task", "Resource": %[2]q, "End": true}}}`, first, second)
}

// TestWorkflowsAcrossKills: the crash guarantees for workflows on
// netns hosts with real (process-sandboxed) Python steps. Executions
// sitting in a slow step when the worker running it is killed -9 run the
// step again (attempt 2) on another worker and finish; executions whose
// controller is killed -9 are resumed by the other controller at the step
// they were in (attempt 2, same input) and finish. Steps whose function
// another controller serves go over the global bus.
func TestWorkflowsAcrossKills(t *testing.T) {
	t.Parallel()
	c := newClusterWith(t, false, []string{"--sandbox", "process"}, "--log-level", "debug")
	dir := t.TempDir()
	logFile := filepath.Join(dir, "steps.log")
	cl := c.client(c.controllers...)
	code := zipApp(t, stepApp)
	candidates := []string{"wfa", "wfb", "wfc", "wfd", "wfe", "wff"}
	for _, name := range candidates {
		spec := apiv1.FunctionSpec{Runtime: "python3", Handler: "app.step", TimeoutSeconds: 120, MaxScale: 12,
			IdleTimeoutSeconds: 900, Env: map[string]string{"STEP_LOG": logFile}}
		waitFor(t, "deploy "+name, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := cl.Deploy(ctx, name, client.DeployRequest{FunctionSpec: spec, Code: code})
			return err
		})
	}
	// A function c1 serves and one c2 serves: c1's executions reach the
	// second over the global bus.
	var mine, theirs string
	for _, name := range candidates {
		switch owner := c.ownerOf(name); {
		case owner == c.controllers[0] && mine == "":
			mine = name
		case owner == c.controllers[1] && theirs == "":
			theirs = name
		}
	}
	if mine == "" || theirs == "" {
		t.Fatalf("no pair of functions served by different controllers among %v", candidates)
	}
	t.Logf("%s is served by %s, %s by %s", mine, c.controllers[0].id, theirs, c.controllers[1].id)
	waitFor(t, "deploy the workflow", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := cl.DeployWorkflow(ctx, "kills", []byte(stepFlow(mine, theirs)))
		return err
	})

	start := func(via *node, n int, sleep int) []string {
		t.Helper()
		var ids []string
		vc := c.client(via)
		for i := range n {
			input := fmt.Appendf(nil, `{"i": %d, "slow": ["B"], "sleep": %d, "items": [{"k": 1}, {"k": 2}, {"k": 3}]}`, i, sleep)
			waitFor(t, "start an execution through "+via.id, func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				x, err := vc.StartExecution(ctx, "kills", input, client.StartOptions{IdempotencyKey: fmt.Sprintf("%s-%d-%d", via.id, sleep, i)})
				if err == nil {
					ids = append(ids, x.ID)
				}
				return err
			})
		}
		// Each is in B, its first run started.
		for _, id := range ids {
			waitFor(t, id+" to run B", func() error {
				if strings.Contains(readFile(t, logFile), id+" B 1 ") {
					return nil
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				x, err := vc.DescribeExecution(ctx, id)
				if err != nil {
					return fmt.Errorf("B has not started: %w", err)
				}
				last := ""
				if n := len(x.History); n > 0 {
					last = fmt.Sprintf("%+v", x.History[n-1])
				}
				return fmt.Errorf("B has not started: %s %s %s, next %s, last event %s", x.Status, x.Error, x.Cause, x.ResumeAt, last)
			})
		}
		return ids
	}
	finished := func(ids []string) map[string]apiv1.Execution {
		t.Helper()
		out := map[string]apiv1.Execution{}
		for _, id := range ids {
			waitFor(t, id+" to finish", func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				x, err := c.client(c.liveControllers()...).DescribeExecution(ctx, id)
				if err != nil {
					return err
				}
				if x.Status == apiv1.ExecutionRunning {
					return fmt.Errorf("still running, next %s (runner %s, epoch %d)", x.ResumeAt, x.Runner, x.Epoch)
				}
				out[id] = x
				return nil
			})
			if x := out[id]; x.Status != apiv1.ExecutionSucceeded {
				t.Errorf("execution %s: %s %s: %s", id, x.Status, x.Error, x.Cause)
			}
		}
		return out
	}

	// A worker killed under running B steps.
	workerPhase := start(c.controllers[0], 6, 20)
	victim := c.busiestWorker()
	victim.proc.Kill()
	t.Logf("killed worker %s with B steps running", victim.id)
	xs := finished(workerPhase)
	rerun, buses := 0, map[string]int{}
	for id, x := range xs {
		trail := trailOf(t, x)
		if !strings.HasPrefix(trail, "[[A 1] [B ") || !strings.HasSuffix(trail, "[C 1]]") {
			t.Errorf("execution %s: trail %s", id, trail)
		}
		if strings.Contains(trail, "[B 2]") {
			rerun++
		}
		for _, ev := range x.History {
			if ev.Kind == "TaskSucceeded" {
				buses[ev.Bus]++
			}
		}
	}
	t.Logf("worker kill: %d of %d executions ran B again; tasks by bus %v", rerun, len(xs), buses)
	if rerun == 0 {
		t.Errorf("no execution ran B again after its worker was killed")
	}
	if buses["global"] == 0 || buses["local"] == 0 {
		t.Errorf("tasks by bus %v: want both buses (c1 serves %s, c2 %s)", buses, mine, theirs)
	}

	// A controller killed while it runs executions sitting in B.
	ctrlPhase := start(c.controllers[1], 6, 600)
	c.controllers[1].proc.Kill()
	t.Logf("killed controller %s with its executions in B", c.controllers[1].id)
	xs = finished(ctrlPhase)
	for id, x := range xs {
		if x.Runner != c.controllers[0].id || x.Epoch < 1 {
			t.Errorf("execution %s: runner %s epoch %d, want resumed by %s", id, x.Runner, x.Epoch, c.controllers[0].id)
		}
		if trail := trailOf(t, x); !strings.HasPrefix(trail, "[[A 1] [B 2]") || !strings.HasSuffix(trail, "[C 1]]") {
			t.Errorf("execution %s: trail %s, want B run again as attempt 2", id, trail)
		}
	}
	// Side effects: every step ran, A of each execution once.
	log := readFile(t, logFile)
	for _, id := range append(workerPhase, ctrlPhase...) {
		if n := strings.Count(log, id+" A "); n != 1 {
			t.Errorf("execution %s ran A %d times, want once", id, n)
		}
		if n := strings.Count(log, id+" B "); n < 1 || n > 2 {
			t.Errorf("execution %s ran B %d times", id, n)
		}
	}
}

func trailOf(t *testing.T, x apiv1.Execution) string {
	t.Helper()
	var out struct {
		Trail [][]any `json:"trail"`
	}
	if err := json.Unmarshal(x.Output, &out); err != nil {
		t.Fatalf("execution %s output %s: %v", x.ID, x.Output, err)
	}
	return fmt.Sprint(out.Trail)
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(data)
}
