package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/test/harness"
)

// The functions every workflow test shares (testdata/workflows/app.py),
// deployed once per TestWorkflow; each one's behaviour is chosen by its
// event.
const (
	wfDir   = "testdata/workflows"
	wfEcho  = "wf-echo"  // returns its event
	wfAdd   = "wf-add"   // returns a + b
	wfFail  = "wf-fail"  // raises the exception class "error" with "cause"
	wfFlaky = "wf-flaky" // attempt n raises "errors"[n-1], then reports the attempt, execution and state
	wfSleep = "wf-sleep" // sleeps "seconds", reports when it ran
	// wfSleepTimeout is wf-sleep's function timeout: a longer sleep ends
	// in Sandbox.Timedout.
	wfSleepTimeout = 2
)

// TestWorkflow runs workflows in Amazon States Language end to end: a
// real server, real Python functions, the HTTP API, the Go client and
// the baton CLI. The server and functions are shared by its groups (see
// workflow_cli_test.go for the API and CLI ones), which run side by side.
func TestWorkflow(t *testing.T) {
	requirePython(t)
	t.Parallel()
	srv := startServer(t)
	for _, fn := range []struct {
		name, handler string
		timeout       int
	}{{wfEcho, "echo", 0}, {wfAdd, "add", 0}, {wfFail, "fail", 0}, {wfFlaky, "flaky", 0}, {wfSleep, "sleep", wfSleepTimeout}} {
		spec := pySpec(fn.handler)
		// One app: the functions share a sandbox per host, as a
		// workflow's steps do in SAND.
		spec.App, spec.TimeoutSeconds = "wf-conformance", fn.timeout
		deploy(t, srv, fn.name, spec, wfDir)
	}
	t.Run("Conformance", func(t *testing.T) { t.Parallel(); onceAcrossSandboxes(t); testWorkflowConformance(t, srv) })
	t.Run("Definitions", func(t *testing.T) { t.Parallel(); onceAcrossSandboxes(t); testWorkflowDefinitions(t, srv) })
	t.Run("API", func(t *testing.T) { t.Parallel(); testWorkflowAPI(t, srv) })
	t.Run("CLI", func(t *testing.T) { t.Parallel(); testWorkflowCLI(t, srv) })
	t.Run("RedeployWhileWaiting", func(t *testing.T) { t.Parallel(); testWorkflowRedeployWhileWaiting(t, srv) })
}

// onceAcrossSandboxes skips a test of the engine alone (its cases do not
// depend on the sandbox) in the suite's second run, under process
// sandboxes, when the first run under containers happened: as root, the
// suite runs twice (scripts/test.sh).
func onceAcrossSandboxes(t *testing.T) {
	t.Helper()
	if os.Getenv("BATON_TEST_SANDBOX") == "process" && os.Geteuid() == 0 {
		t.Skip("sandbox-independent: ran in the default-sandbox pass of this suite (as root, containers)")
	}
}

// wfCase is one conformance case: a definition run on an input ends
// with an output or an error.
type wfCase struct {
	name  string
	def   string // JSON or YAML
	input string // JSON; "" is {}
	// out is the expected output (JSON, compared decoded; "": any, for
	// check to look at); ${ID}, ${NAME} and ${WORKFLOW} stand for the
	// execution's id and name and the workflow's name.
	out string
	// err is the expected error name (instead of out), cause a substring
	// of the expected cause.
	err, cause string
	// check looks further at the ended execution, its history included.
	check func(t *testing.T, x apiv1.Execution)
}

// single is a machine of one state, named S.
func single(state string) string {
	return `{"StartAt":"S","States":{"S":` + state + `}}`
}

func testWorkflowConformance(t *testing.T, srv *harness.Server) {
	var cases []wfCase
	cases = append(cases, stateTypeCases()...)
	cases = append(cases, pathCases()...)
	cases = append(cases, intrinsicCases()...)
	cases = append(cases, retryCatchCases()...)
	cases = append(cases, choiceCases()...)
	cases = append(cases, fanOutCases()...)
	seen := map[string]bool{}
	for _, c := range cases {
		if seen[c.name] {
			t.Fatalf("two cases are named %s", c.name)
		}
		seen[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			// Parallel subtests: at most -test.parallel (GOMAXPROCS) at
			// once, which keeps a 2-core machine responsive.
			t.Parallel()
			runWorkflowCase(t, srv, c)
		})
	}
}

func runWorkflowCase(t *testing.T, srv *harness.Server, c wfCase) {
	name := "c-" + c.name
	deployWorkflow(t, srv, name, c.def)
	input := c.input
	if input == "" {
		input = "{}"
	}
	x := startSync(t, srv, name, input)
	if c.err != "" {
		if x.Status != apiv1.ExecutionFailed || x.Error != c.err || !strings.Contains(x.Cause, c.cause) {
			logHistory(t, srv, x.ID)
			t.Fatalf("execution %s: status %s, output %s, error %q, cause %q; want FAILED with %s, cause containing %q",
				x.ID, x.Status, x.Output, x.Error, x.Cause, c.err, c.cause)
		}
	} else if x.Status != apiv1.ExecutionSucceeded {
		logHistory(t, srv, x.ID)
		t.Fatalf("execution %s: status %s, error %s: %s; want SUCCEEDED with %s", x.ID, x.Status, x.Error, x.Cause, c.out)
	}
	if c.out != "" {
		want := strings.NewReplacer("${ID}", x.ID, "${NAME}", strings.TrimPrefix(x.ID, name+"."), "${WORKFLOW}", name).Replace(c.out)
		sameJSON(t, "output of "+x.ID, x.Output, want)
	}
	if c.check != nil {
		c.check(t, executionWithHistory(t, srv, x.ID))
	}
}

// deployWorkflow deploys a definition and fails the test on error.
func deployWorkflow(t *testing.T, srv *harness.Server, name, def string) apiv1.Workflow {
	t.Helper()
	wf, err := srv.Client.DeployWorkflow(ctx(t), name, []byte(def))
	if err != nil {
		t.Fatalf("deploy workflow %s: %v\n%s", name, err, def)
	}
	return wf
}

// startSync runs an execution to its end.
func startSync(t *testing.T, srv *harness.Server, name, input string) apiv1.Execution {
	t.Helper()
	x, err := srv.Client.StartExecution(ctx(t), name, []byte(input), client.StartOptions{Sync: true})
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	if x.Status == apiv1.ExecutionRunning {
		t.Fatalf("sync start of %s answered while the execution runs: %+v", name, x)
	}
	return x
}

// executionWithHistory describes an ended execution once its history is
// complete: events are recorded off the critical path, so the last one
// may land after the execution's end is known.
func executionWithHistory(t *testing.T, srv *harness.Server, id string) apiv1.Execution {
	t.Helper()
	var x apiv1.Execution
	waitFor(t, settle, "the history of "+id+" should end with the execution's end", func() (bool, string) {
		var err error
		if x, err = srv.Client.DescribeExecution(ctx(t), id); err != nil {
			return false, err.Error()
		}
		for _, ev := range x.History {
			if ev.Kind == "ExecutionSucceeded" || ev.Kind == "ExecutionFailed" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("status %s, %d events", x.Status, len(x.History))
	})
	return x
}

// logHistory logs an execution's history, to explain a failure.
func logHistory(t *testing.T, srv *harness.Server, id string) {
	t.Helper()
	for _, ev := range executionWithHistory(t, srv, id).History {
		t.Logf("%s %-18s %s/%s attempt %d %.3f ms %s %s %s %s", ev.Time.Format("15:04:05.000"), ev.Kind, ev.Path, ev.State,
			ev.Attempt, ev.Millis, ev.Host, ev.Bus, ev.Error, ev.Cause)
	}
}

// sameJSON compares JSON documents decoded.
func sameJSON(t *testing.T, what string, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: %q is not JSON: %v", what, got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("%s: the expected %q is not JSON: %v", what, want, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("%s: got %s, want %s", what, got, want)
	}
}

