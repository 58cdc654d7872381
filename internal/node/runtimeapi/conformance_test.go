package runtimeapi

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambda/messages"
)

// buildLambdaGo builds testdata/lambdago, an ordinary Lambda function using
// aws-lambda-go's lambda.Start. Packages under testdata are skipped by
// "./..." patterns but build fine when named explicitly.
func buildLambdaGo(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a binary; skipped in -short mode")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go tool not found: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "bootstrap")
	cmd := exec.Command(goTool, "build", "-o", bin, "./testdata/lambdago")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building testdata/lambdago: %v\n%s", err, out)
	}
	return bin
}

// startFunction runs bin as a function instance against a fresh Server and
// kills it when the test ends.
func startFunction(t *testing.T, bin string, env ...string) (*Server, *exitStatus) {
	t.Helper()
	s, addr := startServer(t, Options{})
	cmd := exec.Command(bin)
	cmd.Env = append([]string{"AWS_LAMBDA_RUNTIME_API=" + addr, "AWS_LAMBDA_FUNCTION_NAME=conformance"}, env...)
	cmd.Stdout = testWriter{t}
	cmd.Stderr = testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exit := &exitStatus{done: make(chan struct{})}
	go func() {
		exit.err = cmd.Wait()
		close(exit.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // fails harmlessly if it already exited
		<-exit.done
	})
	select {
	case <-s.Ready():
	case fe := <-s.InitError():
		t.Fatalf("function init error: %v", fe)
	case <-exit.done:
		t.Fatalf("function exited before polling: %v", exit.err)
	case <-time.After(waitTimeout):
		t.Fatal("function never polled /next")
	}
	return s, exit
}

