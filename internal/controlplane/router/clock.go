package router

import (
	"context"
	"errors"
	"time"
)

// Clock is the router's time source: its timestamps, queue timeouts,
// start timeouts, invocation deadlines and tick. Tests replace it with a
// fake clock they advance.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed; stop
	// prevents that if it has not happened yet.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

// errTimedOut is the cause of a context that withTimeout ended.
var errTimedOut = errors.New("timed out")

// withTimeout is context.WithTimeout on the router's clock; the context's
// cause is errTimedOut when the time ran out.
func (r *Router) withTimeout(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	stop := r.clock.AfterFunc(d, func() { cancel(errTimedOut) })
	return ctx, func() {
		stop()
		cancel(context.Canceled)
	}
}

// after returns a channel closed once d has passed on the router's clock,
// and a function that releases the timer.
func (r *Router) after(d time.Duration) (<-chan struct{}, func() bool) {
	ch := make(chan struct{})
	stop := r.clock.AfterFunc(d, func() { close(ch) })
	return ch, stop
}
