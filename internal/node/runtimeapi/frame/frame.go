// Package frame is the wire format of the Runtime API's socket transport:
// the invocation loop of Baton's own runtime clients over a unix socket,
// without HTTP (package runtimeapi serves it; the clients in
// internal/runtimes speak it).
//
// A connection carries frames in both directions. Every frame is
//
//	length  uint32, big-endian: the bytes that follow (kind and body), at least 1
//	kind    uint8
//	body    length-1 bytes
//
// Inside bodies, str is a uint32 big-endian byte count followed by that
// many bytes (UTF-8 text or JSON); a body's last field, the payload, has no
// count and runs to the end of the frame.
//
// From the runtime client:
//
//	0x01 Next      (empty)                         ask for one event
//	0x02 Response  str request id, payload         the event's result
//	0x03 Error     str request id, str error type, the event's error: Lambda's
//	               error document (JSON)           {"errorMessage","errorType","stackTrace"}
//
// From the server:
//
//	0x81 Event     int64 deadline (Unix ms, big-endian), str request id,
//	               str function ARN, str trace id, str client context (JSON
//	               or empty), str Cognito identity (JSON or empty), payload
//	0x82 Rejected  uint16 status (the HTTP status the Runtime API would
//	               answer: 400, 413), JSON {"errorMessage","errorType"}
//
// How a connection is used (one event at a time per connection, so a
// runtime serving N events at once opens N connections) is the server's
// to say; see package runtimeapi.
package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Kind is a frame's type.
type Kind byte

// Frame kinds; see the package comment.
const (
	Next     Kind = 0x01
	Response Kind = 0x02
	Error    Kind = 0x03
	Event    Kind = 0x81
	Rejected Kind = 0x82
)

func (k Kind) String() string {
	switch k {
	case Next:
		return "Next"
	case Response:
		return "Response"
	case Error:
		return "Error"
	case Event:
		return "Event"
	case Rejected:
		return "Rejected"
	}
	return fmt.Sprintf("kind 0x%02x", byte(k))
}

// HeaderLen is the size of a frame's length and kind.
const HeaderLen = 5

// ErrMalformed marks a frame whose header or fields do not add up.
var ErrMalformed = errors.New("malformed frame")

// ReadHeader reads a frame's header from r and returns its kind and the
// length of its body. It returns io.EOF only when r ends before the first
// byte of the header.
func ReadHeader(r io.Reader) (Kind, int64, error) {
	var h [HeaderLen]byte
	// The length alone first: a zero length is an error at once, not a
	// wait for a kind byte that may never come.
	if _, err := io.ReadFull(r, h[:4]); err != nil {
		return 0, 0, err
	}
	n := binary.BigEndian.Uint32(h[:4])
	if n == 0 {
		return 0, 0, fmt.Errorf("%w: length 0 leaves no room for the kind", ErrMalformed)
	}
	if _, err := io.ReadFull(r, h[4:]); err != nil {
		return 0, 0, noEOF(err)
	}
	return Kind(h[4]), int64(n) - 1, nil
}

// noEOF turns io.EOF inside a frame into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// AppendHeader appends the header of a frame of kind with a body of
// bodyLen bytes.
func AppendHeader(dst []byte, kind Kind, bodyLen int) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(bodyLen+1))
	return append(dst, byte(kind))
}

// EventFields are an Event's fields before its payload.
type EventFields struct {
	RequestID       string
	DeadlineMs      int64
	FunctionARN     string
	TraceID         string
	ClientContext   []byte
	CognitoIdentity []byte
}

func (f *EventFields) size() int {
	return 8 + 5*4 + len(f.RequestID) + len(f.FunctionARN) + len(f.TraceID) + len(f.ClientContext) + len(f.CognitoIdentity)
}