// eventsOf returns the history events of a kind for a state ("" any).
func eventsOf(x apiv1.Execution, kind, state string) []apiv1.ExecutionEvent {
	var out []apiv1.ExecutionEvent
	for _, ev := range x.History {
		if ev.Kind == kind && (state == "" || ev.State == state) {
			out = append(out, ev)
		}
	}
	return out
}

// attemptsOf lists the attempts of a state's events of a kind.
func attemptsOf(x apiv1.Execution, kind, state string) []int {
	var out []int
	for _, ev := range eventsOf(x, kind, state) {
		out = append(out, ev.Attempt)
	}
	return out
}

// waitedAtLeast checks that a state took at least d (a lower bound: a
// busy machine only makes it longer).
func waitedAtLeast(state string, d time.Duration) func(*testing.T, apiv1.Execution) {
	return func(t *testing.T, x apiv1.Execution) {
		exits := eventsOf(x, "StateExited", state)
		if len(exits) != 1 || exits[0].Millis < float64(d.Milliseconds()) {
			t.Fatalf("state %s exited %+v; want once, after at least %s", state, exits, d)
		}
	}
}

func stateTypeCases() []wfCase {
	// A Timestamp a moment ahead: the execution must not end before it.
	until := time.Now().Add(2 * time.Second).UTC().Truncate(time.Second)
	return []wfCase{
		{name: "task", def: single(`{"Type":"Task","Resource":"wf-echo","End":true}`),
			input: `{"x":[1,"two",{"three":3.5}],"n":null}`, out: `{"x":[1,"two",{"three":3.5}],"n":null}`},
		{name: "task-resource-forms", def: `{"StartAt":"A","States":{
			"A":{"Type":"Task","Resource":"function:wf-add","ResultPath":"$.a","Next":"B"},
			"B":{"Type":"Task","Resource":"arn:aws:lambda:us-east-1:123456789012:function:wf-add","End":true}}}`,
			input: `{"a":1,"b":2}`, out: `5`},
		{name: "task-function-missing", def: single(`{"Type":"Task","Resource":"wf-missing","End":true}`),
			err: "Baton.FunctionNotFound", cause: "wf-missing"},
		{name: "yaml", def: "StartAt: Add\nStates:\n  Add:\n    Type: Task\n    Resource: wf-add\n    ResultPath: $.sum\n    End: true\n",
			input: `{"a":2,"b":5}`, out: `{"a":2,"b":5,"sum":7}`},
		{name: "pass-result", def: single(`{"Type":"Pass","Result":{"r":[1,2]},"ResultPath":"$.p","End":true}`),
			input: `{"x":1}`, out: `{"x":1,"p":{"r":[1,2]}}`},
		{name: "pass-input", def: single(`{"Type":"Pass","InputPath":"$.a","End":true}`),
			input: `{"a":{"b":1},"c":2}`, out: `{"b":1}`},
		{name: "pass-parameters", def: single(`{"Type":"Pass","Parameters":{"const":"c","v.$":"$.v","deep":{"w.$":"$.w[1]","k":[1]}},"End":true}`),
			input: `{"v":1,"w":[0,"one"]}`, out: `{"const":"c","v":1,"deep":{"w":"one","k":[1]}}`},
		{name: "wait-seconds", def: `{"StartAt":"W","States":{"W":{"Type":"Wait","Seconds":1,"Next":"D"},"D":{"Type":"Pass","End":true}}}`,
			input: `{"k":1}`, out: `{"k":1}`, check: waitedAtLeast("W", time.Second)},
		{name: "wait-seconds-path", def: single(`{"Type":"Wait","SecondsPath":"$.delay","End":true}`),
			input: `{"delay":1}`, out: `{"delay":1}`, check: waitedAtLeast("S", time.Second)},
		{name: "wait-timestamp", def: single(fmt.Sprintf(`{"Type":"Wait","Timestamp":%q,"End":true}`, until.Format(time.RFC3339))),
			input: `{"k":2}`, out: `{"k":2}`, check: func(t *testing.T, x apiv1.Execution) {
				if x.Stopped.Before(until) {
					t.Fatalf("execution ended at %s, before the Wait's Timestamp %s", x.Stopped, until)
				}
			}},
		{name: "wait-timestamp-path", def: single(`{"Type":"Wait","TimestampPath":"$.until","End":true}`),
			input: `{"until":"2001-02-03T04:05:06Z"}`, out: `{"until":"2001-02-03T04:05:06Z"}`},
		{name: "wait-seconds-path-bad", def: single(`{"Type":"Wait","SecondsPath":"$.delay","End":true}`),
			input: `{"delay":"soon"}`, err: "States.Runtime", cause: "SecondsPath"},
		{name: "succeed", def: `{"StartAt":"P","States":{"P":{"Type":"Pass","Result":1,"ResultPath":"$.p","Next":"S"},"S":{"Type":"Succeed"}}}`,
			input: `{"q":0}`, out: `{"q":0,"p":1}`},
		{name: "succeed-paths", def: single(`{"Type":"Succeed","InputPath":"$.a","OutputPath":"$.b"}`),
			input: `{"a":{"b":7},"b":0}`, out: `7`},
		{name: "wait-paths", def: single(`{"Type":"Wait","Seconds":0,"InputPath":"$.a","OutputPath":"$.b","End":true}`),
			input: `{"a":{"b":8},"b":0}`, out: `8`},
		{name: "fail-state", def: `{"StartAt":"P","States":{"P":{"Type":"Pass","Next":"F"},"F":{"Type":"Fail","Error":"Custom.Error","Cause":"it broke"}}}`,
			err: "Custom.Error", cause: "it broke"},
		{name: "execution-timeout", def: `{"TimeoutSeconds":1,"StartAt":"W","States":{"W":{"Type":"Wait","Seconds":30,"End":true}}}`,
			err: "States.Timeout"},
		{name: "loop", def: `{"StartAt":"Inc","States":{
			"Inc":{"Type":"Task","Resource":"wf-add","Parameters":{"a.$":"$.n","b":1},"ResultPath":"$.n","Next":"More"},
			"More":{"Type":"Choice","Choices":[{"Variable":"$.n","NumericLessThan":3,"Next":"Inc"}],"Default":"Done"},
			"Done":{"Type":"Succeed"}}}`,
			input: `{"n":0}`, out: `{"n":3}`, check: func(t *testing.T, x apiv1.Execution) {
				if n := len(eventsOf(x, "TaskSucceeded", "Inc")); n != 3 {
					t.Fatalf("Inc ran %d times, want 3", n)
				}
			}},
	}
}

