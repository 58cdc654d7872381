package records

import (
	"errors"

	"github.com/baton-faas/baton/internal/workerapi"
)

// SetOutcome derives the record's status from how the invocation ended:
// err is the invocation's error (nil when the function answered, with
// r.Error holding the error the function returned, if any). For failures
// it also fills the record's error and the logs the failure carries. This
// is the one place invocation outcomes become record statuses.
func (r *Record) SetOutcome(err error) {
	var failure *workerapi.Failure
	var initErr *workerapi.InitError
	switch {
	case err == nil && r.Error != nil:
		r.Status = StatusFunctionError
	case err == nil:
		r.Status = StatusSuccess
	case errors.As(err, &failure):
		r.Status = failureStatus(failure.Kind)
		r.Error = &workerapi.FunctionError{Type: "Baton." + string(failure.Kind), Message: failure.Message}
		r.Logs, r.LogsTruncated = string(failure.Logs), failure.LogsTruncated
	case errors.As(err, &initErr):
		r.Status = StatusInitError
		fe := initErr.Err
		r.Error = &fe
		r.Logs = string(initErr.Logs)
	default:
		r.Status = StatusFailed
		r.Error = &workerapi.FunctionError{Type: "Baton.Error", Message: err.Error()}
	}
}

func failureStatus(kind workerapi.FailureKind) string {
	switch kind {
	case workerapi.FailureTimeout:
		return StatusTimeout
	case workerapi.FailureTooLarge:
		return StatusTooLarge
	case workerapi.FailureOutOfMemory:
		return StatusOutOfMemory
	case workerapi.FailureWorkerLost:
		return StatusWorkerLost
	default:
		return StatusCrash
	}
}
