package asl

import (
	"math"
	"slices"
	"time"
)

// ErrorMatches says whether an ErrorEquals list catches the error name:
// by name, States.ALL for any error, States.TaskFailed for any error but
// States.Timeout.
func ErrorMatches(names []string, errorName string) bool {
	for _, n := range names {
		switch {
		case n == errorName, n == ErrorAll:
			return true
		case n == ErrorTaskFailed && errorName != ErrorTimeout:
			return true
		}
	}
	return false
}

// RetrierFor returns the index of the first retrier of the state that
// catches errorName (-1: none does).
func (st *State) RetrierFor(errorName string) int {
	return slices.IndexFunc(st.Retry, func(r Retrier) bool { return ErrorMatches(r.ErrorEquals, errorName) })
}

// Delay is the wait before the retry after retried earlier retries by
// this retrier; ok is false when its MaxAttempts are used up. Defaults as
// in ASL: IntervalSeconds 1, MaxAttempts 3, BackoffRate 2.0.
func (r Retrier) Delay(retried int) (time.Duration, bool) {
	maxAttempts, interval, rate := 3, 1, 2.0
	if r.MaxAttempts != nil {
		maxAttempts = *r.MaxAttempts
	}
	if r.IntervalSeconds != nil {
		interval = *r.IntervalSeconds
	}
	if r.BackoffRate != nil {
		rate = *r.BackoffRate
	}
	if retried >= maxAttempts {
		return 0, false
	}
	secs := float64(interval) * math.Pow(rate, float64(retried))
	if r.MaxDelaySeconds != nil {
		secs = math.Min(secs, float64(*r.MaxDelaySeconds))
	}
	// ASL caps a retry's wait at a year; a float this large would overflow.
	secs = math.Min(secs, 365*24*3600)
	return time.Duration(secs * float64(time.Second)), true
}

// CatcherFor returns the first catcher of the state that catches
// errorName.
func (st *State) CatcherFor(errorName string) (Catcher, bool) {
	i := slices.IndexFunc(st.Catch, func(c Catcher) bool { return ErrorMatches(c.ErrorEquals, errorName) })
	if i < 0 {
		return Catcher{}, false
	}
	return st.Catch[i], true
}
