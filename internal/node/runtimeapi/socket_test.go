package runtimeapi

import (
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/baton-faas/baton/internal/node/runtimeapi/frame"
)

// holdEvent invokes event id and receives it on a raw connection of its
// own, closed when the test ends.
func holdEvent(t *testing.T, s *Server, path, id string) (*rawSock, <-chan invokeResult) {
	t.Helper()
	r, err := dialSock(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.nc.Close() })
	ch := invokeAsync(t.Context(), s, Event{RequestID: id, Payload: []byte(`{}`)})
	if _, err := r.nc.Write(frame.AppendNext(nil)); err != nil {
		t.Fatal(err)
	}
	if kind, _, err := r.readFrame(); err != nil || kind != frame.Event {
		t.Fatalf("first frame: %s, %v", kind, err)
	}
	return r, ch
}

// A client that breaks the socket protocol is disconnected, and the event
// its connection held fails with a clear error at once: never a hang, and
// the server goes on serving other connections.
func TestSocketProtocolErrors(t *testing.T) {
	header := func(n uint32, kind frame.Kind) []byte {
		return append(binary.BigEndian.AppendUint32(nil, n), byte(kind))
	}
	tests := []struct {
		name string
		// send is what the client writes while it holds event "held".
		send func(id string) []byte
		want string // in the Invoke error
	}{
		{"zero length", func(string) []byte { return []byte{0, 0, 0, 0} }, "length 0"},
		{"unknown kind", func(string) []byte { return header(1, 0x7f) }, "unknown frame kind 0x7f"},
		{"server kind from the client", func(string) []byte { return header(1, frame.Event) }, "unknown frame Event"},
		{"next with a body", func(string) []byte { return append(header(3, frame.Next), 'h', 'i') }, "Next frame with a 2 byte body"},
		{"next before answering", func(string) []byte { return frame.AppendNext(nil) }, "Next before answering event held"},
		{"response for another event", func(string) []byte { return frame.AppendResponse(nil, "other", []byte(`{}`)) },
			`Response for request "other" while holding held`},
		{"id count beyond the frame", func(string) []byte {
			return append(header(1+4+2, frame.Response), 0, 0, 0, 9, 'h', 'e')
		}, "field of 9 bytes in the 2 left"},
		{"error without its type", func(id string) []byte {
			b := frame.AppendResponse(nil, id, nil)
			b[4] = byte(frame.Error)
			return b
		}, "field count cut short"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, path := startServerOn(t, overSocket, Options{})
			r, ch := holdEvent(t, s, path, "held")
			if _, err := r.nc.Write(tc.send("held")); err != nil {
				t.Fatal(err)
			}
			res := waitResult(t, ch)
			if !errors.Is(res.err, ErrProtocol) || !strings.Contains(res.err.Error(), tc.want) {
				t.Fatalf("Invoke: %v, want %v naming %q", res.err, ErrProtocol, tc.want)
			}
			if _, _, err := r.readFrame(); !errors.Is(err, io.EOF) {
				t.Errorf("after the protocol error the connection still reads: %v", err)
			}
			// Others are still served.
			c := newSockClient(t, s, path)
			next := invokeAsync(t.Context(), s, Event{RequestID: "next", Payload: []byte(`{}`)})
			respond(t, c, mustNext(t, c).id, `{"ok":true}`)
			if r := waitResult(t, next); r.err != nil || string(r.res.Payload) != `{"ok":true}` {
				t.Fatalf("next invocation: %s, %v", r.res.Payload, r.err)
			}
		})
	}
}

// Protocol errors without an event held drop the connection and fail
// nothing; a second Next while one waits is one of them.
func TestSocketProtocolErrorsWithoutEvent(t *testing.T) {
	for name, send := range map[string][]byte{
		"result without an event": frame.AppendResponse(nil, "nobody", []byte(`{}`)),
		"second next":             append(frame.AppendNext(nil), frame.AppendNext(nil)...),
		"garbage":                 []byte("GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\n\r\n"),
	} {
		t.Run(name, func(t *testing.T) {
			s, path := startServerOn(t, overSocket, Options{})
			r, err := dialSock(path)
			if err != nil {
				t.Fatal(err)
			}
			defer r.nc.Close()
			if _, err := r.nc.Write(send); err != nil {
				t.Fatal(err)
			}
			if _, _, err := r.readFrame(); !errors.Is(err, io.EOF) {
				t.Fatalf("connection not dropped: %v", err)
			}
			waitFor(t, s, "no poller left", func() bool { return len(s.waiters) == 0 && len(s.sockConns) == 0 })
			c := newSockClient(t, s, path)
			ch := invokeAsync(t.Context(), s, Event{RequestID: "after", Payload: []byte(`{}`)})
			respond(t, c, mustNext(t, c).id, `{}`)
			if r := waitResult(t, ch); r.err != nil {
				t.Fatal(r.err)
			}
		})
	}
}

