package router

import (
	"time"

	"github.com/baton-faas/baton/internal/errdefs"
)

// Errors of the router, classified for the API and the records.
var (
	ErrUnknownFunction = errdefs.New(errdefs.NotFound, "function_not_found", "function not found")
	ErrQueueFull       = errdefs.New(errdefs.Overloaded, "queue_full", "function queue is full")
	ErrQueueTimeout    = errdefs.New(errdefs.Unavailable, "no_instance", "no instance became available in time")
	ErrShuttingDown    = errdefs.New(errdefs.Unavailable, "shutting_down", "server is shutting down")
	ErrFunctionRemoved = errdefs.New(errdefs.NotFound, "function_not_found", "function was deleted while the request waited")
	// ErrStartFailed wraps a failure of the platform (not of the
	// function's code) to start an instance.
	ErrStartFailed = errdefs.New(errdefs.Unavailable, "start_failed", "could not start an instance")
	// ErrWorkerExists: AddWorker was given a worker ID the router has.
	ErrWorkerExists = errdefs.New(errdefs.Conflict, "worker_exists", "a worker with this id is already added")
)

// OverloadError refuses a request at once because the function's queue
// could not serve it within the queue timeout. It wraps ErrQueueFull
// (class Overloaded) and says when a retry has a chance.
type OverloadError struct {
	msg        string
	retryAfter time.Duration
}

func (e *OverloadError) Error() string { return e.msg }

// Unwrap makes errors.Is(err, ErrQueueFull) and errdefs.Classify work.
func (e *OverloadError) Unwrap() error { return ErrQueueFull }

// RetryAfter is how long the queue needs, at the observed service time,
// until a request like this one would be admitted (at least a second:
// HTTP's Retry-After counts whole seconds).
func (e *OverloadError) RetryAfter() time.Duration { return e.retryAfter }
