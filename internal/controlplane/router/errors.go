package router

import (
	"fmt"
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
	// ErrReleased: the function moved to another controller while the
	// request waited here; it was not run and may be sent to the new owner.
	ErrReleased = errdefs.New(errdefs.Unavailable, "ownership_moved", "the function moved to another controller while the request waited")
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

// admitLocked refuses a request that would have to wait in the queue
// longer than the queue timeout: its expected wait is the requests ahead
// of it times the observed service time, shared by the function's
// capacity at max scale. Before any service time is observed only the
// queue bound applies.
func (r *Router) admitLocked(st *fnState) error {
	ahead := len(st.queue)
	capacity := max(st.fn.Spec.MaxScale, 1) * max(st.fn.Spec.Concurrency, 1)
	perRequest := st.service / time.Duration(capacity)
	if ahead >= r.opts.QueueSize {
		// The queue moves one place per perRequest (a second if unknown).
		retry := time.Second
		if perRequest > 0 {
			retry = time.Duration(ahead-r.opts.QueueSize+1) * perRequest
		}
		return &OverloadError{
			msg:        fmt.Sprintf("%s: %d requests of %s are waiting", ErrQueueFull.Error(), ahead, st.name),
			retryAfter: roundUpSecond(retry),
		}
	}
	if perRequest <= 0 {
		return nil
	}
	wait := time.Duration(ahead+1) * perRequest
	if wait <= r.opts.QueueTimeout {
		return nil
	}
	return &OverloadError{
		msg: fmt.Sprintf("%s is overloaded: %d requests are waiting, which takes about %s at %s each on %d slots, more than the queue timeout of %s",
			st.name, ahead, wait.Round(time.Millisecond), st.service.Round(time.Millisecond), capacity, r.opts.QueueTimeout),
		retryAfter: roundUpSecond(wait - r.opts.QueueTimeout),
	}
}

func roundUpSecond(d time.Duration) time.Duration {
	return max(time.Second, (d+time.Second-1)/time.Second*time.Second)
}

// observeServiceLocked folds one invocation's slot time into the mean.
func (st *fnState) observeServiceLocked(d time.Duration) {
	if st.service == 0 {
		st.service = d
		return
	}
	// Weight 1/8: follows a change within tens of invocations without
	// jumping on one slow call.
	st.service += (d - st.service) / 8
}
