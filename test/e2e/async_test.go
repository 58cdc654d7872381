package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/test/harness"
)

// awaitAsync waits until an asynchronous invocation reaches a final state
// and returns it.
func awaitAsync(t *testing.T, c *client.Client, id string) apiv1.AsyncInvocation {
	t.Helper()
	var inv apiv1.AsyncInvocation
	waitFor(t, settle, "invocation "+id+" to finish", func() (bool, string) {
		var err error
		inv, err = c.AsyncInvocation(ctx(t), id)
		if err != nil {
			return false, err.Error()
		}
		switch inv.State {
		case "succeeded", "failed", "dead-lettered", "expired":
			return true, ""
		}
		return false, inv.State
	})
	return inv
}

func apiCode(err error) (int, string) {
	var apiErr *client.Error
	if errors.As(err, &apiErr) {
		return apiErr.Status, apiErr.Body.Code
	}
	return 0, ""
}

// TestAsyncInvocation: an event submitted with Baton-Invocation-Type:
// Event is answered 202 with an id once stored, runs, and its state shows
// the result; an idempotency key returns the first id; bad input is
// refused before anything is stored.
func TestAsyncInvocation(t *testing.T) {
	t.Parallel()
	srv := harness.Start(t, harness.Options{Args: []string{"--async-retry-base", "100ms"}})
	deploy(t, srv, "echo", pySpec("echo"), pyDir)
	c := srv.Client

	acc, err := c.InvokeAsync(ctx(t), "echo", []byte(`{"n":1}`), "")
	if err != nil || acc.ID == "" || acc.Duplicate {
		t.Fatalf("async invoke: %+v, %v", acc, err)
	}
	inv := awaitAsync(t, c, acc.ID)
	if inv.State != "succeeded" || string(inv.Result) != `{"n": 1}` && string(inv.Result) != `{"n":1}` || len(inv.Attempts) != 1 {
		t.Fatalf("invocation %+v (result %s), want succeeded with the event back after one attempt", inv, inv.Result)
	}

	first, err := c.InvokeAsync(ctx(t), "echo", []byte(`{"n":2}`), "order-42")
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.InvokeAsync(ctx(t), "echo", []byte(`{"n":2}`), "order-42")
	if err != nil || again.ID != first.ID || !again.Duplicate {
		t.Fatalf("repeat with the same key: %+v, %v; want the first id %s, marked duplicate", again, err, first.ID)
	}
	other, err := c.InvokeAsync(ctx(t), "echo", []byte(`{"n":2}`), "order-43")
	if err != nil || other.ID == first.ID {
		t.Fatalf("another key: %+v, %v; want a new id", other, err)
	}

	// Bad input: a clear 4xx, nothing stored.
	if _, err := c.InvokeAsync(ctx(t), "nope", []byte(`{}`), ""); !hasStatus(err, http.StatusNotFound, "function_not_found") {
		t.Errorf("unknown function: %v", err)
	}
	if _, err := c.InvokeAsync(ctx(t), "echo", []byte(`{"n":`), ""); !hasStatus(err, http.StatusBadRequest, "malformed_json") {
		t.Errorf("malformed event: %v", err)
	}
	if _, err := c.InvokeAsync(ctx(t), "echo", []byte(`{}`), "has space"); !hasStatus(err, http.StatusBadRequest, "bad_idempotency_key") {
		t.Errorf("bad key: %v", err)
	}
	if _, err := c.InvokeAsync(ctx(t), "echo", []byte(`{}`), strings.Repeat("k", 300)); !hasStatus(err, http.StatusBadRequest, "bad_idempotency_key") {
		t.Errorf("long key: %v", err)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/functions/echo/invoke", strings.NewReader(`{}`))
	req.Header.Set(apiv1.HeaderAmzInvocationType, "Sometimes")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad invocation type: %s", resp.Status)
	}
	// AWS's header works too.
	req, _ = http.NewRequest(http.MethodPost, srv.URL+"/v1/functions/echo/invoke", strings.NewReader(`{"aws":true}`))
	req.Header.Set(apiv1.HeaderAmzInvocationType, apiv1.InvocationTypeEvent)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var awsAcc apiv1.AsyncAccepted
	_ = json.NewDecoder(resp.Body).Decode(&awsAcc)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || awsAcc.ID == "" {
		t.Fatalf("X-Amz-Invocation-Type: Event: %s %+v", resp.Status, awsAcc)
	}
	if inv := awaitAsync(t, c, awsAcc.ID); inv.State != "succeeded" {
		t.Fatalf("AWS-style async invocation: %+v", inv)
	}
	if _, err := c.AsyncInvocation(ctx(t), "00000000-0000-4000-8000-000000000000"); !hasStatus(err, http.StatusNotFound, "") {
		t.Errorf("unknown invocation id: %v", err)
	}
}

