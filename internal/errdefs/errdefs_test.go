package errdefs

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
)

var (
	errGone  = New(NotFound, "function_not_found", "function not found")
	errLimit = New(TooLarge, "too_big", "over the limit")
	errBad   = New(Invalid, "bad", "bad request")
)

type kindError struct{}

func (kindError) Error() string               { return "a worker failure" }
func (kindError) ErrorClass() (Class, string) { return Unavailable, "worker_lost" }

func TestClassifyThroughWrapping(t *testing.T) {
	for _, tc := range []struct {
		err    error
		class  Class
		code   string
		status int
	}{
		{errGone, NotFound, "function_not_found", http.StatusNotFound},
		{fmt.Errorf("get fn: %w", errGone), NotFound, "function_not_found", http.StatusNotFound},
		// The first classified error of a joined chain wins: wrap the
		// specific cause first.
		{fmt.Errorf("%w: %w", errLimit, errBad), TooLarge, "too_big", http.StatusRequestEntityTooLarge},
		{fmt.Errorf("%w: %w", errBad, errLimit), Invalid, "bad", http.StatusBadRequest},
		// Types of other packages classify themselves.
		{fmt.Errorf("invoke: %w", kindError{}), Unavailable, "worker_lost", http.StatusServiceUnavailable},
		// Anything unclassified is Baton's own fault.
		{errors.New("disk on fire"), Internal, "internal", http.StatusInternalServerError},
	} {
		class, code := Classify(tc.err)
		if class != tc.class || code != tc.code {
			t.Errorf("Classify(%v) = %s/%s, want %s/%s", tc.err, class, code, tc.class, tc.code)
		}
		if got := HTTPStatus(class); got != tc.status {
			t.Errorf("HTTPStatus(%s) = %d, want %d", class, got, tc.status)
		}
		if !Is(tc.err, tc.class) {
			t.Errorf("Is(%v, %s) = false", tc.err, tc.class)
		}
	}
	if c, code := Classify(nil); c != "" || code != "" || Is(nil, Internal) {
		t.Errorf("nil classified as %q/%q", c, code)
	}
}

func TestEveryClassHasAStatus(t *testing.T) {
	want := map[Class]int{
		Invalid: 400, Unauthenticated: 401, NotFound: 404, Conflict: 409, TooLarge: 413, Overloaded: 429,
		Unavailable: 503, Timeout: 504, FunctionFailed: 502, NotImplemented: 501, Internal: 500,
	}
	for class, status := range want {
		if got := HTTPStatus(class); got != status {
			t.Errorf("HTTPStatus(%s) = %d, want %d", class, got, status)
		}
	}
}
