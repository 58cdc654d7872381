package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/internal/errdefs"
)

// decodeBody reads a JSON request body of at most limit bytes into v,
// strictly: no unknown fields, no duplicate keys (encoding/json would keep
// the last one silently), no trailing data. what names the body in errors.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, limit int64, what string, v any) error {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return apiError(errdefs.TooLarge, apiv1.CodeSpecTooLarge, fmt.Sprintf("%s request is larger than %d bytes", what, limit))
		}
		return apiError(errdefs.Invalid, apiv1.CodeBadBody, "could not read request body: "+err.Error())
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return apiError(errdefs.Invalid, apiv1.CodeMalformedJSON, what+" is not valid JSON: "+err.Error())
	}
	if dec.More() {
		return apiError(errdefs.Invalid, apiv1.CodeMalformedJSON, what+" has trailing data after the JSON object")
	}
	if key, ok := duplicateKey(data); ok {
		return apiError(errdefs.Invalid, apiv1.CodeDuplicateKey, fmt.Sprintf("%s has the key %q more than once", what, key))
	}
	return nil
}

// duplicateKey finds the first object key that appears twice in one
// object of data, which must be valid JSON. It scans the bytes instead of
// using json.Decoder.Token so that a large string (the base64 code of a
// deploy) is not copied.
func duplicateKey(data []byte) (string, bool) {
	type object struct {
		keys      map[string]bool
		expectKey bool
	}
	var stack []*object
	for i := 0; i < len(data); i++ {
		switch c := data[i]; c {
		case '{':
			stack = append(stack, &object{keys: map[string]bool{}, expectKey: true})
		case '[':
			stack = append(stack, nil)
		case '}', ']':
			stack = stack[:len(stack)-1]
		case ',':
			if n := len(stack); n > 0 && stack[n-1] != nil {
				stack[n-1].expectKey = true
			}
		case '"':
			end := stringEnd(data, i)
			if n := len(stack); n > 0 && stack[n-1] != nil && stack[n-1].expectKey {
				o := stack[n-1]
				o.expectKey = false
				var key string
				if bytes.IndexByte(data[i:end+1], '\\') < 0 {
					key = string(data[i+1 : end])
				} else if json.Unmarshal(data[i:end+1], &key) != nil {
					key = strings.Trim(string(data[i:end+1]), `"`)
				}
				if o.keys[key] {
					return key, true
				}
				o.keys[key] = true
			}
			i = end
		}
	}
	return "", false
}

// stringEnd returns the index of the quote closing the string that starts
// at data[start].
func stringEnd(data []byte, start int) int {
	for i := start + 1; i < len(data); i++ {
		switch data[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return len(data) - 1
}