func hasStatus(err error, status int, code string) bool {
	s, c := apiCode(err)
	return s == status && (code == "" || c == code)
}

// TestAsyncRetriesAndDeadLetters: a failing function's event is tried
// 1 + maxRetryAttempts times, then dead-lettered with its errors; the
// dead-letter queue lists it, and a redrive runs it again; a success goes
// to its onSuccess function.
func TestAsyncRetriesAndDeadLetters(t *testing.T) {
	t.Parallel()
	srv := harness.Start(t, harness.Options{Args: []string{"--async-retry-base", "100ms"}})
	c := srv.Client
	one := 1
	failing := pySpec("fail")
	failing.Async = &function.AsyncConfig{MaxRetryAttempts: &one, OnFailure: "dlq:failed"}
	deploy(t, srv, "failing", failing, pyDir)
	deploy(t, srv, "collector", pySpec("echo"), pyDir)
	succeeding := pySpec("echo")
	succeeding.Async = &function.AsyncConfig{OnSuccess: "function:collector"}
	deploy(t, srv, "succeeding", succeeding, pyDir)

	acc, err := c.InvokeAsync(ctx(t), "failing", []byte(`{"message":"no stock"}`), "")
	if err != nil {
		t.Fatal(err)
	}
	inv := awaitAsync(t, c, acc.ID)
	if inv.State != "dead-lettered" || len(inv.Attempts) != 2 || inv.Destination != "dlq:failed" {
		t.Fatalf("failing invocation: %+v, want dead-lettered after 2 attempts", inv)
	}
	for _, a := range inv.Attempts {
		if !strings.Contains(a.Error, "no stock") || a.ErrorType != "CustomError" {
			t.Errorf("attempt %+v, want the function's CustomError", a)
		}
	}
	entries, err := c.DeadLetters(ctx(t), "failed", 0)
	if err != nil || len(entries) != 1 || entries[0].ID != acc.ID || entries[0].Function != "failing" || entries[0].Condition != "RetriesExhausted" {
		t.Fatalf("dead letters: %+v, %v", entries, err)
	}
	one1, err := c.DeadLetter(ctx(t), "failed", entries[0].Seq)
	if err != nil || !strings.Contains(string(one1.Record), "no stock") {
		t.Fatalf("dead letter: %s, %v", one1.Record, err)
	}
	if _, err := c.DeadLetter(ctx(t), "failed", entries[0].Seq+1000); !hasStatus(err, http.StatusNotFound, "") {
		t.Errorf("a missing entry: %v", err)
	}
	ids, err := c.Redrive(ctx(t), "failed")
	if err != nil || len(ids) != 1 || ids[0] == acc.ID {
		t.Fatalf("redrive: %v, %v", ids, err)
	}
	if inv := awaitAsync(t, c, ids[0]); inv.State != "dead-lettered" || len(inv.Attempts) != 2 {
		t.Fatalf("redriven invocation: %+v", inv)
	}
	if entries, err := c.DeadLetters(ctx(t), "failed", 0); err != nil || len(entries) != 1 || entries[0].ID != ids[0] {
		t.Fatalf("after the redrive the queue holds %+v (%v), want only the redriven event's new failure", entries, err)
	}
	if _, err := c.DeadLetters(ctx(t), "Bad_Name", 0); !hasStatus(err, http.StatusBadRequest, "") {
		t.Errorf("bad queue name: %v", err)
	}

	// The function sees its attempt number (Lambda's client context).
	deploy(t, srv, "second-time", pySpec("attempt"), pyDir)
	acc, err = c.InvokeAsync(ctx(t), "second-time", []byte(`{}`), "")
	if err != nil {
		t.Fatal(err)
	}
	if inv := awaitAsync(t, c, acc.ID); inv.State != "succeeded" || string(inv.Result) != `{"attempt": 2}` || len(inv.Attempts) != 2 {
		t.Fatalf("attempt-aware invocation: %+v (result %s), want success on attempt 2", inv, inv.Result)
	}
	// baton logs shows both attempts under the invocation's id.
	out, errOut, code := cli(t, srv, "logs", "second-time", "--server", srv.URL)
	if code != 0 || !strings.Contains(out, acc.ID+"  v1  function-error  async attempt 1") || !strings.Contains(out, acc.ID+"  v1  success  async attempt 2") {
		t.Errorf("baton logs (exit %d): %s%s, want both attempts of %s", code, out, errOut, acc.ID)
	}

	acc, err = c.InvokeAsync(ctx(t), "succeeding", []byte(`{"order":7}`), "")
	if err != nil {
		t.Fatal(err)
	}
	if inv := awaitAsync(t, c, acc.ID); inv.State != "succeeded" || inv.Destination != "function:collector" {
		t.Fatalf("succeeding invocation: %+v", inv)
	}
	waitFor(t, settle, "the collector to receive the success record", func() (bool, string) {
		recs, err := c.Invocations(ctx(t), "collector", 10)
		if err != nil {
			return false, err.Error()
		}
		for _, r := range recs {
			if r.Status == "success" {
				return true, ""
			}
		}
		return false, fmt.Sprint(len(recs), " records")
	})
}