func pathCases() []wfCase {
	return []wfCase{
		{name: "input-path", def: single(`{"Type":"Task","Resource":"wf-echo","InputPath":"$.in","End":true}`),
			input: `{"in":{"a":1},"other":2}`, out: `{"a":1}`},
		{name: "input-path-index", def: single(`{"Type":"Task","Resource":"wf-echo","InputPath":"$.in[1]","End":true}`),
			input: `{"in":[0,{"a":1}]}`, out: `{"a":1}`},
		{name: "input-path-null", def: single(`{"Type":"Task","Resource":"wf-echo","InputPath":null,"End":true}`),
			input: `{"a":1}`, out: `{}`},
		{name: "input-path-missing", def: single(`{"Type":"Task","Resource":"wf-echo","InputPath":"$.missing","End":true}`),
			input: `{"a":1}`, err: "States.Runtime", cause: "InputPath"},
		{name: "parameters-paths", def: single(`{"Type":"Task","Resource":"wf-echo","End":true,"Parameters":{
			"id.$":"$$.Execution.Id","name.$":"$$.Execution.Name","workflow.$":"$$.StateMachine.Name","input.$":"$$.Execution.Input",
			"static":"s","list":[1,"$.v"],"nested":{"v.$":"$.v","first.$":"$.v[0]"}}}`),
			input: `{"v":[1,2]}`,
			out: `{"id":"${ID}","name":"${NAME}","workflow":"${WORKFLOW}","input":{"v":[1,2]},
				"static":"s","list":[1,"$.v"],"nested":{"v":[1,2],"first":1}}`},
		{name: "parameters-path-missing", def: single(`{"Type":"Task","Resource":"wf-echo","Parameters":{"x.$":"$.missing"},"End":true}`),
			err: "States.Runtime", cause: "Parameters"},
		{name: "result-selector", def: `{"StartAt":"Look","States":{"Look":{"Type":"Task","Resource":"wf-flaky","ResultPath":"$.seen","End":true,
			"ResultSelector":{"attempt.$":"$.attempt","execution.$":"$.execution","state.$":"$.state","label.$":"States.Format('{}#{}', $.state, $.attempt)"}}}}`,
			input: `{"keep":true}`, out: `{"keep":true,"seen":{"attempt":1,"execution":"${ID}","state":"Look","label":"Look#1"}}`},
		{name: "result-path-null", def: single(`{"Type":"Task","Resource":"wf-add","ResultPath":null,"End":true}`),
			input: `{"a":1,"b":2}`, out: `{"a":1,"b":2}`},
		{name: "result-path-root", def: single(`{"Type":"Task","Resource":"wf-add","ResultPath":"$","End":true}`),
			input: `{"a":1,"b":2}`, out: `3`},
		{name: "result-path-nested", def: single(`{"Type":"Task","Resource":"wf-add","ResultPath":"$.x.y.sum","End":true}`),
			input: `{"a":1,"b":2,"x":{"keep":0}}`, out: `{"a":1,"b":2,"x":{"keep":0,"y":{"sum":3}}}`},
		{name: "result-path-raw-input", def: single(`{"Type":"Task","Resource":"wf-add","InputPath":"$.args","ResultPath":"$.sum","End":true}`),
			input: `{"args":{"a":3,"b":4}}`, out: `{"args":{"a":3,"b":4},"sum":7}`},
		{name: "output-path", def: single(`{"Type":"Task","Resource":"wf-echo","ResultPath":"$.r","OutputPath":"$.r.in","End":true}`),
			input: `{"in":{"z":1}}`, out: `{"z":1}`},
		{name: "output-path-missing", def: single(`{"Type":"Pass","OutputPath":"$.missing","End":true}`),
			input: `{"a":1}`, err: "States.Runtime", cause: "OutputPath"},
		{name: "result-path-not-object", def: single(`{"Type":"Pass","Result":1,"ResultPath":"$.a.b","End":true}`),
			input: `{"a":1}`, err: "States.Runtime", cause: "ResultPath"},
		{name: "output-path-null", def: single(`{"Type":"Pass","Result":1,"OutputPath":null,"End":true}`),
			input: `{"a":1}`, out: `{}`},
		{name: "paths-in-order", def: single(`{"Type":"Task","Resource":"wf-echo","End":true,
			"InputPath":"$.job","Parameters":{"x.$":"$.x","tag":"t"},"ResultSelector":{"got.$":"$.x"},"ResultPath":"$.job.result","OutputPath":"$.job"}`),
			input: `{"job":{"x":5},"drop":true}`, out: `{"x":5,"result":{"got":5}}`},
	}
}

func intrinsicCases() []wfCase {
	pass := func(params string) string { return single(`{"Type":"Pass","Parameters":` + params + `,"End":true}`) }
	return []wfCase{
		{name: "intrinsic-format", def: pass(`{"s.$":"States.Format('Hello, {}! You are {} ({}).', $.name, $.age, $.ok)","q.$":"States.Format('it\\'s {}', $.name)"}`),
			input: `{"name":"Ada","age":36,"ok":true}`, out: `{"s":"Hello, Ada! You are 36 (true).","q":"it's Ada"}`},
		// Escaped braces are braces, not a placeholder.
		{name: "intrinsic-format-escapes", def: pass(`{"s.$":"States.Format('\\{\\} is {}, it\\'s \\\\', $.x)"}`),
			input: `{"x":"X"}`, out: `{"s":"{} is X, it's \\"}`},
		{name: "intrinsic-string-to-json", def: pass(`{"o.$":"States.StringToJson($.s)"}`),
			input: `{"s":"{\"a\":[1,2],\"b\":null}"}`, out: `{"o":{"a":[1,2],"b":null}}`},
		{name: "intrinsic-json-to-string", def: pass(`{"s.$":"States.JsonToString($.o)"}`),
			input: `{"o":{"a":[1,"x"]}}`, out: `{"s":"{\"a\":[1,\"x\"]}"}`},
		{name: "intrinsic-array", def: pass(`{"a.$":"States.Array($.x, 'two', 3, true, null, $.o)","empty.$":"States.Array()"}`),
			input: `{"x":1,"o":{"k":"v"}}`, out: `{"a":[1,"two",3,true,null,{"k":"v"}],"empty":[]}`},
		{name: "intrinsic-nested", def: single(`{"Type":"Task","Resource":"wf-echo","End":true,
			"Parameters":{"v.$":"States.Array(States.Format('{}-{}', $.a, $.b), States.JsonToString(States.Array($.a)))","id.$":"States.Format('run {}', $$.Execution.Id)"}}`),
			input: `{"a":"x","b":1}`, out: `{"v":["x-1","[\"x\"]"],"id":"run ${ID}"}`},
		{name: "intrinsic-failure", def: pass(`{"o.$":"States.StringToJson($.s)"}`),
			input: `{"s":"{not json"}`, err: "States.Runtime", cause: "StringToJson"},
	}
}

// retried checks a flaky task's history: the function saw attempts
// 1..n, the failed ones with the causes "attempt k".
func retried(state string, n int, succeeded bool) func(*testing.T, apiv1.Execution) {
	return func(t *testing.T, x apiv1.Execution) {
		var want []int
		var causes []string
		for k := 1; k <= n; k++ {
			want = append(want, k)
			if k < n || !succeeded {
				causes = append(causes, fmt.Sprintf("attempt %d", k))
			}
		}
		if got := attemptsOf(x, "TaskScheduled", state); !slices.Equal(got, want) {
			t.Errorf("attempts of %s: %v, want %v", state, got, want)
		}
		var got []string
		for _, ev := range eventsOf(x, "TaskFailed", state) {
			got = append(got, ev.Cause)
		}
		if !slices.Equal(got, causes) {
			t.Errorf("causes of %s's failed attempts: %q, want %q", state, got, causes)
		}
		if r := len(eventsOf(x, "StateRetrying", state)); r != n-1 {
			t.Errorf("%s retried %d times, want %d", state, r, n-1)
		}
	}
}

