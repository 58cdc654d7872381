package async

import (
	"encoding/json"
	"time"
)

// States of an asynchronous invocation.
const (
	StateQueued       = "queued"
	StateRunning      = "running"
	StateSucceeded    = "succeeded"
	StateFailed       = "failed"
	StateDeadLettered = "dead-lettered"
	StateExpired      = "expired"
)

// Conditions under which an outcome goes to a destination (Lambda's).
const (
	conditionSuccess          = "Success"
	conditionRetriesExhausted = "RetriesExhausted"
	conditionEventAgeExceeded = "EventAgeExceeded"
)

// Invocation is the stored state of one asynchronous invocation.
type Invocation struct {
	ID       string    `json:"id"`
	Function string    `json:"function"`
	State    string    `json:"state"`
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
	Attempts []Attempt `json:"attempts,omitempty"`
	// Result is the function's answer once it succeeded (up to
	// Options.MaxResultBytes; ResultTruncated says it was cut).
	Result          []byte `json:"result,omitempty"`
	ResultTruncated bool   `json:"resultTruncated,omitempty"`
	// ResultRef: Result is a direct-transfer reference's marker (a
	// function's call with Queue.Call's ByRef).
	ResultRef bool `json:"resultRef,omitempty"`
	// Destination is where the outcome went ("function:NAME",
	// "dlq:NAME"), if anywhere.
	Destination string `json:"destination,omitempty"`
	// Reason explains a final failure (retries exhausted, event too old,
	// function deleted).
	Reason string `json:"reason,omitempty"`
	// Pending is an outcome decided but not yet delivered to its
	// destination: a redelivery of the event delivers it rather than
	// running the event again.
	Pending *Pending `json:"pending,omitempty"`
	// Step: a workflow step's or a function's call's event (see
	// Queue.EnqueueStep and Queue.Call).
	Step bool `json:"step,omitempty"`
}

// Pending is an outcome waiting for its destination to take it.
type Pending struct {
	State       string          `json:"state"` // the final state once delivered
	Condition   string          `json:"condition"`
	Destination string          `json:"destination"`
	Record      json.RawMessage `json:"record"` // what the destination receives
}

// Attempt is one run of the event.
type Attempt struct {
	Number int       `json:"number"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end,omitzero"`
	// Error is empty for a success; ErrorType is the function's error
	// type or Baton's code.
	Error     string `json:"error,omitempty"`
	ErrorType string `json:"errorType,omitempty"`
	// Worker-lost or crashed controller: the attempt never ended here.
	Interrupted bool `json:"interrupted,omitempty"`
	// Platform: the error is Baton's (ErrorType is its code, ErrorClass
	// its errdefs class), not the function's.
	Platform   bool   `json:"platform,omitempty"`
	ErrorClass string `json:"errorClass,omitempty"`
	// Worker is the worker the attempt ran on.
	Worker string `json:"worker,omitempty"`
}

// Final says whether the state is an outcome.
func Final(state string) bool {
	switch state {
	case StateSucceeded, StateFailed, StateDeadLettered, StateExpired:
		return true
	}
	return false
}
