// Package v1 holds the JSON types of Baton's HTTP API, version 1, and its
// error codes. They are what travels on the wire: the server converts its
// internal values to them, and the Go client (package client) uses nothing
// else, so clients do not depend on the control plane's packages.
package v1

import (
	"encoding/json"
	"time"
)

// FunctionSpec is a function's configuration as the API shows and takes
// it. Zero fields take the server's defaults.
type FunctionSpec struct {
	Runtime            string            `json:"runtime"`
	Handler            string            `json:"handler"`
	Env                map[string]string `json:"env,omitempty"`
	MemoryMB           int               `json:"memoryMB,omitempty"`
	TimeoutSeconds     int               `json:"timeoutSeconds,omitempty"`
	Concurrency        int               `json:"concurrency,omitempty"`
	MinScale           int               `json:"minScale"`
	MaxScale           int               `json:"maxScale,omitempty"`
	IdleTimeoutSeconds int               `json:"idleTimeoutSeconds,omitempty"`
	// Autoscaler names the scaling policy: "immediate" (default: scale up
	// at once on queued demand, down after the idle timeout) or "kpa"
	// (Knative's windows and panic mode).
	Autoscaler string `json:"autoscaler,omitempty"`
	// Idempotent says that running an event twice is harmless: an
	// invocation whose worker was lost while it ran is then run again
	// elsewhere instead of failing with worker-lost.
	Idempotent bool `json:"idempotent,omitempty"`
	// App groups functions that share one sandbox per host (default: the
	// function's own name).
	App string `json:"app,omitempty"`
	// Network is "isolated" (own network namespace, loopback only) or
	// "host".
	Network string `json:"network,omitempty"`
	// Image names the root filesystem image; empty means the runtime's
	// base image.
	Image string `json:"image,omitempty"`
	// Async configures asynchronous invocations (defaults when absent).
	Async *AsyncConfig `json:"async,omitempty"`
	// Prefetch records the working set of the version's first cold start
	// on a host and prefetches it on later cold starts there (absent:
	// on; false turns both off).
	Prefetch *bool `json:"prefetch,omitempty"`
}

// AsyncConfig is how a function's asynchronous invocations are retried
// and where their outcomes go (AWS Lambda's semantics).
type AsyncConfig struct {
	// MaxRetryAttempts is how often a failed event is tried again: 0 to 2
	// (default 2).
	MaxRetryAttempts *int `json:"maxRetryAttempts,omitempty"`
	// MaxEventAgeSeconds bounds how long an event may wait for a
	// successful attempt: 60 to 21,600 (default 21,600).
	MaxEventAgeSeconds int `json:"maxEventAgeSeconds,omitempty"`
	// OnSuccess and OnFailure name a destination for the outcome:
	// "function:NAME" (an asynchronous invocation of that function with
	// the outcome as its event) or "dlq:NAME" (a dead-letter queue that
	// baton dlq lists and redrives).
	OnSuccess string `json:"onSuccess,omitempty"`
	OnFailure string `json:"onFailure,omitempty"`
	// Concurrency bounds the function's asynchronous events running at
	// once (default: half its maxScale × concurrency, at least 1), so
	// that a backlog does not starve synchronous calls.
	Concurrency int `json:"concurrency,omitempty"`
}

// DeployRequest is the body of PUT /v1/functions/{name}: the spec and the
// code, a zip archive (base64 in JSON).
type DeployRequest struct {
	FunctionSpec
	Code []byte `json:"code"`
}

// InstanceStatus is one live instance of a function.
type InstanceStatus struct {
	ID string `json:"id"`
	// Worker is the id of the node that runs the instance.
	Worker   string    `json:"worker,omitempty"`
	Version  int       `json:"version"`
	InFlight int       `json:"inFlight"`
	Capacity int       `json:"capacity"`
	Served   int       `json:"served"`
	IdleFor  string    `json:"idleFor,omitempty"`
	LastUsed time.Time `json:"lastUsed"`
}

// FunctionStatus is a function's live state.
type FunctionStatus struct {
	Instances []InstanceStatus `json:"instances"`
	Starting  int              `json:"starting"`
	// Stopping counts instances being stopped.
	Stopping int `json:"stopping"`
	Queued   int `json:"queued"`
	// Owner is the id of the controller that serves the function (cluster
	// mode): the instances and queue above are its view.
	Owner string `json:"owner,omitempty"`
}