// retryGaps checks that attempt k+1 began at least gaps[k-1] after
// attempt k failed (lower bounds), and before maxGap (an upper bound far
// below what a broken cap would wait, zero: none).
// retryGaps checks the waits before each retry of state: the delay the
// engine planned (StateRetrying's millis) is exactly the one wanted, and
// the next attempt began no sooner.
func retryGaps(state string, gaps []time.Duration) func(*testing.T, apiv1.Execution) {
	return func(t *testing.T, x apiv1.Execution) {
		failed, scheduled := eventsOf(x, "TaskFailed", state), eventsOf(x, "TaskScheduled", state)
		retrying := eventsOf(x, "StateRetrying", state)
		if len(failed) < len(gaps) || len(scheduled) < len(gaps)+1 || len(retrying) < len(gaps) {
			t.Fatalf("%s: %d failures, %d retries planned, %d attempts; want %d retries", state, len(failed), len(retrying), len(scheduled), len(gaps))
		}
		for k, want := range gaps {
			if planned := time.Duration(retrying[k].Millis * float64(time.Millisecond)); planned != want {
				t.Errorf("%s: retry %d planned to wait %s; want %s", state, k+1, planned, want)
			}
			if gap := scheduled[k+1].Time.Sub(failed[k].Time); gap < want {
				t.Errorf("%s: retry %d began %s after the failure; want at least %s", state, k+1, gap, want)
			}
		}
	}
}

func retryCatchCases() []wfCase {
	flaky := func(retry string) string {
		return `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"wf-flaky","ResultPath":"$.r","End":true,"Retry":` + retry + `}}}`
	}
	catchDef := `{"StartAt":"T","States":{
		"T":{"Type":"Task","Resource":"wf-fail","Next":"Unreached","Catch":[
			{"ErrorEquals":["KeyError","TypeError"],"Next":"ByName"},
			{"ErrorEquals":["ValueError"],"ResultPath":"$.error","Next":"ByName"},
			{"ErrorEquals":["States.TaskFailed"],"ResultPath":"$.failed","Next":"ByTaskFailed"},
			{"ErrorEquals":["States.ALL"],"Next":"ByAll"}]},
		"Unreached":{"Type":"Fail","Error":"NotCaught"},
		"ByName":{"Type":"Pass","Result":"by-name","ResultPath":"$.via","End":true},
		"ByTaskFailed":{"Type":"Pass","Result":"by-task-failed","ResultPath":"$.via","End":true},
		"ByAll":{"Type":"Pass","Result":"by-all","ResultPath":"$.via","End":true}}}`
	return []wfCase{
		{name: "retry-by-error-type", def: flaky(`[{"ErrorEquals":["ValueError"],"IntervalSeconds":1,"MaxAttempts":2,"BackoffRate":1}]`),
			input: `{"errors":["ValueError","ValueError"]}`, out: `{"errors":["ValueError","ValueError"],"r":{"attempt":3,"execution":"${ID}","state":"T"}}`,
			check: retried("T", 3, true)},
		{name: "retry-states-all", def: flaky(`[{"ErrorEquals":["States.ALL"],"IntervalSeconds":1}]`),
			input: `{"errors":["KeyError"]}`, out: `{"errors":["KeyError"],"r":{"attempt":2,"execution":"${ID}","state":"T"}}`,
			check: retried("T", 2, true)},
		{name: "retry-task-failed", def: flaky(`[{"ErrorEquals":["States.TaskFailed"],"IntervalSeconds":1}]`),
			input: `{"errors":["KeyError"]}`, out: `{"errors":["KeyError"],"r":{"attempt":2,"execution":"${ID}","state":"T"}}`,
			check: retried("T", 2, true)},
		{name: "retry-exhausted", def: flaky(`[{"ErrorEquals":["ValueError"],"IntervalSeconds":1,"MaxAttempts":1}]`),
			input: `{"errors":["ValueError","ValueError"]}`, err: "ValueError", cause: "attempt 2", check: retried("T", 2, false)},
		{name: "retry-other-error", def: flaky(`[{"ErrorEquals":["ValueError"],"IntervalSeconds":1}]`),
			input: `{"errors":["KeyError"]}`, err: "KeyError", cause: "attempt 1", check: retried("T", 1, false)},
		// The first retrier that names the error applies, even with
		// MaxAttempts 0 (no retry) and a later one that would retry.
		{name: "retry-max-attempts-0", def: flaky(`[{"ErrorEquals":["ValueError"],"MaxAttempts":0},{"ErrorEquals":["States.ALL"],"IntervalSeconds":1,"MaxAttempts":3}]`),
			input: `{"errors":["ValueError"]}`, err: "ValueError", cause: "attempt 1", check: retried("T", 1, false)},
		// Each retrier counts its own retries: KeyError takes the
		// States.ALL one, then ValueError uses up the first one's single
		// retry.
		{name: "retry-order", def: flaky(`[{"ErrorEquals":["ValueError"],"IntervalSeconds":1,"MaxAttempts":1},{"ErrorEquals":["States.ALL"],"IntervalSeconds":1,"MaxAttempts":5}]`),
			input: `{"errors":["KeyError","ValueError","ValueError"]}`, err: "ValueError", cause: "attempt 3", check: retried("T", 3, false)},
		{name: "retry-backoff", def: flaky(`[{"ErrorEquals":["States.ALL"],"IntervalSeconds":1,"MaxAttempts":2,"BackoffRate":2}]`),
			input: `{"errors":["E","E"]}`, out: `{"errors":["E","E"],"r":{"attempt":3,"execution":"${ID}","state":"T"}}`,
			check: retryGaps("T", []time.Duration{time.Second, 2 * time.Second})},
		// BackoffRate 30 would wait 30 s before the second retry;
		// MaxDelaySeconds caps it at 1 s.
		{name: "retry-max-delay", def: flaky(`[{"ErrorEquals":["States.ALL"],"IntervalSeconds":1,"MaxAttempts":2,"BackoffRate":30,"MaxDelaySeconds":1}]`),
			input: `{"errors":["E","E"]}`, out: `{"errors":["E","E"],"r":{"attempt":3,"execution":"${ID}","state":"T"}}`,
			check: retryGaps("T", []time.Duration{time.Second, time.Second})},
		{name: "catch-by-name-first", def: catchDef, input: `{"error":"KeyError","cause":"no key"}`,
			out: `{"Error":"KeyError","Cause":"no key","via":"by-name"}`},
		{name: "catch-result-path", def: catchDef, input: `{"error":"ValueError","cause":"bad value"}`,
			out: `{"error":{"Error":"ValueError","Cause":"bad value"},"cause":"bad value","via":"by-name"}`},
		{name: "catch-task-failed", def: catchDef, input: `{"error":"OSError","cause":"disk"}`,
			out: `{"error":"OSError","cause":"disk","failed":{"Error":"OSError","Cause":"disk"},"via":"by-task-failed"}`},
		{name: "catch-all-last", def: `{"StartAt":"T","States":{
			"T":{"Type":"Task","Resource":"wf-fail","End":true,"Catch":[{"ErrorEquals":["KeyError"],"Next":"Wrong"},{"ErrorEquals":["States.ALL"],"Next":"Done"}]},
			"Wrong":{"Type":"Fail","Error":"WrongCatcher"},"Done":{"Type":"Pass","End":true}}}`,
			input: `{"error":"ZeroDivisionError","cause":"division by zero"}`, out: `{"Error":"ZeroDivisionError","Cause":"division by zero"}`},
		{name: "catch-result-path-null", def: `{"StartAt":"T","States":{
			"T":{"Type":"Task","Resource":"wf-fail","End":true,"Catch":[{"ErrorEquals":["States.ALL"],"ResultPath":null,"Next":"Done"}]},
			"Done":{"Type":"Pass","End":true}}}`,
			input: `{"error":"ValueError","cause":"dropped"}`, out: `{"error":"ValueError","cause":"dropped"}`},
		{name: "catch-uncaught", def: single(`{"Type":"Task","Resource":"wf-fail","End":true,"Catch":[{"ErrorEquals":["KeyError"],"Next":"S"}]}`),
			input: `{"error":"ValueError","cause":"bad value"}`, err: "ValueError", cause: "bad value"},
		// TimeoutSeconds ends the task with States.Timeout, which
		// States.TaskFailed does not match: neither retried nor caught by
		// it, caught by the States.Timeout catcher after it.
		{name: "task-timeout", def: `{"StartAt":"T","States":{
			"T":{"Type":"Task","Resource":"wf-sleep","TimeoutSeconds":1,"End":true,
				"Retry":[{"ErrorEquals":["States.TaskFailed"],"IntervalSeconds":1,"MaxAttempts":3}],
				"Catch":[{"ErrorEquals":["States.TaskFailed"],"Next":"Wrong"},{"ErrorEquals":["States.Timeout"],"ResultPath":"$.error","Next":"TimedOut"}]},
			"Wrong":{"Type":"Fail","Error":"WrongCatcher"},
			"TimedOut":{"Type":"Pass","ResultPath":null,"End":true}}}`,
			input: `{"seconds":4}`, out: `{"seconds":4,"error":{"Error":"States.Timeout","Cause":"function wf-sleep ran longer than 1 s"}}`,
			check: func(t *testing.T, x apiv1.Execution) {
				if got := attemptsOf(x, "TaskScheduled", "T"); !slices.Equal(got, []int{1}) {
					t.Fatalf("attempts %v; want one: States.TaskFailed does not match States.Timeout", got)
				}
			}},
		{name: "task-timeout-retried", def: `{"StartAt":"T","States":{
			"T":{"Type":"Task","Resource":"wf-sleep","TimeoutSeconds":1,"End":true,
				"Retry":[{"ErrorEquals":["States.Timeout"],"IntervalSeconds":1,"MaxAttempts":1}]}}}`,
			input: `{"seconds":4}`, err: "States.Timeout", cause: "longer than 1 s", check: func(t *testing.T, x apiv1.Execution) {
				if got := attemptsOf(x, "TaskScheduled", "T"); !slices.Equal(got, []int{1, 2}) {
					t.Fatalf("attempts %v; want 1 and its retry", got)
				}
				for _, ev := range eventsOf(x, "TaskFailed", "T") {
					if ev.Error != "States.Timeout" {
						t.Errorf("task event %+v: want the error States.Timeout", ev)
					}
				}
			}},
		// The machine's TimeoutSeconds ends a task that runs past it.
		{name: "execution-timeout-in-task", def: `{"TimeoutSeconds":1,"StartAt":"T","States":{"T":{"Type":"Task","Resource":"wf-sleep","End":true}}}`,
			input: `{"seconds":4}`, err: "States.Timeout"},
		// The function's own timeout is Sandbox.Timedout, a task failure.
		{name: "function-timeout", def: `{"StartAt":"T","States":{
			"T":{"Type":"Task","Resource":"wf-sleep","End":true,"Catch":[{"ErrorEquals":["States.TaskFailed"],"ResultPath":"$.error","Next":"Caught"}]},
			"Caught":{"Type":"Pass","OutputPath":"$.error.Error","End":true}}}`,
			input: fmt.Sprintf(`{"seconds":%d}`, 3*wfSleepTimeout), out: `"Sandbox.Timedout"`},
	}
}

