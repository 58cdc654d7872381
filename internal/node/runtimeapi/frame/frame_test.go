package frame

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	var stream []byte
	f := EventFields{RequestID: "r-1", DeadlineMs: 1700000000123, FunctionARN: "arn:aws:lambda:local:0:function:f",
		TraceID: "Root=1", ClientContext: []byte(`{"custom":{}}`)}
	stream = AppendEventHead(stream, &f, 7)
	stream = append(stream, `{"a":1}`...)
	stream = AppendResponse(stream, "r-1", []byte(`"ok"`))
	stream = AppendError(stream, "r-1", "ValueError", []byte(`{"errorMessage":"no"}`))
	stream = AppendRejected(stream, 413, []byte(`{}`))
	stream = AppendNext(stream)

	r := bufio.NewReader(bytes.NewReader(stream))
	read := func(want Kind) []byte {
		t.Helper()
		kind, n, err := ReadHeader(r)
		if err != nil || kind != want {
			t.Fatalf("header: %s, %v; want %s", kind, err, want)
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			t.Fatal(err)
		}
		return body
	}
	got, payload, err := ParseEvent(read(Event))
	if err != nil || string(payload) != `{"a":1}` || got.RequestID != f.RequestID || got.DeadlineMs != f.DeadlineMs ||
		got.FunctionARN != f.FunctionARN || got.TraceID != f.TraceID || string(got.ClientContext) != string(f.ClientContext) ||
		len(got.CognitoIdentity) != 0 {
		t.Errorf("event: %+v %q %v", got, payload, err)
	}
	if id, p, err := ParseResponse(read(Response)); id != "r-1" || string(p) != `"ok"` || err != nil {
		t.Errorf("response: %q %q %v", id, p, err)
	}
	if id, typ, doc, err := ParseError(read(Error)); id != "r-1" || typ != "ValueError" || string(doc) != `{"errorMessage":"no"}` || err != nil {
		t.Errorf("error: %q %q %q %v", id, typ, doc, err)
	}
	if status, doc, err := ParseRejected(read(Rejected)); status != 413 || string(doc) != `{}` || err != nil {
		t.Errorf("rejected: %d %q %v", status, doc, err)
	}
	if body := read(Next); len(body) != 0 {
		t.Errorf("next body %q", body)
	}
	if _, _, err := ReadHeader(r); err != io.EOF {
		t.Errorf("at the end: %v, want io.EOF", err)
	}
}

func TestReadHeaderErrors(t *testing.T) {
	if _, _, err := ReadHeader(bytes.NewReader([]byte{0, 0, 0, 0})); !errors.Is(err, ErrMalformed) {
		t.Errorf("zero length: %v", err)
	}
	if _, _, err := ReadHeader(bytes.NewReader([]byte{0, 0, 0, 1})); err != io.ErrUnexpectedEOF {
		t.Errorf("cut before the kind: %v", err)
	}
	if _, _, err := ReadHeader(bytes.NewReader([]byte{0, 0})); err != io.ErrUnexpectedEOF {
		t.Errorf("cut in the length: %v", err)
	}
}

// Parsing never panics and never returns fields beyond the body.
func FuzzParse(f *testing.F) {
	f.Add(AppendResponse(nil, "id", []byte("x"))[HeaderLen:])
	f.Add(AppendError(nil, "id", "T", []byte("{}"))[HeaderLen:])
	ev := EventFields{RequestID: "id"}
	f.Add(AppendEventHead(nil, &ev, 0)[HeaderLen:])
	f.Add([]byte{0, 0, 0, 9, 1})
	f.Fuzz(func(t *testing.T, body []byte) {
		_, _, _ = ParseEvent(body)
		_, _, _ = ParseResponse(body)
		_, _, _, _ = ParseError(body)
		_, _, _ = ParseRejected(body)
	})
}