// Function is how the API shows a function (GET, list, and the deploy
// response).
type Function struct {
	Name       string         `json:"name"`
	Version    int            `json:"version"`
	Spec       FunctionSpec   `json:"spec"`
	CodeDigest string         `json:"codeDigest"`
	CodeSize   int64          `json:"codeSize"`
	CreatedAt  time.Time      `json:"createdAt"`
	UpdatedAt  time.Time      `json:"updatedAt"`
	Isolation  string         `json:"isolation"`
	Status     FunctionStatus `json:"status"`
	// WorkingSet tells whether the hosts recorded the version's
	// cold-start working set (GET /v1/functions/{name} only).
	WorkingSet *WorkingSet `json:"workingSet,omitempty"`
	// Created and NewVersion are set on deploy responses only.
	Created    bool `json:"created,omitempty"`
	NewVersion bool `json:"newVersion,omitempty"`
}

// WorkingSet describes the recorded cold-start working set of a function
// version (prefetched by later cold starts on the hosts that have it).
type WorkingSet struct {
	// Summary reads "recorded, N KiB in M ranges", "not recorded" or
	// "off (prefetch: false)".
	Summary  string `json:"summary"`
	Recorded bool   `json:"recorded"`
	// Bytes, Ranges and Files are the largest record's among the hosts.
	Bytes  int64 `json:"bytes,omitempty"`
	Ranges int   `json:"ranges,omitempty"`
	Files  int   `json:"files,omitempty"`
	// Workers are the hosts that recorded it.
	Workers []string `json:"workers,omitempty"`
	// RecordedAt is when the newest record was made.
	RecordedAt *time.Time `json:"recordedAt,omitempty"`
	// Prefetches counts the cold starts that prefetched it (since each
	// host's worker started).
	Prefetches int64 `json:"prefetches"`
}

// FunctionList is the body of GET /v1/functions.
type FunctionList struct {
	Functions []Function `json:"functions"`
}

// Deleted answers a successful DELETE.
type Deleted struct {
	Deleted string `json:"deleted"`
}

// Recycled answers DELETE /v1/functions/{name}/instances.
type Recycled struct {
	Stopped          int `json:"stopped"`
	StoppingWhenIdle int `json:"stoppingWhenIdle"`
}

// Headers of an invocation's response (POST /v1/functions/{name}/invoke and
// function URLs). A function cannot set or overwrite them.
const (
	HeaderInvocationID    = "Baton-Invocation-Id"
	HeaderColdStart       = "Baton-Cold-Start"
	HeaderFunctionVersion = "Baton-Function-Version"
	HeaderInstanceID      = "Baton-Instance-Id"
	// HeaderFunctionError is "Unhandled" when the function returned an
	// error.
	HeaderFunctionError = "Baton-Function-Error"
	// HeaderPrefix starts every platform header.
	HeaderPrefix = "Baton-"
	// HeaderForwardedBy names the controller that sent a request on to
	// the controller owning its function (cluster mode).
	HeaderForwardedBy = "Baton-Forwarded-By"
	// HeaderInvocationType "Event" makes an invocation asynchronous (also
	// accepted as AWS's X-Amz-Invocation-Type); "RequestResponse", the
	// default, is synchronous.
	HeaderInvocationType    = "Baton-Invocation-Type"
	HeaderAmzInvocationType = "X-Amz-Invocation-Type"
	// HeaderIdempotencyKey makes a repeated asynchronous submission within
	// the dedup window return the first invocation's id.
	HeaderIdempotencyKey = "Baton-Idempotency-Key"
)

// Invocation types.
const (
	InvocationTypeEvent           = "Event"
	InvocationTypeRequestResponse = "RequestResponse"
)

// AsyncAccepted answers an asynchronous invocation (202): the event is
// stored durably.
type AsyncAccepted struct {
	ID string `json:"id"`
	// Duplicate: the idempotency key was seen within the window; ID is the
	// first invocation's and nothing new was stored.
	Duplicate bool `json:"duplicate,omitempty"`
}

