package runtimeapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"

	"github.com/baton-faas/baton/internal/workerapi"
)

// Function errors are workerapi.FunctionError, in the Lambda error format,
// bounded by its limits (workerapi.FunctionError.Bounded) as soon as they
// are read. Runtimes differ in what they send, so parsing is lenient.

// parseFunctionError never fails: whatever the body is, the result carries
// as much of it as can be understood. headerType is used when the body does
// not name a type.
func parseFunctionError(body []byte, headerType string) *workerapi.FunctionError {
	fe := &workerapi.FunctionError{}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err == nil {
		fe.Message = jsonText(fields["errorMessage"])
		fe.Type = jsonText(fields["errorType"])
		fe.StackTrace = parseStackTrace(fields["stackTrace"])
	} else {
		// Not a JSON object: some runtimes post plain text.
		fe.Message = strings.TrimSpace(string(body))
	}
	if fe.Type == "" {
		fe.Type = headerType
	}
	b := fe.Bounded()
	return &b
}

// trailerError builds the error aws-lambda-go reports in trailers when a
// streamed response fails midway: the type in one trailer and the
// base64-encoded JSON error in the other.
func trailerError(typ, encodedBody string) *workerapi.FunctionError {
	body, err := base64.StdEncoding.DecodeString(encodedBody)
	if err != nil {
		b := workerapi.FunctionError{Type: typ}.Bounded()
		return &b
	}
	return parseFunctionError(body, typ)
}

// jsonText returns a JSON string's value, "" for a missing or null value,
// and the compact JSON text of anything else.
func jsonText(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) == nil {
		return buf.String()
	}
	return string(raw)
}

func parseStackTrace(raw json.RawMessage) []string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var frames []json.RawMessage
	if json.Unmarshal(raw, &frames) != nil {
		// A single string or object instead of a list.
		return []string{jsonText(raw)}
	}
	out := make([]string, 0, len(frames))
	for _, f := range frames {
		out = append(out, jsonText(f))
	}
	return out
}