// AppendEventHead appends an Event frame up to its payload, which the
// caller sends right after (so that a large payload need not be copied).
func AppendEventHead(dst []byte, f *EventFields, payloadLen int) []byte {
	dst = AppendHeader(dst, Event, f.size()+payloadLen)
	dst = binary.BigEndian.AppendUint64(dst, uint64(f.DeadlineMs))
	dst = appendStr(dst, f.RequestID)
	dst = appendStr(dst, f.FunctionARN)
	dst = appendStr(dst, f.TraceID)
	dst = appendStr(dst, string(f.ClientContext))
	return appendStr(dst, string(f.CognitoIdentity))
}

// ParseEvent splits an Event's body. The returned slices alias body.
func ParseEvent(body []byte) (EventFields, []byte, error) {
	var f EventFields
	if len(body) < 8 {
		return f, nil, fmt.Errorf("%w: event shorter than its deadline", ErrMalformed)
	}
	f.DeadlineMs = int64(binary.BigEndian.Uint64(body))
	rest := body[8:]
	var id, arn, trace []byte
	var err error
	for _, p := range []*[]byte{&id, &arn, &trace, &f.ClientContext, &f.CognitoIdentity} {
		if *p, rest, err = cutStr(rest); err != nil {
			return f, nil, fmt.Errorf("event: %w", err)
		}
	}
	f.RequestID, f.FunctionARN, f.TraceID = string(id), string(arn), string(trace)
	return f, rest, nil
}

// AppendResponse appends a whole Response frame.
func AppendResponse(dst []byte, requestID string, payload []byte) []byte {
	dst = AppendHeader(dst, Response, 4+len(requestID)+len(payload))
	dst = appendStr(dst, requestID)
	return append(dst, payload...)
}

// ParseResponse splits a Response's body into its request id and payload
// (which aliases body).
func ParseResponse(body []byte) (string, []byte, error) {
	id, rest, err := cutStr(body)
	if err != nil {
		return "", nil, fmt.Errorf("response: %w", err)
	}
	return string(id), rest, nil
}

// AppendError appends a whole Error frame.
func AppendError(dst []byte, requestID, errorType string, doc []byte) []byte {
	dst = AppendHeader(dst, Error, 8+len(requestID)+len(errorType)+len(doc))
	dst = appendStr(dst, requestID)
	dst = appendStr(dst, errorType)
	return append(dst, doc...)
}

// ParseError splits an Error's body into its request id, error type and
// error document (which aliases body).
func ParseError(body []byte) (requestID, errorType string, doc []byte, err error) {
	id, rest, err := cutStr(body)
	if err != nil {
		return "", "", nil, fmt.Errorf("error: %w", err)
	}
	typ, rest, err := cutStr(rest)
	if err != nil {
		return "", "", nil, fmt.Errorf("error: %w", err)
	}
	return string(id), string(typ), rest, nil
}

// AppendRejected appends a whole Rejected frame.
func AppendRejected(dst []byte, status uint16, doc []byte) []byte {
	dst = AppendHeader(dst, Rejected, 2+len(doc))
	dst = binary.BigEndian.AppendUint16(dst, status)
	return append(dst, doc...)
}

// ParseRejected splits a Rejected's body into its status and document.
func ParseRejected(body []byte) (int, []byte, error) {
	if len(body) < 2 {
		return 0, nil, fmt.Errorf("%w: rejection shorter than its status", ErrMalformed)
	}
	return int(binary.BigEndian.Uint16(body)), body[2:], nil
}

// AppendNext appends a Next frame.
func AppendNext(dst []byte) []byte { return AppendHeader(dst, Next, 0) }

func appendStr(dst []byte, s string) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(s)))
	return append(dst, s...)
}

// cutStr takes one str field off the front of b.
func cutStr(b []byte) (field, rest []byte, err error) {
	if len(b) < 4 {
		return nil, nil, fmt.Errorf("%w: field count cut short", ErrMalformed)
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return nil, nil, fmt.Errorf("%w: field of %d bytes in the %d left", ErrMalformed, n, len(b)-4)
	}
	return b[4 : 4+n], b[4+n:], nil
}
