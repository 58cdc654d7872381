package runtimes_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/node/runtimeapi"
)

// serveSocket serves s's socket transport on a fresh unix socket until the
// test ends, and returns its path.
func serveSocket(t *testing.T, s *runtimeapi.Server) string {
	t.Helper()
	// A short path: sun_path holds 108 bytes, which TempDir may exceed.
	dir, err := os.MkdirTemp("", "rtsock")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.ServeSocket(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("serve socket: %v", err)
		}
		os.RemoveAll(dir)
	})
	return path
}

// Baton's Python and Node runtime clients against the real Runtime API
// server: given its socket, they run every invocation over it (none over
// HTTP), with the event's fields, errors, and results the server refuses
// (too large, in one frame it reads and in one it will not) failing their
// invocation while the client goes on serving.
func TestClientsOverSocket(t *testing.T) {
	for _, c := range []struct{ interp, sub, errType string }{
		{"python3", "python", "ValueError"},
		{"node", "node", "Error"},
	} {
		t.Run(c.interp, func(t *testing.T) {
			const limit = 4096
			s, addr := serveEndpoint(t, runtimeapi.Options{MaxResponseBytes: limit})
			path := serveSocket(t, s)
			out := startClient(t, c.interp, c.sub, "probe.handler",
				"AWS_LAMBDA_RUNTIME_API="+addr, runtimeapi.SocketEnv+"="+path)
			select {
			case <-s.Ready():
			case <-time.After(time.Minute):
				t.Fatal("the runtime never asked for an event")
			}
			invoke := func(ev runtimeapi.Event) (runtimeapi.Result, error) {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				return s.Invoke(ctx, ev)
			}

			for i, payload := range []string{`{"n":1}`, `{"n":2,"s":"h\u00e9"}`} {
				res, err := invoke(runtimeapi.Event{
					Payload: []byte(payload), FunctionARN: "arn:aws:lambda:local:0:function:probe",
					ClientContext: []byte(`{"custom":{"k":"v"}}`), Deadline: time.Now().Add(time.Minute),
				})
				if err != nil || res.Error != nil {
					t.Fatalf("invocation %d: %v %v", i, err, res.Error)
				}
				var got struct {
					Event     json.RawMessage   `json:"event"`
					RequestID string            `json:"requestId"`
					ARN       string            `json:"arn"`
					Custom    map[string]string `json:"custom"`
					Remaining float64           `json:"remaining"`
				}
				if err := json.Unmarshal(res.Payload, &got); err != nil {
					t.Fatalf("response %s: %v", res.Payload, err)
				}
				var sent, echoed any
				_ = json.Unmarshal([]byte(payload), &sent)
				_ = json.Unmarshal(got.Event, &echoed)
				if sj, ej := mustJSON(sent), mustJSON(echoed); sj != ej || got.ARN != "arn:aws:lambda:local:0:function:probe" ||
					got.Custom["k"] != "v" || len(got.RequestID) != 36 || got.Remaining <= 0 {
					t.Errorf("invocation %d: %s", i, res.Payload)
				}
			}

			res, err := invoke(runtimeapi.Event{Payload: []byte(`{"fail":"asked to"}`), Deadline: time.Now().Add(time.Minute)})
			if err != nil || res.Error == nil || res.Error.Type != c.errType || res.Error.Message != "asked to" {
				t.Fatalf("failing invocation: %v %+v", err, res.Error)
			}

			// Over the limit in a frame the server reads (and refuses in
			// band), then in one it does not read (and drops the
			// connection for): the client reconnects either way.
			for _, size := range []int{limit + 100, limit + 200<<10} {
				_, err := invoke(runtimeapi.Event{Payload: []byte(`{"size":` + strconv.Itoa(size) + `}`), Deadline: time.Now().Add(time.Minute)})
				if !errors.Is(err, runtimeapi.ErrResponseTooLarge) {
					t.Fatalf("%d byte response: %v, want %v", size, err, runtimeapi.ErrResponseTooLarge)
				}
			}
			if !strings.Contains(out.String(), "status 413") {
				t.Errorf("the client did not log the refusal:\n%s", out.String())
			}
			res, err = invoke(runtimeapi.Event{Payload: []byte(`{"n":3}`), Deadline: time.Now().Add(time.Minute)})
			if err != nil || res.Error != nil {
				t.Fatalf("after the refusals: %v %v", err, res.Error)
			}
			if overHTTP, overSocket := s.Deliveries(); overHTTP != 0 || overSocket != 6 {
				t.Errorf("events delivered over HTTP %d, over the socket %d; want 0 and 6", overHTTP, overSocket)
			}
		})
	}
}

// A client given a socket it cannot reach says so and uses HTTP.
func TestClientsFallBackToHTTP(t *testing.T) {
	for _, c := range []struct{ interp, sub string }{{"python3", "python"}, {"node", "node"}} {
		t.Run(c.interp, func(t *testing.T) {
			s, addr := serveEndpoint(t, runtimeapi.Options{})
			missing := filepath.Join(t.TempDir(), "none")
			out := startClient(t, c.interp, c.sub, "probe.handler", "AWS_LAMBDA_RUNTIME_API="+addr, runtimeapi.SocketEnv+"="+missing)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := s.Invoke(ctx, runtimeapi.Event{Payload: []byte(`{"n":1}`)})
			if err != nil || res.Error != nil {
				t.Fatalf("invocation: %v %v", err, res.Error)
			}
			if overHTTP, overSocket := s.Deliveries(); overHTTP != 1 || overSocket != 0 {
				t.Errorf("events delivered over HTTP %d, over the socket %d; want 1 and 0", overHTTP, overSocket)
			}
			if !strings.Contains(out.String(), "using HTTP") {
				t.Errorf("the client did not say it fell back:\n%s", out.String())
			}
		})
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