// AsyncInvocation is the state of an asynchronous invocation
// (GET /v1/invocations/{id}).
type AsyncInvocation struct {
	ID       string `json:"id"`
	Function string `json:"function"`
	// State is queued, running, succeeded, failed, dead-lettered or
	// expired.
	State           string         `json:"state"`
	Created         time.Time      `json:"created"`
	Updated         time.Time      `json:"updated"`
	Attempts        []AsyncAttempt `json:"attempts"`
	Result          []byte         `json:"result,omitempty"`
	ResultTruncated bool           `json:"resultTruncated,omitempty"`
	Destination     string         `json:"destination,omitempty"`
	Reason          string         `json:"reason,omitempty"`
}

// AsyncAttempt is one run of an asynchronous event.
type AsyncAttempt struct {
	Number      int       `json:"number"`
	Start       time.Time `json:"start"`
	End         time.Time `json:"end,omitzero"`
	Error       string    `json:"error,omitempty"`
	ErrorType   string    `json:"errorType,omitempty"`
	Interrupted bool      `json:"interrupted,omitempty"`
}

// DeadLetter is one entry of a dead-letter queue (GET /v1/dlq/{name}).
type DeadLetter struct {
	Seq       uint64          `json:"seq"`
	ID        string          `json:"id"`
	Function  string          `json:"function"`
	Condition string          `json:"condition"`
	Time      time.Time       `json:"time"`
	Record    json.RawMessage `json:"record"`
}

// DeadLetterList is a dead-letter queue's entries, oldest first.
type DeadLetterList struct {
	Entries []DeadLetter `json:"entries"`
}

// Redriven answers POST /v1/dlq/{name}/redrive: the new invocations.
type Redriven struct {
	IDs []string `json:"ids"`
}

// FunctionError is an error a function reported, in Lambda's shape.
type FunctionError struct {
	Message    string   `json:"errorMessage"`
	Type       string   `json:"errorType"`
	StackTrace []string `json:"stackTrace,omitempty"`
}

// Status values of an invocation record.
const (
	StatusSuccess       = "success"
	StatusFunctionError = "function-error"
	StatusTimeout       = "timeout"
	StatusCrash         = "crash"
	StatusTooLarge      = "response-too-large"
	StatusOutOfMemory   = "out-of-memory"
	StatusInitError     = "init-error"
	StatusFailed        = "failed"
	// StatusWorkerLost: the worker running the invocation was lost; the
	// function may or may not have run.
	StatusWorkerLost = "worker-lost"
)

// Invocation is the record of one invocation.
type Invocation struct {
	ID            string         `json:"id"`
	Function      string         `json:"function"`
	Version       int            `json:"version,omitempty"`
	Start         time.Time      `json:"start"`
	End           time.Time      `json:"end"`
	DurationMs    float64        `json:"durationMs"`
	WaitMs        float64        `json:"waitMs"`
	InitMs        float64        `json:"initMs,omitempty"`
	ExecMs        float64        `json:"execMs"`
	Cold          bool           `json:"cold"`
	Status        string         `json:"status"`
	Error         *FunctionError `json:"error,omitempty"`
	Instance      string         `json:"instance,omitempty"`
	Logs          string         `json:"logs,omitempty"`
	LogsTruncated bool           `json:"logsTruncated,omitempty"`
	ResponseBytes int            `json:"responseBytes"`
	RequestBytes  int            `json:"requestBytes"`
	// Attempt is set on the attempts of an asynchronous invocation
	// (1-based); they share the invocation's id.
	Attempt int `json:"attempt,omitempty"`
}

// InvocationList is the body of GET /v1/invocations, newest first.
type InvocationList struct {
	Invocations []Invocation `json:"invocations"`
}

// Image is a root filesystem image.
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
	// Size is the total size of the image's layer files in bytes.
	Size   int64  `json:"size"`
	Source string `json:"source,omitempty"`
}

// ImageList is the body of GET /v1/images.
type ImageList struct {
	Images []Image `json:"images"`
}

// Health is the body of GET /healthz. The limits let a client refuse a
// request that is too large before sending it.
type Health struct {
	Status    string `json:"status"`
	Isolation string `json:"isolation"`
	// MaxPayloadBytes is the largest invocation request body.
	MaxPayloadBytes int64 `json:"maxPayloadBytes,omitempty"`
	// MaxDeployBytes is the largest deploy request (JSON with the
	// base64-encoded code).
	MaxDeployBytes int64 `json:"maxDeployBytes,omitempty"`
}