// choiceCase is a Choice with one rule going to Yes and a Default going
// to No, run on an input: the output says which way it went.
func choiceCase(name, rule, input string, yes bool) wfCase {
	def := `{"StartAt":"C","States":{"C":{"Type":"Choice","Choices":[` + strings.TrimSuffix(rule, "}") + `,"Next":"Yes"}],"Default":"No"},
		"Yes":{"Type":"Pass","Result":"yes","End":true},"No":{"Type":"Pass","Result":"no","End":true}}}`
	out := `"no"`
	if yes {
		out = `"yes"`
	}
	return wfCase{name: name, def: def, input: input, out: out}
}

func choiceCases() []wfCase {
	rules := []struct {
		name, rule string
		yes, no    []string // inputs that match, and that do not
	}{
		{"string-equals", `{"Variable":"$.s","StringEquals":"abc"}`, []string{`{"s":"abc"}`}, []string{`{"s":"abd"}`, `{"s":1}`}},
		{"string-equals-path", `{"Variable":"$.s","StringEqualsPath":"$.t"}`, []string{`{"s":"x","t":"x"}`}, []string{`{"s":"x","t":"y"}`}},
		{"string-less-than", `{"Variable":"$.s","StringLessThan":"b"}`, []string{`{"s":"a"}`}, []string{`{"s":"b"}`}},
		{"string-greater-than-equals", `{"Variable":"$.s","StringGreaterThanEquals":"b"}`, []string{`{"s":"b"}`, `{"s":"c"}`}, []string{`{"s":"a"}`}},
		{"string-matches", `{"Variable":"$.f","StringMatches":"log-*.txt"}`, []string{`{"f":"log-2024.txt"}`, `{"f":"log-.txt"}`}, []string{`{"f":"log-2024.csv"}`}},
		{"string-matches-many", `{"Variable":"$.f","StringMatches":"a*b*c"}`, []string{`{"f":"aXXbYYc"}`, `{"f":"abc"}`}, []string{`{"f":"acb"}`}},
		{"string-matches-escaped", `{"Variable":"$.f","StringMatches":"a\\*b"}`, []string{`{"f":"a*b"}`}, []string{`{"f":"aXb"}`}},
		{"numeric-equals", `{"Variable":"$.n","NumericEquals":3}`, []string{`{"n":3.0}`}, []string{`{"n":4}`, `{"n":"3"}`}},
		{"numeric-less-than", `{"Variable":"$.n","NumericLessThan":10}`, []string{`{"n":9.5}`}, []string{`{"n":10}`}},
		{"numeric-greater-than", `{"Variable":"$.n","NumericGreaterThan":10}`, []string{`{"n":11}`}, []string{`{"n":10}`}},
		{"numeric-less-than-equals", `{"Variable":"$.n","NumericLessThanEquals":10}`, []string{`{"n":10}`}, []string{`{"n":10.5}`}},
		{"numeric-greater-than-equals", `{"Variable":"$.n","NumericGreaterThanEquals":10}`, []string{`{"n":10}`}, []string{`{"n":9}`}},
		{"numeric-less-than-path", `{"Variable":"$.n","NumericLessThanPath":"$.limit"}`, []string{`{"n":1,"limit":2}`}, []string{`{"n":2,"limit":2}`}},
		{"boolean-equals", `{"Variable":"$.b","BooleanEquals":true}`, []string{`{"b":true}`}, []string{`{"b":false}`, `{"b":"true"}`}},
		{"boolean-equals-path", `{"Variable":"$.b","BooleanEqualsPath":"$.c"}`, []string{`{"b":false,"c":false}`}, []string{`{"b":false,"c":true}`}},
		{"timestamp-equals", `{"Variable":"$.t","TimestampEquals":"2024-01-01T00:00:00Z"}`, []string{`{"t":"2024-01-01T01:00:00+01:00"}`}, []string{`{"t":"2024-01-01T00:00:01Z"}`}},
		{"timestamp-less-than", `{"Variable":"$.t","TimestampLessThan":"2024-01-01T00:00:00Z"}`, []string{`{"t":"2023-12-31T23:59:59Z"}`}, []string{`{"t":"2024-01-01T00:00:00Z"}`, `{"t":"yesterday"}`}},
		{"timestamp-greater-than-path", `{"Variable":"$.t","TimestampGreaterThanPath":"$.since"}`, []string{`{"t":"2024-01-02T00:00:00Z","since":"2024-01-01T00:00:00Z"}`}, []string{`{"t":"2024-01-01T00:00:00Z","since":"2024-01-01T00:00:00Z"}`}},
		{"is-present", `{"Variable":"$.p","IsPresent":true}`, []string{`{"p":null}`, `{"p":0}`}, []string{`{}`}},
		{"is-present-false", `{"Variable":"$.p","IsPresent":false}`, []string{`{}`}, []string{`{"p":1}`}},
		{"is-null", `{"Variable":"$.p","IsNull":true}`, []string{`{"p":null}`}, []string{`{"p":0}`, `{}`}},
		{"is-numeric", `{"Variable":"$.p","IsNumeric":true}`, []string{`{"p":1.5}`}, []string{`{"p":"1.5"}`}},
		{"is-string", `{"Variable":"$.p","IsString":true}`, []string{`{"p":"x"}`}, []string{`{"p":1}`, `{"p":null}`}},
		{"is-boolean", `{"Variable":"$.p","IsBoolean":true}`, []string{`{"p":false}`}, []string{`{"p":"false"}`}},
		{"is-timestamp", `{"Variable":"$.p","IsTimestamp":true}`, []string{`{"p":"2024-01-01T00:00:00Z"}`}, []string{`{"p":"yesterday"}`}},
		{"and", `{"And":[{"Variable":"$.n","NumericGreaterThanEquals":10},{"Variable":"$.n","NumericLessThan":20}]}`, []string{`{"n":15}`}, []string{`{"n":20}`, `{"n":9}`}},
		{"or", `{"Or":[{"Variable":"$.s","StringEquals":"a"},{"Variable":"$.s","StringEquals":"b"}]}`, []string{`{"s":"b"}`}, []string{`{"s":"c"}`}},
		{"not", `{"Not":{"Variable":"$.s","StringEquals":"a"}}`, []string{`{"s":"b"}`}, []string{`{"s":"a"}`}},
		{"nested", `{"And":[{"Or":[{"Variable":"$.s","StringEquals":"a"},{"Variable":"$.s","StringEquals":"b"}]},{"Not":{"Variable":"$.n","IsNull":true}}]}`,
			[]string{`{"s":"a","n":1}`}, []string{`{"s":"a","n":null}`, `{"s":"c","n":1}`}},
	}
	var out []wfCase
	for _, r := range rules {
		for i, in := range r.yes {
			out = append(out, choiceCase(fmt.Sprintf("choice-%s-yes-%d", r.name, i), r.rule, in, true))
		}
		for i, in := range r.no {
			out = append(out, choiceCase(fmt.Sprintf("choice-%s-no-%d", r.name, i), r.rule, in, false))
		}
	}
	return append(out,
		wfCase{name: "choice-first-match", def: `{"StartAt":"C","States":{"C":{"Type":"Choice","Choices":[
			{"Variable":"$.n","NumericGreaterThan":1,"Next":"First"},{"Variable":"$.n","NumericGreaterThan":0,"Next":"Second"}]},
			"First":{"Type":"Pass","Result":"first","End":true},"Second":{"Type":"Pass","Result":"second","End":true}}}`,
			input: `{"n":5}`, out: `"first"`},
		wfCase{name: "choice-no-match", def: `{"StartAt":"C","States":{"C":{"Type":"Choice","Choices":[
			{"Variable":"$.s","StringEquals":"a","Next":"A"}]},"A":{"Type":"Succeed"}}}`,
			input: `{"s":"b"}`, err: "States.NoChoiceMatched", cause: "C"},
		wfCase{name: "choice-paths", def: `{"StartAt":"C","States":{"C":{"Type":"Choice","InputPath":"$.in","OutputPath":"$.v","Choices":[
			{"Variable":"$.s","StringEquals":"a","Next":"A"}]},"A":{"Type":"Pass","ResultPath":"$.seen","Result":true,"End":true}}}`,
			input: `{"in":{"s":"a","v":{"k":1}}}`, out: `{"k":1,"seen":true}`},
	)
}

