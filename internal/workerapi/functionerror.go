package workerapi

import "strings"

// Limits on what a function's error may carry. A worker applies them
// (Bounded) wherever it reads an error from function code (the Runtime
// API's /error and /init/error, a grain worker's import failure), so
// that a hostile function cannot make the records or the memory that
// keep its errors huge. Cut fields end with "… (truncated)"; a cut stack
// trace ends with a line saying so.
const (
	MaxErrorMessageBytes = 4 << 10
	MaxErrorTypeBytes    = 256
	// MaxStackTraceBytes bounds the stack trace's lines together.
	MaxStackTraceBytes = 16 << 10
)

// Error renders the error as "Type: Message".
func (e *FunctionError) Error() string {
	switch {
	case e.Type == "":
		return e.Message
	case e.Message == "":
		return e.Type
	}
	return e.Type + ": " + e.Message
}

// Bounded returns the error cut to the limits above.
func (e FunctionError) Bounded() FunctionError {
	out := FunctionError{Message: truncate(e.Message, MaxErrorMessageBytes), Type: truncate(e.Type, MaxErrorTypeBytes)}
	budget := MaxStackTraceBytes
	for _, line := range e.StackTrace {
		if budget <= 0 {
			out.StackTrace = append(out.StackTrace, "… stack trace truncated")
			break
		}
		line = truncate(line, budget)
		budget -= len(line)
		out.StackTrace = append(out.StackTrace, line)
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "… (truncated)"
}
