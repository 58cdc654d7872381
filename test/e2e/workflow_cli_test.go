package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/test/harness"
)

// greetDef greets $.name through wf-echo.
const greetDef = `{"StartAt":"Greet","States":{"Greet":{"Type":"Task","Resource":"wf-echo",
	"Parameters":{"greeting.$":"States.Format('Hello, {}!', $.name)"},"End":true}}}`

// failDef fails with the function's ValueError.
const failDef = `{"StartAt":"Boom","States":{"Boom":{"Type":"Task","Resource":"wf-fail",
	"Parameters":{"error":"ValueError","cause":"no good"},"End":true}}}`

// awaitExecution waits until an execution ended and returns it with its
// complete history.
func awaitExecution(t *testing.T, srv *harness.Server, id string) apiv1.Execution {
	t.Helper()
	waitFor(t, settle, "execution "+id+" should end", func() (bool, string) {
		x, err := srv.Client.DescribeExecution(ctx(t), id)
		if err != nil {
			return false, err.Error()
		}
		return x.Status != apiv1.ExecutionRunning, x.Status
	})
	return executionWithHistory(t, srv, id)
}

// wireExecution decodes an execution from a raw answer.
func wireExecution(t *testing.T, res httpResult) apiv1.Execution {
	t.Helper()
	var x apiv1.Execution
	if err := json.Unmarshal(res.Body, &x); err != nil {
		t.Fatalf("HTTP %d: %s is not an execution: %v", res.Status, res.Body, err)
	}
	return x
}