// Error is the body of every error response.
type Error struct {
	// Code is stable and machine-readable (the Code* constants).
	Code    string `json:"code"`
	Message string `json:"message"`
	// Function errors carry the function's own error fields.
	ErrorMessage string   `json:"errorMessage,omitempty"`
	ErrorType    string   `json:"errorType,omitempty"`
	StackTrace   []string `json:"stackTrace,omitempty"`
	InvocationID string   `json:"invocationId,omitempty"`
}

// Roles a node can have; `baton server` is one node with both.
const (
	RoleController = "controller"
	RoleWorker     = "worker"
)

// Node states.
const (
	NodeReady    = "ready"
	NodeDraining = "draining"
)

// Node is a live member of the cluster, as of its last heartbeat.
type Node struct {
	ID    string   `json:"id"`
	Roles []string `json:"roles"`
	// Address is where other nodes reach it.
	Address string `json:"address"`
	State   string `json:"state"`
	// Capacity is what a worker offers to instances, Reserved what its
	// live instances were promised (zero on controller-only nodes).
	Capacity      Resources `json:"capacity"`
	Reserved      Resources `json:"reserved"`
	Instances     int       `json:"instances"`
	Sandboxes     int       `json:"sandboxes"`
	Started       time.Time `json:"started"`
	LastHeartbeat time.Time `json:"lastHeartbeat"`
}

// Resources are amounts of host resources.
type Resources struct {
	MemoryMB int `json:"memoryMB"`
	// MilliCPUs is CPU in thousandths of a core.
	MilliCPUs int `json:"milliCPUs"`
}

// NodeList is the body of GET /v1/nodes, sorted by id.
type NodeList struct {
	Nodes []Node `json:"nodes"`
}

// TriggerRequest creates a trigger (POST /v1/triggers): a schedule with a
// fixed event, or a NATS subject whose messages become events.
type TriggerRequest struct {
	Function string `json:"function"`
	// Schedule is "rate(N unit)" or "cron(min hour dom month dow year)"
	// (EventBridge's forms, UTC; "rate(N seconds)" too).
	Schedule string          `json:"schedule,omitempty"`
	Event    json.RawMessage `json:"event,omitempty"`
	// NATSSubject (wildcards allowed) on the cluster's NATS, or on NATS
	// when set: each message becomes an event {"subject", "data"}.
	NATSSubject string `json:"natsSubject,omitempty"`
	// NATS is an external NATS server to take NATSSubject's messages from
	// (absent: Baton's own).
	NATS *ExternalNATS `json:"nats,omitempty"`
}

// ExternalNATS is a NATS server (with JetStream) outside Baton that a
// trigger takes messages from, through a durable consumer of its own.
type ExternalNATS struct {
	// URL is nats://host:port or tls://host:port, several comma-separated
	// (servers of one cluster). Credentials in a URL (nats://u:p@host)
	// count as User and Password.
	URL string `json:"url"`
	// User and Password log in with a password; Creds is the content of a
	// .creds file (a user JWT and its nkey seed). At most one of the two.
	// They are stored with the trigger and never listed.
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
	Creds    string `json:"creds,omitempty"`
	// Stream names an existing stream there that captures the subject;
	// Baton adds a durable consumer to it and deletes only that with the
	// trigger. Empty: Baton creates a stream of its own for the subject
	// (work-queue retention, deleted with the trigger).
	Stream string `json:"stream,omitempty"`
}

// ExternalNATSView is an external NATS source as listed: which
// credentials are stored, never their content.
type ExternalNATSView struct {
	URL  string `json:"url"`
	User string `json:"user,omitempty"`
	// Auth is "password", "creds" or "none".
	Auth string `json:"auth"`
	// Stream and Consumer are what the trigger consumes on that server;
	// StreamOwned says Baton created the stream (and deletes it with the
	// trigger).
	Stream      string `json:"stream"`
	StreamOwned bool   `json:"streamOwned"`
	Consumer    string `json:"consumer"`
}

