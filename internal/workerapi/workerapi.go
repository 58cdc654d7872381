// Package workerapi is the boundary between the control plane and a worker
// (the host agent). In `baton server` the controller holds the node's
// *node.Worker as a Worker and calls it directly (no transport in
// between); cluster mode puts a network transport behind the same
// interface. Package workerapitest is the conformance suite of every
// implementation, package fake an in-memory one for tests at scale. Every call takes a context and can fail: a caller
// must treat a worker as something that can disappear at any time.
package workerapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/transfer"
)

// Worker runs function instances on one host.
type Worker interface {
	// Info describes the worker: identity, isolation, capacity and usage.
	Info(ctx context.Context) (Info, error)

	// StartInstance asks the worker to create an instance and returns as
	// soon as the worker accepted the request, with the instance's id and
	// State Starting. How the start ends (ready or failed) is observed with
	// WaitInstance or on the event stream (InstanceReady, InstanceFailed).
	// Stopping a starting instance cancels its start.
	StartInstance(ctx context.Context, spec InstanceSpec) (Instance, error)
	// WaitInstance blocks until the instance left State Starting or ctx
	// ends. It returns the ready instance, or for a start that failed an
	// *InitError (the function's code failed to initialise) or another
	// error. An unknown id gives an error wrapping ErrUnknownInstance.
	WaitInstance(ctx context.Context, id string) (Instance, error)
	// StopInstance kills an instance, starting or running. Stopping an
	// unknown or already stopped instance is not an error.
	StopInstance(ctx context.Context, id string) error
	// Instances lists the worker's live instances (starting and ready), so
	// that a controller can rebuild its view after a restart or a gap in
	// the event stream.
	Instances(ctx context.Context) ([]Instance, error)

	// Invoke runs one event on a ready instance. Failures of the instance
	// rather than of the function (crash, timeout) are returned as *Failure.
	Invoke(ctx context.Context, instanceID string, inv Invocation) (Result, error)

	// Events streams the worker's events with Seq greater than after (0:
	// from now on). The channel is closed when ctx ends or the stream
	// breaks; the caller resumes by calling Events again with the last Seq
	// it saw. When events after that Seq were already dropped, the first
	// event is a Resync: the caller must reconcile with Instances.
	Events(ctx context.Context, after uint64) (<-chan Event, error)

	// Images lists the images stored on the worker's host, building the
	// runtime base images first. A worker without an image store returns
	// an error wrapping ErrNoImageStore.
	Images(ctx context.Context) ([]Image, error)
	// CheckImage says whether the worker can run functions of the named
	// image (nil), or why not (ErrImageNotFound, ErrNoImageStore).
	CheckImage(ctx context.Context, name string) error
	// ImportImage stores the image read from archive (an OCI layout
	// tarball or a docker-save archive, optionally gzipped) under name.
	ImportImage(ctx context.Context, name string, archive io.Reader) (Image, error)
	// RemoveImage deletes an image unless inUse says a function uses it
	// (ErrImageInUse), then collects the layers nothing references.
	RemoveImage(ctx context.Context, name string, inUse []string) error
}

// CodeStore is where a worker fetches function code: the archive stored
// under a digest by the registry (the JetStream object store, in-process or
// over the network). The worker verifies what it reads against the digest.
type CodeStore interface {
	Code(ctx context.Context, digest string) (io.ReadCloser, error)
}

// Info describes a worker.
type Info struct {
	ID        string `json:"id"`
	Isolation string `json:"isolation"`
	// Capacity is what the host offers to instances.
	Capacity Resources `json:"capacity"`
	// Reserved is what its live instances were promised.
	Reserved  Resources `json:"reserved"`
	Instances int       `json:"instances"`
	Sandboxes int       `json:"sandboxes"`
	// WorkingSets are the cold-start working sets this host recorded
	// (see internal/workingset), newest first.
	WorkingSets []WorkingSet `json:"workingSets,omitempty"`
}

// WorkingSet summarises one recorded working set of a function version.
type WorkingSet struct {
	Function string    `json:"function"`
	Version  int       `json:"version"`
	Bytes    int64     `json:"bytes"`
	Ranges   int       `json:"ranges"`
	Files    int       `json:"files"`
	Recorded time.Time `json:"recorded"`
	// Prefetches counts the cold starts that prefetched it since the
	// worker started.
	Prefetches int64 `json:"prefetches"`
}

// Resources are amounts of host resources.
type Resources struct {
	MemoryMB int `json:"memoryMB"`
	// MilliCPUs is CPU in thousandths of a core.
	MilliCPUs int `json:"milliCPUs"`
}

// InstanceSpec says which function version to instantiate.
type InstanceSpec struct {
	Function   string        `json:"function"`
	Version    int           `json:"version"`
	App        string        `json:"app"`
	Spec       function.Spec `json:"spec"`
	CodeDigest string        `json:"codeDigest"`
}

// State is where an instance is in its life.
type State string

const (
	Starting State = "starting"
	Ready    State = "ready"
	Failed   State = "failed"
	Stopped  State = "stopped"
)