// testWorkflowAPI drives /v1/workflows, /v1/executions and /wf over HTTP.
func testWorkflowAPI(t *testing.T, srv *harness.Server) {
	auth := srv.AuthHeader()
	base := srv.URL + "/v1/workflows/"

	// Deploy: 201 for the first version, 200 for the next.
	res := do(t, http.MethodPut, base+"api-greet", []byte(greetDef), auth)
	if res.Status != http.StatusCreated {
		t.Fatalf("first deploy: HTTP %d %s; want 201", res.Status, res.Body)
	}
	res = do(t, http.MethodPut, base+"api-greet", []byte(greetDef), auth)
	var wf apiv1.Workflow
	if err := json.Unmarshal(res.Body, &wf); err != nil || res.Status != http.StatusOK || wf.Version != 2 || wf.Name != "api-greet" {
		t.Fatalf("second deploy: HTTP %d %s; want 200 with version 2", res.Status, res.Body)
	}
	deployWorkflow(t, srv, "api-fail", failDef)

	// List and get.
	wfs, err := srv.Client.Workflows(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, w := range wfs {
		found = found || w.Name == "api-greet" && w.Version == 2
	}
	if !found {
		t.Fatalf("workflows %+v lack api-greet version 2", wfs)
	}
	got, err := srv.Client.Workflow(ctx(t), "api-greet")
	if err != nil || got.Version != 2 || got.Created.IsZero() || got.Updated.Before(got.Created) {
		t.Fatalf("get api-greet: %+v, %v", got, err)
	}
	sameJSON(t, "the stored definition", got.Definition, greetDef)

	// An asynchronous start: 202 and an id, listed, then described.
	res = do(t, http.MethodPost, base+"api-greet/executions", []byte(`{"name":"Ada"}`), auth)
	started := wireExecution(t, res)
	if res.Status != http.StatusAccepted || started.ID == "" || started.Workflow != "api-greet" || started.Version != 2 || started.Existing {
		t.Fatalf("async start: HTTP %d %s; want 202 with a new execution of version 2", res.Status, res.Body)
	}
	xs, err := srv.Client.Executions(ctx(t), "api-greet", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(xs) == 0 || xs[0].ID != started.ID {
		t.Fatalf("executions %+v: want %s first", xs, started.ID)
	}
	x := awaitExecution(t, srv, started.ID)
	if x.Status != apiv1.ExecutionSucceeded || x.Stopped.Before(x.Started) || x.Steps != 1 {
		t.Fatalf("execution %+v: want SUCCEEDED after one step", x)
	}
	sameJSON(t, "input", x.Input, `{"name":"Ada"}`)
	sameJSON(t, "output", x.Output, `{"greeting":"Hello, Ada!"}`)
	var kinds []string
	for _, ev := range x.History {
		kinds = append(kinds, ev.Kind)
		if ev.Kind == "TaskSucceeded" && (ev.State != "Greet" || ev.Host == "" || ev.Bus != "local" || ev.Attempt != 1) {
			t.Errorf("task event %+v: want state Greet, attempt 1, a host and bus local", ev)
		}
		if ev.Kind == "StateExited" && ev.Millis <= 0 {
			t.Errorf("state event %+v has no duration", ev)
		}
	}
	want := []string{"ExecutionStarted", "StateEntered", "TaskScheduled", "TaskSucceeded", "StateExited", "ExecutionSucceeded"}
	if strings.Join(kinds, " ") != strings.Join(want, " ") {
		t.Errorf("history %v, want %v", kinds, want)
	}

	// An idempotency key: the repeat finds the first execution.
	keyed := map[string]string{"Authorization": auth["Authorization"], apiv1.HeaderIdempotencyKey: "order-42"}
	first := wireExecution(t, do(t, http.MethodPost, base+"api-greet/executions", []byte(`{"name":"Bo"}`), keyed))
	again := wireExecution(t, do(t, http.MethodPost, base+"api-greet/executions", []byte(`{"name":"Bo"}`), keyed))
	if first.ID == "" || first.Existing || again.ID != first.ID || !again.Existing {
		t.Fatalf("the same key twice: %+v then %+v; want one id, the second existing", first, again)
	}
	if sync, err := srv.Client.StartExecution(ctx(t), "api-greet", []byte(`{"name":"Bo"}`), client.StartOptions{Sync: true, IdempotencyKey: "order-42"}); err != nil ||
		sync.ID != first.ID || !sync.Existing || sync.Status != apiv1.ExecutionSucceeded {
		t.Fatalf("a sync start with the key: %+v, %v; want the first execution, ended", sync, err)
	}

	// Refusals.
	for _, r := range []struct {
		what, method, url string
		body              string
		status            int
	}{
		{"input that is not JSON", http.MethodPost, base + "api-greet/executions", `{"name":`, http.StatusBadRequest},
		{"an unknown workflow's start", http.MethodPost, base + "api-nope/executions", `{}`, http.StatusNotFound},
		{"an unknown workflow", http.MethodGet, base + "api-nope", ``, http.StatusNotFound},
		{"an unknown workflow's executions", http.MethodGet, base + "api-nope/executions", ``, http.StatusNotFound},
		{"a bad workflow name", http.MethodPut, base + "Bad_Name", greetDef, http.StatusBadRequest},
		{"a bad execution id", http.MethodGet, srv.URL + "/v1/executions/not-an-id", ``, http.StatusBadRequest},
		{"an unknown execution", http.MethodGet, srv.URL + "/v1/executions/api-greet.00000000-0000-4000-8000-000000000000", ``, http.StatusNotFound},
		{"a bad sync flag", http.MethodPost, base + "api-greet/executions?sync=perhaps", `{}`, http.StatusBadRequest},
	} {
		var body []byte
		if r.body != "" {
			body = []byte(r.body)
		}
		res := do(t, r.method, r.url, body, auth)
		if res.Status != r.status {
			t.Errorf("%s: HTTP %d %s; want %d", r.what, res.Status, res.Body, r.status)
			continue
		}
		errorBody(t, res.Status, res.Body)
	}

	// The function URL: the output, or the error with 502. It needs no
	// token, as a function's URL.
	res = do(t, http.MethodPost, srv.URL+"/wf/api-greet", []byte(`{"name":"URL"}`), nil)
	if res.Status != http.StatusOK || res.Header.Get("Baton-Execution-Id") == "" {
		t.Fatalf("/wf/api-greet: HTTP %d %s %v; want 200 with the execution id", res.Status, res.Body, res.Header)
	}
	sameJSON(t, "/wf/api-greet", res.Body, `{"greeting":"Hello, URL!"}`)
	res = do(t, http.MethodPost, srv.URL+"/wf/api-fail", []byte(`{}`), nil)
	var failed struct{ Error, Cause, Execution string }
	if err := json.Unmarshal(res.Body, &failed); err != nil || res.Status != http.StatusBadGateway ||
		failed.Error != "ValueError" || !strings.Contains(failed.Cause, "no good") || failed.Execution == "" {
		t.Fatalf("/wf/api-fail: HTTP %d %s; want 502 with the error ValueError and its cause", res.Status, res.Body)
	}
	if res := do(t, http.MethodPost, srv.URL+"/wf/api-nope", []byte(`{}`), nil); res.Status != http.StatusNotFound {
		t.Fatalf("/wf/api-nope: HTTP %d %s; want 404", res.Status, res.Body)
	}

	// Remove: then it is gone for get, start and a second remove.
	if res := do(t, http.MethodDelete, base+"api-greet", nil, auth); res.Status != http.StatusNoContent {
		t.Fatalf("remove: HTTP %d %s", res.Status, res.Body)
	}
	if _, err := srv.Client.Workflow(ctx(t), "api-greet"); !hasStatus(err, http.StatusNotFound, "workflow_not_found") {
		t.Errorf("get after remove: %v", err)
	}
	if _, err := srv.Client.StartExecution(ctx(t), "api-greet", nil, client.StartOptions{Sync: true}); !hasStatus(err, http.StatusNotFound, "workflow_not_found") {
		t.Errorf("start after remove: %v", err)
	}
	if err := srv.Client.DeleteWorkflow(ctx(t), "api-greet"); !hasStatus(err, http.StatusNotFound, "") {
		t.Errorf("second remove: %v", err)
	}
	// Its executions are still there to describe.
	if x, err := srv.Client.DescribeExecution(ctx(t), started.ID); err != nil || x.Status != apiv1.ExecutionSucceeded {
		t.Errorf("describe after remove: %+v, %v", x, err)
	}
}

// testWorkflowCLI drives `baton workflow`.
func testWorkflowCLI(t *testing.T, srv *harness.Server) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	baton := func(args ...string) (string, string, int) {
		t.Helper()
		return cli(t, srv, append(args, "--server", srv.URL)...)
	}
	mustBaton := func(args ...string) string {
		t.Helper()
		out, errOut, code := baton(args...)
		if code != 0 {
			t.Fatalf("baton %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}

	sumYAML := file("sum.yaml", "StartAt: Add\nStates:\n  Add:\n    Type: Task\n    Resource: wf-add\n    ResultPath: $.sum\n    End: true\n")
	if out := mustBaton("workflow", "deploy", "cli-sum", "--definition", sumYAML); !strings.Contains(out, "cli-sum version 1 deployed") {
		t.Fatalf("deploy: %q", out)
	}
	if out := mustBaton("workflow", "deploy", "cli-sum", "-f", sumYAML); !strings.Contains(out, "version 2") {
		t.Fatalf("second deploy: %q", out)
	}
	if out := mustBaton("workflow", "ls"); !strings.Contains(out, "cli-sum") {
		t.Fatalf("ls: %q", out)
	}
	var wf apiv1.Workflow
	if err := json.Unmarshal([]byte(mustBaton("workflow", "get", "cli-sum")), &wf); err != nil || wf.Version != 2 {
		t.Fatalf("get: %+v, %v", wf, err)
	}
	sameJSON(t, "get's definition", wf.Definition, `{"StartAt":"Add","States":{"Add":{"Type":"Task","Resource":"wf-add","ResultPath":"$.sum","End":true}}}`)

	out := mustBaton("workflow", "start", "cli-sum", "--input", `{"a":20,"b":22}`, "--sync")
	sameJSON(t, "start --sync", []byte(out), `{"a":20,"b":22,"sum":42}`)

	input := file("input.json", `{"a":1,"b":2}`)
	id := strings.TrimSpace(mustBaton("workflow", "start", "cli-sum", "--input", "@"+input))
	if strings.ContainsAny(id, " \n") || !strings.HasPrefix(id, "cli-sum.") {
		t.Fatalf("async start printed %q; want an execution id", id)
	}
	if out := mustBaton("workflow", "executions", "cli-sum"); !strings.Contains(out, id) {
		t.Fatalf("executions: %q lacks %s", out, id)
	}
	awaitExecution(t, srv, id)
	out = mustBaton("workflow", "describe", id)
	// Compared without white space: the JSON is indented.
	flat := strings.Join(strings.Fields(out), "")
	for _, want := range []string{"Status:SUCCEEDED", `Input:{"a":1,"b":2}`, `Output:{"a":1,"b":2,"sum":3}`, "TaskSucceededAdd1", "local", "ExecutionSucceeded"} {
		if !strings.Contains(flat, want) {
			t.Errorf("describe lacks %q:\n%s", want, out)
		}
	}
	var x apiv1.Execution
	if err := json.Unmarshal([]byte(mustBaton("workflow", "describe", id, "--json")), &x); err != nil || x.ID != id || len(x.History) == 0 {
		t.Errorf("describe --json: %+v, %v", x, err)
	}

	// A failed execution: non-zero, with its error and cause.
	mustBaton("workflow", "deploy", "cli-fail", "--definition", file("fail.json", failDef))
	out, errOut, code := baton("workflow", "start", "cli-fail", "--sync")
	if code == 0 || !strings.Contains(errOut, "ValueError") || !strings.Contains(errOut, "no good") {
		t.Fatalf("a failing start --sync: exit %d\n%s%s; want non-zero with ValueError: no good", code, out, errOut)
	}
	// A malformed definition: non-zero, the state and field named.
	bad := file("bad.json", `{"StartAt":"S","States":{"S":{"Type":"Pass","Nxt":"S","End":true}}}`)
	out, errOut, code = baton("workflow", "deploy", "cli-sum", "--definition", bad)
	if code == 0 || !strings.Contains(errOut, `state "S"`) || !strings.Contains(errOut, `"Nxt"`) {
		t.Fatalf("a malformed deploy: exit %d\n%s%s; want non-zero naming state S and field Nxt", code, out, errOut)
	}
	if out, errOut, code := baton("workflow", "start", "cli-sum", "--input", `{"a":`); code == 0 || !strings.Contains(errOut, "JSON") {
		t.Fatalf("start with bad input: exit %d\n%s%s", code, out, errOut)
	}

	if out := mustBaton("workflow", "rm", "cli-sum"); !strings.Contains(out, "removed") {
		t.Fatalf("rm: %q", out)
	}
	if out, errOut, code := baton("workflow", "get", "cli-sum"); code == 0 {
		t.Fatalf("get after rm: exit 0\n%s%s", out, errOut)
	}
}

// testWorkflowRedeployWhileWaiting: an execution keeps the version it
// started with; a deploy while it waits changes only later executions.
func testWorkflowRedeployWhileWaiting(t *testing.T, srv *harness.Server) {
	version := func(v string) string {
		return `{"StartAt":"Hold","States":{"Hold":{"Type":"Wait","SecondsPath":"$.hold","Next":"Tag"},
			"Tag":{"Type":"Pass","Result":"` + v + `","ResultPath":"$.version","Next":"Echo"},
			"Echo":{"Type":"Task","Resource":"wf-echo","End":true}}}`
	}
	deployWorkflow(t, srv, "redeploy", version("v1"))
	x, err := srv.Client.StartExecution(ctx(t), "redeploy", []byte(`{"hold":4}`), client.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, settle, "the execution should wait in Hold", func() (bool, string) {
		d, err := srv.Client.DescribeExecution(ctx(t), x.ID)
		if err != nil {
			return false, err.Error()
		}
		return len(eventsOf(d, "StateEntered", "Hold")) == 1, d.Status
	})
	if wf := deployWorkflow(t, srv, "redeploy", version("v2")); wf.Version != 2 {
		t.Fatalf("redeploy: version %d", wf.Version)
	}
	if d, err := srv.Client.DescribeExecution(ctx(t), x.ID); err != nil || d.Status != apiv1.ExecutionRunning {
		t.Fatalf("the execution ended before the redeploy (%+v, %v): it proves nothing", d, err)
	}
	done := awaitExecution(t, srv, x.ID)
	if done.Status != apiv1.ExecutionSucceeded || done.Version != 1 {
		t.Fatalf("execution %+v: want SUCCEEDED on version 1", done)
	}
	sameJSON(t, "output", done.Output, `{"hold":4,"version":"v1"}`)
	if later := startSync(t, srv, "redeploy", `{"hold":0}`); later.Version != 2 || !strings.Contains(string(later.Output), "v2") {
		t.Fatalf("a later execution: %+v; want version 2", later)
	}
}