// overlaps is the most wf-sleep runs (from a Map's output) at once.
func overlaps(t *testing.T, output []byte) int {
	t.Helper()
	var runs []struct{ Start, End float64 }
	if err := json.Unmarshal(output, &runs); err != nil {
		t.Fatalf("output %s: %v", output, err)
	}
	type edge struct {
		at    float64
		delta int
	}
	var edges []edge
	for _, r := range runs {
		edges = append(edges, edge{r.Start, 1}, edge{r.End, -1})
	}
	// Ends before starts at the same instant: touching is not overlapping.
	sort.Slice(edges, func(i, j int) bool {
		return edges[i].at < edges[j].at || edges[i].at == edges[j].at && edges[i].delta < edges[j].delta
	})
	most, cur := 0, 0
	for _, e := range edges {
		cur += e.delta
		most = max(most, cur)
	}
	return most
}

func fanOutCases() []wfCase {
	sleepItems := func(n int) string {
		var items []string
		for i := range n {
			items = append(items, fmt.Sprintf(`{"item":%d,"seconds":0.3}`, i))
		}
		return `{"items":[` + strings.Join(items, ",") + `]}`
	}
	sleepMap := func(concurrency int) string {
		return fmt.Sprintf(`{"StartAt":"M","States":{"M":{"Type":"Map","ItemsPath":"$.items","MaxConcurrency":%d,"End":true,
			"ItemProcessor":{"StartAt":"Z","States":{"Z":{"Type":"Task","Resource":"wf-sleep","End":true}}}}}}`, concurrency)
	}
	atMost := func(n, items int) func(*testing.T, apiv1.Execution) {
		return func(t *testing.T, x apiv1.Execution) {
			if got := len(eventsOf(x, "TaskSucceeded", "Z")); got != items {
				t.Fatalf("%d items ran, want %d", got, items)
			}
			if most := overlaps(t, x.Output); most > n || most < 1 {
				t.Fatalf("%d items ran at once (output %s); MaxConcurrency is %d", most, x.Output, n)
			}
		}
	}
	// An item processor that fails the items with an "error".
	const failingItems = `"ItemProcessor":{"StartAt":"Which","States":{
			"Which":{"Type":"Choice","Choices":[{"Variable":"$.error","IsPresent":true,"Next":"Boom"}],"Default":"Fine"},
			"Boom":{"Type":"Task","Resource":"wf-fail","End":true},
			"Fine":{"Type":"Task","Resource":"wf-echo","End":true}}}`
	const badItem = `{"items":[{"v":0},{"error":"ValueError","cause":"item 1 failed"},{"v":2}]}`
	// With MaxConcurrency 1 the item after the failing one never starts.
	notAfterFailure := func(t *testing.T, x apiv1.Execution) {
		for _, ev := range x.History {
			if ev.Kind == "TaskScheduled" && ev.Path == "M/2" {
				t.Fatalf("item 2 ran after item 1 failed the Map: %+v", ev)
			}
		}
	}
	branches := `"Branches":[
		{"StartAt":"Echo","States":{"Echo":{"Type":"Task","Resource":"wf-echo","End":true}}},
		{"StartAt":"Boom","States":{"Boom":{"Type":"Task","Resource":"wf-fail","Parameters":{"error":"KeyError","cause":"branch 1 failed"},"End":true}}}]`
	return []wfCase{
		{name: "parallel", def: single(`{"Type":"Parallel","ResultPath":"$.r","End":true,"Branches":[
			{"StartAt":"Add","States":{"Add":{"Type":"Task","Resource":"wf-add","End":true}}},
			{"StartAt":"Echo","States":{"Echo":{"Type":"Task","Resource":"wf-echo","InputPath":"$.a","End":true}}},
			{"StartAt":"Const","States":{"Const":{"Type":"Pass","Result":"c","Next":"Done"},"Done":{"Type":"Succeed"}}}]}`),
			input: `{"a":1,"b":2}`, out: `{"a":1,"b":2,"r":[3,1,"c"]}`},
		{name: "parallel-parameters-selector", def: single(`{"Type":"Parallel","Parameters":{"a.$":"$.x","b":10},"ResultSelector":{"sum.$":"$[0]","echo.$":"$[1].a"},"End":true,"Branches":[
			{"StartAt":"Add","States":{"Add":{"Type":"Task","Resource":"wf-add","End":true}}},
			{"StartAt":"Echo","States":{"Echo":{"Type":"Task","Resource":"wf-echo","End":true}}}]}`),
			input: `{"x":5}`, out: `{"sum":15,"echo":5}`},
		{name: "parallel-failure-caught", def: `{"StartAt":"P","States":{"P":{"Type":"Parallel","Next":"Unreached",` + branches + `,
			"Catch":[{"ErrorEquals":["ValueError"],"Next":"Unreached"},{"ErrorEquals":["KeyError"],"ResultPath":"$.error","Next":"Handled"}]},
			"Unreached":{"Type":"Fail","Error":"NotCaught"},"Handled":{"Type":"Pass","End":true}}}`,
			input: `{"k":1}`, out: `{"k":1,"error":{"Error":"KeyError","Cause":"branch 1 failed"}}`},
		{name: "parallel-failure-uncaught", def: single(`{"Type":"Parallel","End":true,` + branches + `}`),
			input: `{"k":1}`, err: "KeyError", cause: "branch 1 failed"},
		{name: "map-parameters", def: single(`{"Type":"Map","ItemsPath":"$.items","MaxConcurrency":2,"ResultPath":"$.sums","End":true,
			"Parameters":{"a.$":"$$.Map.Item.Value","b.$":"$$.Map.Item.Index"},
			"ItemProcessor":{"StartAt":"Add","States":{"Add":{"Type":"Task","Resource":"wf-add","End":true}}}}`),
			input: `{"items":[10,20,30]}`, out: `{"items":[10,20,30],"sums":[10,21,32]}`},
		{name: "map-item-selector", def: single(`{"Type":"Map","ItemsPath":"$.items","End":true,
			"ItemSelector":{"a.$":"$$.Map.Item.Value.n","b.$":"$.offset","index.$":"$$.Map.Item.Index"},
			"ItemProcessor":{"StartAt":"Echo","States":{"Echo":{"Type":"Task","Resource":"wf-echo","End":true}}}}`),
			input: `{"offset":100,"items":[{"n":1},{"n":2}]}`, out: `[{"a":1,"b":100,"index":0},{"a":2,"b":100,"index":1}]`},
		{name: "map-iterator", def: single(`{"Type":"Map","End":true,"Iterator":{"StartAt":"P","States":{"P":{"Type":"Pass","Parameters":{"v.$":"$"},"End":true}}}}`),
			input: `[1,"two",{"three":3}]`, out: `[{"v":1},{"v":"two"},{"v":{"three":3}}]`},
		{name: "map-empty", def: single(`{"Type":"Map","ItemsPath":"$.items","End":true,
			"ItemProcessor":{"StartAt":"Echo","States":{"Echo":{"Type":"Task","Resource":"wf-echo","End":true}}}}`),
			input: `{"items":[]}`, out: `[]`},
		{name: "map-items-not-array", def: single(`{"Type":"Map","ItemsPath":"$.items","End":true,
			"ItemProcessor":{"StartAt":"P","States":{"P":{"Type":"Pass","End":true}}}}`),
			input: `{"items":5}`, err: "States.Runtime", cause: "not an array"},
		{name: "map-max-concurrency-1", def: sleepMap(1), input: sleepItems(3), check: atMost(1, 3)},
		{name: "map-max-concurrency-2", def: sleepMap(2), input: sleepItems(5), check: atMost(2, 5)},
		{name: "map-failure-caught", def: `{"StartAt":"M","States":{"M":{"Type":"Map","ItemsPath":"$.items","MaxConcurrency":1,"ResultPath":"$.out","Next":"Unreached",` + failingItems + `,
			"Catch":[{"ErrorEquals":["KeyError"],"Next":"Unreached"},{"ErrorEquals":["ValueError"],"ResultPath":"$.error","Next":"Handled"}]},
			"Unreached":{"Type":"Fail","Error":"NotCaught"},
			"Handled":{"Type":"Pass","Result":"handled","ResultPath":"$.via","End":true}}}`,
			input: badItem, out: `{"items":[{"v":0},{"error":"ValueError","cause":"item 1 failed"},{"v":2}],
				"error":{"Error":"ValueError","Cause":"item 1 failed"},"via":"handled"}`, check: notAfterFailure},
		{name: "map-failure-uncaught", def: `{"StartAt":"M","States":{"M":{"Type":"Map","ItemsPath":"$.items","MaxConcurrency":1,"End":true,` + failingItems + `}}}`,
			input: badItem, err: "ValueError", cause: "item 1 failed", check: notAfterFailure},
	}
}

