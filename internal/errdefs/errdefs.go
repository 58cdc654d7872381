// Package errdefs classifies Baton's errors in one place. A package defines
// its sentinel errors with a Class (errdefs.New) and wraps them with
// context as usual (fmt.Errorf("...: %w", err)); the API maps a class to an
// HTTP status, and the control plane maps it to an invocation record's
// status, here and nowhere else.
package errdefs

import (
	"errors"
	"net/http"
)

// Class says what kind of failure an error is, from the caller's side.
type Class string

const (
	// Invalid: the request is wrong; retrying it unchanged fails again.
	Invalid Class = "invalid"
	// NotFound: what the request names does not exist.
	NotFound Class = "not-found"
	// Conflict: the request lost a race with another change, or the thing
	// is in use.
	Conflict Class = "conflict"
	// TooLarge: the request or something it carries is over a limit.
	TooLarge Class = "too-large"
	// Overloaded: Baton refused the work to protect itself; retry later.
	Overloaded Class = "overloaded"
	// Unavailable: something Baton needs is not there now (no instance
	// could start, shutting down, a worker is unreachable).
	Unavailable Class = "unavailable"
	// Timeout: the work did not finish within its deadline.
	Timeout Class = "timeout"
	// FunctionFailed: the function's code failed (init error, crash,
	// out of memory, a response that is not valid).
	FunctionFailed Class = "function-failed"
	// NotImplemented: this server cannot do that (e.g. no image store).
	NotImplemented Class = "not-implemented"
	// Internal: a fault of Baton itself.
	Internal Class = "internal"
)

// Error is a classified sentinel error. Code is the stable,
// machine-readable name clients see in the API's error body.
type Error struct {
	Class Class
	Code  string
	Msg   string
}

// New returns a sentinel error of class with an API code.
func New(class Class, code, msg string) *Error {
	return &Error{Class: class, Code: code, Msg: msg}
}

func (e *Error) Error() string { return e.Msg }

// classified is implemented by errors that know their class (Error, and
// error types of other packages such as the worker API's failures).
type classified interface {
	ErrorClass() (Class, string)
}

// ErrorClass implements classified.
func (e *Error) ErrorClass() (Class, string) { return e.Class, e.Code }

// Classify returns the class and API code of the first classified error in
// err's chain; an unclassified error is Internal.
func Classify(err error) (Class, string) {
	if err == nil {
		return "", ""
	}
	var c classified
	if errors.As(err, &c) {
		return c.ErrorClass()
	}
	return Internal, "internal"
}

// Is reports whether err is of class.
func Is(err error, class Class) bool {
	c, _ := Classify(err)
	return err != nil && c == class
}

// HTTPStatus is the status the API answers for an error of class.
func HTTPStatus(class Class) int {
	switch class {
	case Invalid:
		return http.StatusBadRequest
	case NotFound:
		return http.StatusNotFound
	case Conflict:
		return http.StatusConflict
	case TooLarge:
		return http.StatusRequestEntityTooLarge
	case Overloaded:
		return http.StatusTooManyRequests
	case Unavailable:
		return http.StatusServiceUnavailable
	case Timeout:
		return http.StatusGatewayTimeout
	case FunctionFailed:
		return http.StatusBadGateway
	case NotImplemented:
		return http.StatusNotImplemented
	default:
		return http.StatusInternalServerError
	}
}