// TestAsyncSurvivesServerKill: events accepted before the server is
// killed with -9 all run after it restarts; none is lost.
func TestAsyncSurvivesServerKill(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	args := []string{"--sandbox", "fake", "--fake-start-latency", "20ms", "--async-retry-base", "100ms"}
	srv := harness.Start(t, harness.Options{DataDir: dataDir, Args: args})
	spec := pySpec("echo")
	spec.MaxScale = 2
	deploy(t, srv, "slow", spec, pyDir)
	var ids []string
	for i := range 40 {
		acc, err := srv.Client.InvokeAsync(ctx(t), "slow", []byte(fmt.Sprintf(`{"i":%d}`, i)), "")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, acc.ID)
	}
	srv.Kill()
	srv = harness.Start(t, harness.Options{DataDir: dataDir, Args: args})
	for _, id := range ids {
		if inv := awaitAsync(t, srv.Client, id); inv.State != "succeeded" {
			t.Fatalf("invocation %s after the crash: %+v", id, inv)
		}
	}
}

// TestAsyncMetrics: a backlog shows as queue depth and the age of its
// oldest event, deliveries are counted by outcome, and both gauges drop to
// zero once the backlog drains.
func TestAsyncMetrics(t *testing.T) {
	t.Parallel()
	srv := harness.Start(t, harness.Options{})
	spec := pySpec("sleep")
	spec.MaxScale = 1
	spec.Async = &function.AsyncConfig{Concurrency: 1}
	deploy(t, srv, "backlogged", spec, pyDir)
	const events = 6
	var ids []string
	for range events {
		acc, err := srv.Client.InvokeAsync(ctx(t), "backlogged", []byte(`{"ms":1500}`), "")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, acc.ID)
	}
	const depth, oldest = `baton_async_queue_depth{function="backlogged"}`, `baton_async_oldest_event_age_seconds{function="backlogged"}`
	waitFor(t, settle, "the backlog to show in /metrics", func() (bool, string) {
		m := metrics(t, srv)
		return m[depth] > 0 && m[oldest] > 0, fmt.Sprintf("depth %v, oldest %v s", m[depth], m[oldest])
	})
	for _, id := range ids {
		if inv := awaitAsync(t, srv.Client, id); inv.State != "succeeded" {
			t.Fatalf("invocation %s: %+v", id, inv)
		}
	}
	waitFor(t, settle, "the drained backlog to show in /metrics", func() (bool, string) {
		m := metrics(t, srv)
		ok := m[depth] == 0 && m[oldest] == 0 && m[`baton_async_events_total{function="backlogged",outcome="succeeded"}`] == events
		return ok, fmt.Sprintf("depth %v, oldest %v s, succeeded %v", m[depth], m[oldest], m[`baton_async_events_total{function="backlogged",outcome="succeeded"}`])
	})
}

// TestAsyncDedupWindow: an idempotency key maps to its first id only
// within --async-dedup-window; afterwards the same key is a new event.
// The window is long enough that a busy machine does not stall the
// repeat past it.
func TestAsyncDedupWindow(t *testing.T) {
	t.Parallel()
	srv := harness.Start(t, harness.Options{Args: []string{"--sandbox", "fake", "--async-dedup-window", "20s"}})
	deploy(t, srv, "echo", pySpec("echo"), pyDir)
	first, err := srv.Client.InvokeAsync(ctx(t), "echo", []byte(`{}`), "once")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := srv.Client.InvokeAsync(ctx(t), "echo", []byte(`{}`), "once"); err != nil || again.ID != first.ID {
		t.Fatalf("repeat within the window: %+v, %v; want %s", again, err, first.ID)
	}
	waitFor(t, settle, "the key to expire", func() (bool, string) {
		acc, err := srv.Client.InvokeAsync(ctx(t), "echo", []byte(`{}`), "once")
		if err != nil {
			t.Fatal(err)
		}
		return acc.ID != first.ID && !acc.Duplicate, "still " + acc.ID
	})
	if _, _, code := cli(t, nil, "server", "--async-dedup-window", "-1m"); code == 0 {
		t.Error("baton server --async-dedup-window -1m started")
	}
}