// Instance describes an instance.
type Instance struct {
	ID string `json:"id"`
	// Worker is the id of the worker that runs the instance.
	Worker   string `json:"worker"`
	Function string `json:"function"`
	Version  int    `json:"version"`
	State    State  `json:"state"`
	// Capacity is how many events the instance serves at once.
	Capacity int `json:"capacity"`
	// InitDuration runs from the start request until the runtime first
	// asked for work (set once Ready).
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
	// ClientContext (JSON) reaches the function as Lambda's client context
	// (context.client_context in Python, context.clientContext in Node);
	// Baton puts an asynchronous event's attempt number in its "custom"
	// map as "baton-attempt".
	ClientContext []byte `json:"clientContext,omitempty"`
	// ByRef says the caller takes a reference instead of a result larger
	// than the worker's transfer threshold (Result.Ref): Baton passes the
	// data on itself (a workflow step's output). The payload itself may be
	// a reference (transfer.Marker), which the worker resolves before the
	// function sees it.
	ByRef bool `json:"byRef,omitempty"`
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
	// Ref, set only for an Invocation with ByRef, stands for a large
	// payload that the worker kept (Payload is then empty).
	Ref *transfer.Ref `json:"ref,omitempty"`
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
	// FailureWorkerLost: the worker running the invocation died or was cut
	// off (or removed) while it ran; whether the function ran is unknown.
	FailureWorkerLost FailureKind = "worker-lost"
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

// InitError is returned for a start that failed because the function's
// code failed to initialise (import error, missing handler, bootstrap
// exited).
type InitError struct {
	Err  FunctionError `json:"error"`
	Logs []byte        `json:"logs,omitempty"`
}

func (e *InitError) Error() string {
	return fmt.Sprintf("init failed: %s: %s", e.Err.Type, e.Err.Message)
}

// EventKind names worker events.
type EventKind string

const (
	// InstanceReady: a start finished; Instance is the ready instance.
	InstanceReady EventKind = "instance-ready"
	// InstanceFailed: a start failed; Reason (and InitError for the
	// function's own init failure) say why.
	InstanceFailed EventKind = "instance-failed"
	// InstanceExited: a ready instance ended without being asked to stop.
	InstanceExited EventKind = "instance-exited"
	// Resync: events were lost; reconcile with Worker.Instances.
	Resync EventKind = "resync"
)

// Event is a notification from a worker.
type Event struct {
	// Seq orders a worker's events (1, 2, ...); resume a stream after it.
	Seq      uint64     `json:"seq"`
	Kind     EventKind  `json:"kind"`
	Worker   string     `json:"worker"`
	Instance string     `json:"instance,omitempty"`
	Function string     `json:"function,omitempty"`
	Version  int        `json:"version,omitempty"`
	Reason   string     `json:"reason,omitempty"`
	Ready    *Instance  `json:"ready,omitempty"`
	InitErr  *InitError `json:"initError,omitempty"`
}

// Image describes an image stored on a worker's host.
type Image struct {
	Name string `json:"name"`
	ID   string `json:"id"`
	// Layers are diffIDs, bottom first.
	Layers     []string  `json:"layers"`
	Env        []string  `json:"env,omitempty"`
	Entrypoint []string  `json:"entrypoint,omitempty"`
	Cmd        []string  `json:"cmd,omitempty"`
	WorkingDir string    `json:"workingDir,omitempty"`
	User       string    `json:"user,omitempty"`
	Created    time.Time `json:"created"`
	Size       int64     `json:"size"`
	Source     string    `json:"source,omitempty"`
}

// MarshalFunctionError renders a function error as the JSON body clients see.
func MarshalFunctionError(fe *FunctionError) []byte {
	b, _ := json.Marshal(fe)
	return b
}

// Errors of the worker API, classified for the control plane and the API.
var (
	ErrUnknownInstance = errdefs.New(errdefs.NotFound, "instance_not_found", "no such instance on this worker")
	ErrNoImageStore    = errdefs.New(errdefs.NotImplemented, "no_image_store", "this worker has no image store")
	ErrImageNotFound   = errdefs.New(errdefs.NotFound, "image_not_found", "image not found")
	ErrImageInUse      = errdefs.New(errdefs.Conflict, "image_in_use", "image is in use")
	// ErrWorkerUnavailable: the worker could not be reached or is closing.
	ErrWorkerUnavailable = errdefs.New(errdefs.Unavailable, "worker_unavailable", "worker unavailable")
)

// ErrorClass classifies a failure of an instance: a timeout is a Timeout,
// everything else the function's (its instance's) failure.
func (f *Failure) ErrorClass() (errdefs.Class, string) {
	if f.Kind == FailureTimeout {
		return errdefs.Timeout, "timeout"
	}
	if f.Kind == FailureWorkerFailure || f.Kind == FailureWorkerLost {
		return errdefs.Unavailable, string(f.Kind)
	}
	return errdefs.FunctionFailed, string(f.Kind)
}

// ErrorClass classifies an init failure as the function's.
func (e *InitError) ErrorClass() (errdefs.Class, string) {
	return errdefs.FunctionFailed, "init_error"
}