// MissedTicks is a run of consecutive ticks of a schedule that passed
// while no controller could fire them (an outage): reported, never fired
// late.
type MissedTicks struct {
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
	Count int64     `json:"count"`
	// Noticed is when a controller found them missed.
	Noticed time.Time `json:"noticed"`
}

// Trigger is a stored trigger and what it did.
type Trigger struct {
	ID          string          `json:"id"`
	Function    string          `json:"function"`
	Kind        string          `json:"kind"`
	Schedule    string          `json:"schedule,omitempty"`
	Event       json.RawMessage `json:"event,omitempty"`
	NATSSubject string          `json:"natsSubject,omitempty"`
	// NATS is the external NATS server of a NATS trigger (absent: Baton's).
	NATS    *ExternalNATSView `json:"nats,omitempty"`
	Created time.Time         `json:"created"`
	// LastTick is the last tick fired or missed; Missed counts ticks that
	// passed while no controller could fire them, and MissedTicks says
	// when (the latest runs, oldest first; Missed counts them all).
	LastTick    time.Time     `json:"lastTick,omitzero"`
	Fired       int64         `json:"fired"`
	Missed      int64         `json:"missed"`
	LastMissed  time.Time     `json:"lastMissed,omitzero"`
	MissedTicks []MissedTicks `json:"missedTicks,omitempty"`
	LastError   string        `json:"lastError,omitempty"`
}

// TriggerList answers GET /v1/triggers.
type TriggerList struct {
	Triggers []Trigger `json:"triggers"`
}

// Workflow is one deployed workflow (PUT /v1/workflows/{name} takes its
// Amazon States Language definition, JSON or YAML, as the body).
type Workflow struct {
	Name       string          `json:"name"`
	Version    int             `json:"version"`
	Definition json.RawMessage `json:"definition"`
	Created    time.Time       `json:"created"`
	Updated    time.Time       `json:"updated"`
}

// WorkflowList answers GET /v1/workflows.
type WorkflowList struct {
	Workflows []Workflow `json:"workflows"`
}

// Execution statuses.
const (
	ExecutionRunning   = "RUNNING"
	ExecutionSucceeded = "SUCCEEDED"
	ExecutionFailed    = "FAILED"
)

// Execution is one execution of a workflow (POST
// /v1/workflows/{name}/executions starts one; GET /v1/executions/{id}
// describes it with its history).
type Execution struct {
	ID       string          `json:"id"`
	Workflow string          `json:"workflow"`
	Version  int             `json:"version"`
	Status   string          `json:"status"`
	Input    json.RawMessage `json:"input,omitempty"`
	Output   json.RawMessage `json:"output,omitempty"`
	Error    string          `json:"error,omitempty"`
	Cause    string          `json:"cause,omitempty"`
	Started  time.Time       `json:"started"`
	Stopped  time.Time       `json:"stopped,omitzero"`
	// Steps counts the top-level states finished; ResumeAt is the next
	// one while it runs.
	Steps    int    `json:"steps"`
	ResumeAt string `json:"resumeAt,omitempty"`
	// Runner is the controller (or server) driving it; Epoch counts the
	// times another runner took it over after its runner was lost.
	Runner string `json:"runner,omitempty"`
	Epoch  int    `json:"epoch,omitempty"`
	// Existing: a start repeated with the same idempotency key found this
	// execution instead of starting another.
	Existing bool             `json:"existing,omitempty"`
	History  []ExecutionEvent `json:"history,omitempty"`
}

// ExecutionEvent is one entry of an execution's history.
type ExecutionEvent struct {
	Kind    string    `json:"kind"`
	State   string    `json:"state,omitempty"`
	Path    string    `json:"path,omitempty"`
	Time    time.Time `json:"time"`
	Attempt int       `json:"attempt,omitempty"`
	Millis  float64   `json:"millis,omitempty"`
	// Host is the worker a task ran on; Bus is how its event got there:
	// "local" or "global".
	Host   string `json:"host,omitempty"`
	Bus    string `json:"bus,omitempty"`
	Error  string `json:"error,omitempty"`
	Cause  string `json:"cause,omitempty"`
	Runner string `json:"runner,omitempty"`
}

// ExecutionList answers GET /v1/workflows/{name}/executions.
type ExecutionList struct {
	Executions []Execution `json:"executions"`
}
