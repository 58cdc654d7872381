package asl

import (
	"testing"
	"time"
)

func TestRetryAndCatchPolicy(t *testing.T) {
	def, err := Parse([]byte(`{"StartAt": "T", "States": {
	  "T": {"Type": "Task", "Resource": "f", "Next": "Done",
	        "Retry": [{"ErrorEquals": ["States.Timeout"], "IntervalSeconds": 2, "MaxAttempts": 3, "BackoffRate": 3, "MaxDelaySeconds": 10},
	                  {"ErrorEquals": ["States.TaskFailed"], "MaxAttempts": 0}],
	        "Catch": [{"ErrorEquals": ["CustomError"], "Next": "Handled"}, {"ErrorEquals": ["States.ALL"], "Next": "Failed"}]},
	  "Done": {"Type": "Succeed"}, "Handled": {"Type": "Succeed"}, "Failed": {"Type": "Fail"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	st := def.States["T"]
	if i := st.RetrierFor(ErrorTimeout); i != 0 {
		t.Fatalf("timeout retrier %d", i)
	}
	r := st.Retry[0]
	for retried, want := range []time.Duration{2 * time.Second, 6 * time.Second, 10 * time.Second} {
		if d, ok := r.Delay(retried); !ok || d != want {
			t.Errorf("retry %d: %s, %v; want %s", retried+1, d, ok, want)
		}
	}
	if _, ok := r.Delay(3); ok {
		t.Error("a fourth retry with MaxAttempts 3")
	}
	if i := st.RetrierFor("CustomError"); i != 1 {
		t.Fatalf("TaskFailed must catch a function's error: retrier %d", i)
	}
	if _, ok := st.Retry[1].Delay(0); ok {
		t.Error("MaxAttempts 0 retried")
	}
	if c, ok := st.CatcherFor("CustomError"); !ok || c.Next != "Handled" {
		t.Errorf("catch CustomError: %+v", c)
	}
	if c, ok := st.CatcherFor(ErrorTimeout); !ok || c.Next != "Failed" {
		t.Errorf("catch timeout: %+v", c)
	}
	if ErrorMatches([]string{ErrorTaskFailed}, ErrorTimeout) {
		t.Error("States.TaskFailed caught a timeout")
	}
	if d, ok := (Retrier{ErrorEquals: []string{ErrorAll}}).Delay(2); !ok || d != 4*time.Second {
		t.Errorf("defaults: %s, %v", d, ok)
	}
}
