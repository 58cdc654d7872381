package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/workerapi"
)

// apiError is an error the API itself found in a request.
func apiError(class errdefs.Class, code, msg string) error { return errdefs.New(class, code, msg) }

// functionFailure is an invocation that ended in an error of the function
// or of its instance; it carries what the error body shows of it.
type functionFailure struct {
	name, id string
	// fe is set when the function returned an error.
	fe  *workerapi.FunctionError
	err error
}

func (f *functionFailure) Error() string {
	if f.fe != nil {
		return fmt.Sprintf("function %s failed: %s: %s", f.name, f.fe.Type, f.fe.Message)
	}
	return fmt.Sprintf("function %s: %v", f.name, f.err)
}

func (f *functionFailure) Unwrap() error { return f.err }

// retryAfter is implemented by errors that know when a retry may succeed.
type retryAfter interface{ RetryAfter() time.Duration }

// writeErr answers err as an error response: the one place where errors
// become HTTP statuses, codes and bodies.
func (s *Server) writeErr(w http.ResponseWriter, err error) {
	body := apiv1.Error{Message: err.Error()}
	var class errdefs.Class
	class, body.Code = errdefs.Classify(err)
	var ff *functionFailure
	if errors.As(err, &ff) {
		body.InvocationID = ff.id
		class, body.Code = s.classifyFailure(ff, &body)
		if ff.fe != nil {
			w.Header().Set(apiv1.HeaderFunctionError, "Unhandled")
		}
	}
	if class == errdefs.Internal {
		s.log.Error("api", "err", err)
	}
	switch class {
	case errdefs.Overloaded, errdefs.Unavailable:
		after := time.Second
		var ra retryAfter
		if errors.As(err, &ra) {
			after = ra.RetryAfter()
		} else if body.Code == apiv1.CodeShuttingDown {
			after = 5 * time.Second
		}
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int((after+time.Second-1)/time.Second))))
	}
	writeJSON(w, errdefs.HTTPStatus(class), body)
}

// classifyFailure fills the function's own error fields and says what
// kind of failure it was.
func (s *Server) classifyFailure(ff *functionFailure, body *apiv1.Error) (errdefs.Class, string) {
	var failure *workerapi.Failure
	var initErr *workerapi.InitError
	switch {
	case ff.fe != nil:
		body.ErrorMessage, body.ErrorType, body.StackTrace = ff.fe.Message, ff.fe.Type, ff.fe.StackTrace
		return errdefs.FunctionFailed, apiv1.CodeFunctionError
	case errors.As(ff.err, &failure):
		body.Message = fmt.Sprintf("function %s: %s", ff.name, failure.Message)
		body.ErrorType, body.ErrorMessage = "Baton."+string(failure.Kind), failure.Message
		if failure.Kind == workerapi.FailureTimeout {
			return errdefs.Timeout, string(failure.Kind)
		}
		return errdefs.FunctionFailed, string(failure.Kind)
	case errors.As(ff.err, &initErr):
		body.Message = fmt.Sprintf("function %s failed to initialise: %s: %s", ff.name, initErr.Err.Type, initErr.Err.Message)
		body.ErrorType, body.ErrorMessage, body.StackTrace = initErr.Err.Type, initErr.Err.Message, initErr.Err.StackTrace
		return errdefs.FunctionFailed, apiv1.CodeInitError
	}
	return errdefs.Classify(ff.err)
}