// exitStatus records how the function process ended; err is valid once
// done is closed.
type exitStatus struct {
	done chan struct{}
	err  error
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("function: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestConformanceAWSLambdaGo(t *testing.T) {
	bin := buildLambdaGo(t)
	s, exit := startFunction(t, bin)
	ctx, cancel := context.WithTimeout(t.Context(), 2*waitTimeout)
	defer cancel()

	t.Run("success", func(t *testing.T) {
		deadline := time.Now().Add(20 * time.Second)
		res, err := s.Invoke(ctx, Event{
			RequestID:       "11111111-2222-3333-4444-555555555555",
			Payload:         []byte(`{"hello":"world","n":3}`),
			Deadline:        deadline,
			FunctionARN:     "arn:aws:lambda:eu-west-1:123456789012:function:conformance",
			TraceID:         "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
			ClientContext:   []byte(`{"custom":{"tenant":"t1"}}`),
			CognitoIdentity: []byte(`{"cognitoIdentityId":"eu-west-1:abc"}`),
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.Error != nil {
			t.Fatalf("function error: %v", res.Error)
		}
		var out struct {
			Echo                map[string]any    `json:"echo"`
			AwsRequestID        string            `json:"awsRequestId"`
			InvokedFunctionArn  string            `json:"invokedFunctionArn"`
			DeadlineMs          int64             `json:"deadlineMs"`
			TraceID             string            `json:"traceId"`
			ClientContextCustom map[string]string `json:"clientContextCustom"`
			CognitoIdentityID   string            `json:"cognitoIdentityId"`
		}
		if err := json.Unmarshal(res.Payload, &out); err != nil {
			t.Fatalf("decoding %s: %v", res.Payload, err)
		}
		if out.Echo["hello"] != "world" || out.Echo["n"] != 3.0 {
			t.Errorf("echo = %v", out.Echo)
		}
		if out.AwsRequestID != "11111111-2222-3333-4444-555555555555" {
			t.Errorf("AwsRequestID = %q", out.AwsRequestID)
		}
		if out.InvokedFunctionArn != "arn:aws:lambda:eu-west-1:123456789012:function:conformance" {
			t.Errorf("InvokedFunctionArn = %q", out.InvokedFunctionArn)
		}
		if out.DeadlineMs != deadline.UnixMilli() {
			t.Errorf("handler deadline %d, want %d", out.DeadlineMs, deadline.UnixMilli())
		}
		if out.TraceID != "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1" {
			t.Errorf("trace id %q", out.TraceID)
		}
		if out.ClientContextCustom["tenant"] != "t1" || out.CognitoIdentityID != "eu-west-1:abc" {
			t.Errorf("client context %v, identity %q", out.ClientContextCustom, out.CognitoIdentityID)
		}
	})

	t.Run("error", func(t *testing.T) {
		res, err := s.Invoke(ctx, Event{Payload: []byte(`{"fail":"it broke"}`), Deadline: time.Now().Add(20 * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		if res.Error == nil {
			t.Fatalf("no error; payload %s", res.Payload)
		}
		// aws-lambda-go names the error's Go type (pointer stripped).
		if res.Error.Type != "FunctionFailure" || res.Error.Message != "it broke" {
			t.Errorf("error = %+v", res.Error)
		}
	})

	t.Run("deadline", func(t *testing.T) {
		start := time.Now()
		res, err := s.Invoke(ctx, Event{Payload: []byte(`{"sleepMs":10000}`), Deadline: start.Add(300 * time.Millisecond)})
		if err != nil {
			t.Fatal(err)
		}
		// The handler's context expires at the deadline we sent; the
		// function itself reports the failure.
		if res.Error == nil || !strings.Contains(res.Error.Message, "deadline exceeded") {
			t.Fatalf("result %+v, error %+v", res, res.Error)
		}
		// The handler would sleep 10 s: the error, not a duration, shows the
		// deadline cut it short. It cannot come before the deadline.
		if took := time.Since(start); took < 250*time.Millisecond {
			t.Errorf("deadline exceeded after %v, before the 300ms deadline", took)
		}
	})

	t.Run("panic", func(t *testing.T) {
		res, err := s.Invoke(ctx, Event{Payload: []byte(`{"panic":true}`), Deadline: time.Now().Add(20 * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		if res.Error == nil || res.Error.Message != "asked to panic" || len(res.Error.StackTrace) == 0 {
			t.Fatalf("error = %+v", res.Error)
		}
		// Stack frames arrive as objects, each kept as compact JSON.
		var frame messages.InvokeResponse_Error_StackFrame
		if err := json.Unmarshal([]byte(res.Error.StackTrace[0]), &frame); err != nil || frame.Path == "" {
			t.Errorf("stack frame %q: %v", res.Error.StackTrace[0], err)
		}
		// After a panic aws-lambda-go reports the error and exits.
		select {
		case <-exit.done:
			if _, ok := errors.AsType[*exec.ExitError](exit.err); !ok {
				t.Errorf("exit: %v", exit.err)
			}
		case <-time.After(waitTimeout):
			t.Error("function kept running after a panic")
		}
	})
}

// TestConformanceAWSLambdaGoConcurrent runs aws-lambda-go with
// AWS_LAMBDA_MAX_CONCURRENCY, under which it polls /next from several
// goroutines at once over one endpoint.
func TestConformanceAWSLambdaGoConcurrent(t *testing.T) {
	bin := buildLambdaGo(t)
	const n = 4
	s, _ := startFunction(t, bin, "AWS_LAMBDA_MAX_CONCURRENCY=4")
	waitFor(t, s, "all pollers to park", func() bool { return len(s.waiters) == n })

	ctx, cancel := context.WithTimeout(t.Context(), 2*waitTimeout)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res, err := s.Invoke(ctx, Event{
				Payload:  []byte(`{"sleepMs":2000,"i":` + strconv.Itoa(i) + `}`),
				Deadline: time.Now().Add(20 * time.Second),
			})
			if err != nil || res.Error != nil {
				t.Errorf("invoke %d: %v %v", i, err, res.Error)
			}
		})
	}
	wg.Wait()
	// One at a time they cannot take less than n×2 s; at once they take
	// 2 s and what a busy host adds, which stays far below 6 s more.
	if took := time.Since(start); took >= n*2*time.Second {
		t.Errorf("%d concurrent 2 s invocations took %v: they ran one after the other", n, took)
	}
}

// TestConformanceAWSLambdaGoLatePost pins down how aws-lambda-go reacts to
// the 400 it gets when posting a result for an invocation whose Invoke gave
// up: it treats any non-202 answer as fatal and exits, so an instance that
// had an invocation abandoned must be expected to die (or be recycled).
func TestConformanceAWSLambdaGoLatePost(t *testing.T) {
	bin := buildLambdaGo(t)
	s, exit := startFunction(t, bin)

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err := s.Invoke(ctx, Event{Payload: []byte(`{"sleepMs":500}`), Deadline: time.Now().Add(20 * time.Second)})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Invoke: %v", err)
	}
	select {
	case <-exit.done:
		if _, ok := errors.AsType[*exec.ExitError](exit.err); !ok {
			t.Errorf("exit: %v", exit.err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("function survived a refused late post")
	}
}