// testWorkflowDefinitions: a malformed definition is refused with 400
// and a message naming the state and the field, and never replaces the
// version stored before.
func testWorkflowDefinitions(t *testing.T, srv *harness.Server) {
	const name = "malformed"
	good := single(`{"Type":"Pass","Result":"v1","End":true}`)
	deployWorkflow(t, srv, name, good)
	task := func(fields string) string {
		return single(`{"Type":"Task","Resource":"wf-echo",` + fields + `"End":true}`)
	}
	cases := []struct {
		name, def string
		want      []string // substrings of the error message
	}{
		{"bad-json", `{"StartAt":"S","States":{"S":{"Type":"Pass","End":true}}`, []string{"JSON"}},
		{"bad-yaml", "StartAt: S\nStates: [unclosed\n", []string{"YAML"}},
		{"empty", ``, []string{"empty"}},
		{"start-at-missing", `{"States":{"S":{"Type":"Pass","End":true}}}`, []string{"StartAt is missing"}},
		{"start-at-unknown", `{"StartAt":"X","States":{"S":{"Type":"Pass","End":true}}}`, []string{`StartAt "X" names no state`}},
		{"unknown-top-field", `{"StartAt":"S","Statez":{},"States":{"S":{"Type":"Pass","End":true}}}`, []string{`"Statez"`}},
		{"unknown-state-type", single(`{"Type":"Teleport","End":true}`), []string{`state "S"`, `Type "Teleport"`}},
		{"type-missing", single(`{"End":true}`), []string{`state "S"`, "Type is missing"}},
		{"unknown-field", task(`"Resourse":"x",`), []string{`state "S"`, `field "Resourse"`}},
		{"field-of-another-type", single(`{"Type":"Pass","Retry":[],"End":true}`), []string{`state "S"`, `field "Retry"`}},
		{"unknown-retry-field", task(`"Retry":[{"ErrorEquals":["States.ALL"],"Attempts":2}],`), []string{`state "S"`, `"Attempts"`}},
		{"next-and-end-missing", single(`{"Type":"Pass"}`), []string{`state "S"`, "Next", "End"}},
		{"next-and-end-both", `{"StartAt":"S","States":{"S":{"Type":"Pass","Next":"T","End":true},"T":{"Type":"Succeed"}}}`, []string{`state "S"`, "Next", "End"}},
		{"next-missing-state", `{"StartAt":"S","States":{"S":{"Type":"Pass","Next":"Nowhere"}}}`, []string{`state "S"`, `Next "Nowhere" names no state`}},
		{"unreachable", `{"StartAt":"S","States":{"S":{"Type":"Pass","End":true},"Island":{"Type":"Succeed"}}}`, []string{`state "Island"`, "not reachable"}},
		{"catch-next-missing", task(`"Catch":[{"ErrorEquals":["States.ALL"],"Next":"Gone"}],`), []string{`state "S"`, `Catch[0].Next "Gone"`}},
		{"choice-bad-operator", `{"StartAt":"C","States":{"C":{"Type":"Choice","Choices":[{"Variable":"$.x","StringEqualz":"a","Next":"D"}]},"D":{"Type":"Succeed"}}}`,
			[]string{`state "C"`, "Choices[0]", `"StringEqualz"`}},
		{"choice-bad-operand", `{"StartAt":"C","States":{"C":{"Type":"Choice","Choices":[{"Variable":"$.x","NumericEquals":"1","Next":"D"}]},"D":{"Type":"Succeed"}}}`,
			[]string{`state "C"`, "Choices[0]", "NumericEquals"}},
		{"choice-next-missing", `{"StartAt":"C","States":{"C":{"Type":"Choice","Choices":[{"Variable":"$.x","IsNull":true}],"Default":"D"},"D":{"Type":"Succeed"}}}`,
			[]string{`state "C"`, "Choices[0]", "Next"}},
		{"choice-default-missing-state", `{"StartAt":"C","States":{"C":{"Type":"Choice","Choices":[{"Variable":"$.x","IsNull":true,"Next":"D"}],"Default":"Gone"},"D":{"Type":"Succeed"}}}`,
			[]string{`state "C"`, `Default "Gone"`}},
		{"choice-bad-variable", `{"StartAt":"C","States":{"C":{"Type":"Choice","Choices":[{"Variable":"x","IsNull":true,"Next":"D"}]},"D":{"Type":"Succeed"}}}`,
			[]string{`state "C"`, "Variable"}},
		{"bad-input-path", task(`"InputPath":"in",`), []string{`state "S"`, "InputPath"}},
		{"bad-result-path", task(`"ResultPath":"$..x",`), []string{`state "S"`, "ResultPath"}},
		{"bad-output-path", task(`"OutputPath":5,`), []string{`state "S"`, "OutputPath"}},
		{"bad-parameters-path", task(`"Parameters":{"x.$":"in"},`), []string{`state "S"`, "Parameters", `"x.$"`}},
		{"bad-result-selector", task(`"ResultSelector":{"x.$":5},`), []string{`state "S"`, "ResultSelector", `"x.$"`}},
		{"bad-intrinsic", task(`"Parameters":{"x.$":"States.Nope($.a)"},`), []string{`state "S"`, "Parameters", `"States.Nope"`}},
		{"bad-intrinsic-syntax", task(`"Parameters":{"x.$":"States.Format('{}', $.a"},`), []string{`state "S"`, "Parameters", `"x.$"`}},
		{"retry-max-attempts-negative", task(`"Retry":[{"ErrorEquals":["States.ALL"],"MaxAttempts":-1}],`), []string{`state "S"`, "Retry[0]", "MaxAttempts"}},
		{"retry-backoff-below-1", task(`"Retry":[{"ErrorEquals":["States.ALL"],"BackoffRate":0.5}],`), []string{`state "S"`, "Retry[0]", "BackoffRate"}},
		{"retry-interval-0", task(`"Retry":[{"ErrorEquals":["States.ALL"],"IntervalSeconds":0}],`), []string{`state "S"`, "Retry[0]", "IntervalSeconds"}},
		{"retry-all-not-last", task(`"Retry":[{"ErrorEquals":["States.ALL"]},{"ErrorEquals":["ValueError"]}],`), []string{`state "S"`, "Retry[0]", "States.ALL"}},
		{"retry-error-equals-empty", task(`"Retry":[{"ErrorEquals":[]}],`), []string{`state "S"`, "Retry[0]", "ErrorEquals"}},
		{"catch-unknown-states-error", task(`"Catch":[{"ErrorEquals":["States.Oops"],"Next":"S"}],`), []string{`state "S"`, "Catch[0]", `"States.Oops"`}},
		{"resource-missing", single(`{"Type":"Task","End":true}`), []string{`state "S"`, "Resource"}},
		{"resource-names-nothing", single(`{"Type":"Task","Resource":"arn:aws:lambda:us-east-1:123456789012:function:","End":true}`), []string{`state "S"`, "Resource"}},
		{"resource-bad-name", single(`{"Type":"Task","Resource":"two words","End":true}`), []string{`state "S"`, "Resource"}},
		{"timeout-negative", task(`"TimeoutSeconds":-1,`), []string{`state "S"`, "TimeoutSeconds"}},
		{"wait-two-durations", single(`{"Type":"Wait","Seconds":1,"SecondsPath":"$.s","End":true}`), []string{`state "S"`, "Seconds"}},
		{"wait-bad-timestamp", single(`{"Type":"Wait","Timestamp":"tomorrow","End":true}`), []string{`state "S"`, "Timestamp"}},
		{"map-no-processor", single(`{"Type":"Map","End":true}`), []string{`state "S"`, "ItemProcessor"}},
		{"map-bad-items-path", single(`{"Type":"Map","ItemsPath":"items","End":true,"ItemProcessor":{"StartAt":"P","States":{"P":{"Type":"Pass","End":true}}}}`),
			[]string{`state "S"`, "ItemsPath"}},
		{"map-negative-concurrency", single(`{"Type":"Map","MaxConcurrency":-1,"End":true,"ItemProcessor":{"StartAt":"P","States":{"P":{"Type":"Pass","End":true}}}}`),
			[]string{`state "S"`, "MaxConcurrency"}},
		{"parallel-no-branches", single(`{"Type":"Parallel","Branches":[],"End":true}`), []string{`state "S"`, "Branches"}},
		{"in-a-branch", single(`{"Type":"Parallel","End":true,"Branches":[{"StartAt":"B","States":{"B":{"Type":"Pass","Next":"Nowhere"}}}]}`),
			[]string{`state "S" branch 0`, `state "B"`, `Next "Nowhere"`}},
		{"in-a-map", single(`{"Type":"Map","End":true,"ItemProcessor":{"StartAt":"I","States":{"I":{"Type":"Task","Resource":"wf-echo","Retry":[{"ErrorEquals":["X"],"MaxAttempts":-2}],"End":true}}}}`),
			[]string{`state "S" ItemProcessor`, `state "I"`, "MaxAttempts"}},
		{"fail-with-next", `{"StartAt":"F","States":{"F":{"Type":"Fail","Error":"E","Next":"F"}}}`, []string{`state "F"`, `field "Next"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := do(t, http.MethodPut, srv.URL+"/v1/workflows/"+name, []byte(c.def), srv.AuthHeader())
			if res.Status != http.StatusBadRequest {
				t.Fatalf("PUT %s: HTTP %d %s; want 400", c.def, res.Status, res.Body)
			}
			eb := errorBody(t, res.Status, res.Body)
			for _, w := range c.want {
				if !strings.Contains(eb.Message, w) {
					t.Errorf("message %q does not name %s", eb.Message, w)
				}
			}
		})
	}
	wf, err := srv.Client.Workflow(ctx(t), name)
	if err != nil || wf.Version != 1 {
		t.Fatalf("after the refused deploys: %+v, %v; want version 1", wf, err)
	}
	sameJSON(t, "the stored definition", wf.Definition, good)
	if x := startSync(t, srv, name, `{}`); string(x.Output) != `"v1"` {
		t.Fatalf("the stored version ran to %s %s, want \"v1\"", x.Status, x.Output)
	}
}
