// Package workerapi is the boundary between the controller and a worker.
// In `baton server` the controller calls the worker in-process through this
// interface; cluster mode adds a network transport that implements it.
package workerapi

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/baton-faas/baton/internal/function"
)

// Worker runs function instances on one host.
type Worker interface {
	// StartInstance creates an instance and returns once its runtime has
	// asked for work. An instance whose code fails to initialise returns an
	// *InitError.
	StartInstance(ctx context.Context, spec InstanceSpec) (Instance, error)
	// StopInstance kills an instance. Stopping an unknown or already
	// stopped instance is not an error.
	StopInstance(ctx context.Context, id string) error
	// Invoke runs one event on an instance. Failures of the instance rather
	// than of the function (crash, timeout) are returned as *Failure.
	Invoke(ctx context.Context, instanceID string, inv Invocation) (Result, error)
	// Events reports instances that ended without being asked to stop.
	Events() <-chan Event
	// Info describes the worker, including its isolation level.
	Info() Info
}

// Info describes a worker.
type Info struct {
	ID        string `json:"id"`
	Isolation string `json:"isolation"`
}

// InstanceSpec says which function version to instantiate.
type InstanceSpec struct {
	Function   string        `json:"function"`
	Version    int           `json:"version"`
	App        string        `json:"app"`
	Spec       function.Spec `json:"spec"`
	CodeDigest string        `json:"codeDigest"`
}

// Instance describes a started instance.
type Instance struct {
	ID       string `json:"id"`
	Function string `json:"function"`
	Version  int    `json:"version"`
	// Capacity is how many events the instance serves at once.
	Capacity int `json:"capacity"`
	// InitDuration runs from the start request until the runtime first
	// asked for work.
	InitDuration time.Duration `json:"initDuration"`
	// Forked is true when the instance was forked from a warm grain worker.
	Forked bool `json:"forked"`
}

// Invocation is one event for an instance.
type Invocation struct {
	ID       string    `json:"id"`
	Payload  []byte    `json:"payload"`
	Deadline time.Time `json:"deadline"`
	TraceID  string    `json:"traceId,omitempty"`
}

// FunctionError is the error a function reported (Lambda error shape).
type FunctionError struct {
	Message    string   `json:"errorMessage"`
	Type       string   `json:"errorType"`
	StackTrace []string `json:"stackTrace,omitempty"`
}

// Result is the outcome of an invocation that the runtime answered.
type Result struct {
	Payload []byte         `json:"payload,omitempty"`
	Error   *FunctionError `json:"error,omitempty"`
	// Logs holds the instance's stdout and stderr for this invocation,
	// capped; LogsTruncated says whether output was dropped.
	Logs          []byte        `json:"logs,omitempty"`
	LogsTruncated bool          `json:"logsTruncated,omitempty"`
	Duration      time.Duration `json:"duration"`
}

// FailureKind classifies an invocation that the function did not answer.
type FailureKind string

const (
	FailureTimeout      FailureKind = "timeout"
	FailureCrash        FailureKind = "crash"
	FailureOutOfMemory  FailureKind = "out-of-memory"
	FailureTooLarge     FailureKind = "response-too-large"
	FailureInstanceGone FailureKind = "instance-gone"
	// FailureNotDelivered: the instance died before its runtime received
	// the event, so the event can safely run on another instance.
	FailureNotDelivered  FailureKind = "not-delivered"
	FailureWorkerFailure FailureKind = "worker"
)

// Failure is returned by Invoke when the instance, not the function,
// failed. The instance is dead afterwards unless InstanceAlive is set.
type Failure struct {
	Kind          FailureKind `json:"kind"`
	Message       string      `json:"message"`
	InstanceAlive bool        `json:"instanceAlive,omitempty"`
	Logs          []byte      `json:"logs,omitempty"`
	LogsTruncated bool        `json:"logsTruncated,omitempty"`
}

func (f *Failure) Error() string { return fmt.Sprintf("%s: %s", f.Kind, f.Message) }

// InitError is returned by StartInstance when the function's code failed
// to initialise (import error, missing handler, bootstrap exited).
type InitError struct {
	Err  FunctionError `json:"error"`
	Logs []byte        `json:"logs,omitempty"`
}

func (e *InitError) Error() string {
	return fmt.Sprintf("init failed: %s: %s", e.Err.Type, e.Err.Message)
}

// EventKind names worker events.
type EventKind string

// InstanceExited is sent when an instance ended on its own.
const InstanceExited EventKind = "instance-exited"

// Event is a notification from a worker.
type Event struct {
	Kind     EventKind `json:"kind"`
	Instance string    `json:"instance"`
	Function string    `json:"function"`
	Version  int       `json:"version"`
	Reason   string    `json:"reason"`
}

// MarshalFunctionError renders a function error as the JSON body clients see.
func MarshalFunctionError(fe *FunctionError) []byte {
	b, _ := json.Marshal(fe)
	return b
}
