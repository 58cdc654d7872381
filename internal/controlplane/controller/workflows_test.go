package controller

import (
	"errors"
	"testing"

	"github.com/baton-faas/baton/internal/async"
	"github.com/baton-faas/baton/internal/workflow/execution"
)

// A step on the global bus whose output could not go on fails with a
// named error and the reason (it once failed the execution with an empty
// error); the function's own error keeps its type; a lost attempt runs
// again.
func TestGlobalOutcomeNamesEveryEnd(t *testing.T) {
	tooLarge := async.Invocation{State: async.StateFailed, Reason: "the step's output (1048590 bytes) is larger than the global bus carries",
		Attempts: []async.Attempt{{Number: 1, Worker: "w1"}}}
	_, err := globalOutcome(tooLarge)
	var fe *execution.FunctionError
	if !errors.As(err, &fe) || fe.Type != ErrorResultTooLarge || fe.Message != tooLarge.Reason {
		t.Fatalf("too large: %v, want %s with the reason", err, ErrorResultTooLarge)
	}
	failed := async.Invocation{State: async.StateFailed, Attempts: []async.Attempt{{Number: 1, Error: "boom", ErrorType: "ValueError"}}}
	if _, err := globalOutcome(failed); !errors.As(err, &fe) || fe.Type != "ValueError" || fe.Message != "boom" {
		t.Fatalf("function error: %v", err)
	}
	lost := async.Invocation{State: async.StateFailed, Attempts: []async.Attempt{{Number: 1, Error: "gone", ErrorType: "worker_unavailable", Platform: true}}}
	var interrupted stepLost
	if _, err := globalOutcome(lost); !errors.As(err, &interrupted) {
		t.Fatalf("lost worker: %v, want the step run again", err)
	}
	ok := async.Invocation{State: async.StateSucceeded, Result: []byte(`{"a":1}`), Attempts: []async.Attempt{{Number: 1, Worker: "w2"}}}
	if st, err := globalOutcome(ok); err != nil || string(st.Output) != `{"a":1}` || st.Host != "w2" {
		t.Fatalf("success: %+v, %v", st, err)
	}
}