// A result frame announcing more than the limit allows is not read: the
// event fails as too large, and the client is told why and dropped.
func TestSocketOversizedFrame(t *testing.T) {
	s, path := startServerOn(t, overSocket, Options{MaxResponseBytes: 1024})
	r, ch := holdEvent(t, s, path, "big")
	// Nearly 4 GiB announced, a few bytes sent.
	head := frame.AppendHeader(nil, frame.Response, 1<<32-2)
	if _, err := r.nc.Write(append(head, 0, 0, 0, 3, 'b', 'i', 'g')); err != nil {
		t.Fatal(err)
	}
	if res := waitResult(t, ch); !errors.Is(res.err, ErrResponseTooLarge) {
		t.Fatalf("Invoke: %v, want %v", res.err, ErrResponseTooLarge)
	}
	kind, body, err := r.readFrame()
	if err != nil || kind != frame.Rejected {
		t.Fatalf("answer: %s %q %v", kind, body, err)
	}
	if status, doc, _ := frame.ParseRejected(body); status != http.StatusRequestEntityTooLarge || !strings.Contains(string(doc), "RequestEntityTooLarge") {
		t.Errorf("rejection %d %s", status, doc)
	}
	if _, _, err := r.readFrame(); !errors.Is(err, io.EOF) {
		t.Errorf("connection not dropped: %v", err)
	}
}

// A client that goes away, even in the middle of a frame, fails nothing by
// itself: a runtime that died is reported by whoever watches its process
// (the node closes the server), as with HTTP.
func TestSocketClientLeavingMidFrame(t *testing.T) {
	s, path := startServerOn(t, overSocket, Options{})
	r, ch := holdEvent(t, s, path, "cut")
	whole := frame.AppendResponse(nil, "cut", []byte(`{"partial":true}`))
	if _, err := r.nc.Write(whole[:len(whole)-3]); err != nil {
		t.Fatal(err)
	}
	r.nc.Close()
	waitFor(t, s, "the connection to go", func() bool { return len(s.sockConns) == 0 })
	select {
	case res := <-ch:
		t.Fatalf("Invoke ended when the client left: %+v", res)
	default:
	}
	s.Close()
	if res := waitResult(t, ch); !errors.Is(res.err, ErrClosed) || errors.Is(res.err, ErrNotDelivered) {
		t.Fatalf("Invoke after Close: %v", res.err)
	}
}

// Connections beyond MaxConns wait, unserved, until one closes.
func TestSocketConnectionLimit(t *testing.T) {
	s, path := startServerOn(t, overSocket, Options{MaxConns: 1})
	var conns []*rawSock
	for range 2 {
		r, err := dialSock(path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.nc.Close()
		if _, err := r.nc.Write(frame.AppendNext(nil)); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, r)
	}
	waitFor(t, s, "one Next to be served", func() bool { return len(s.waiters) == 1 })
	s.mu.Lock()
	served := len(s.sockConns)
	s.mu.Unlock()
	if served != 1 {
		t.Fatalf("%d connections served, limit 1", served)
	}
	conns[0].nc.Close()
	ch := invokeAsync(t.Context(), s, Event{RequestID: "second", Payload: []byte(`{}`)})
	if kind, _, err := conns[1].readFrame(); err != nil || kind != frame.Event {
		t.Fatalf("second connection: %s, %v", kind, err)
	}
	if _, err := conns[1].nc.Write(frame.AppendResponse(nil, "second", []byte(`{}`))); err != nil {
		t.Fatal(err)
	}
	if r := waitResult(t, ch); r.err != nil {
		t.Fatal(r.err)
	}
}
