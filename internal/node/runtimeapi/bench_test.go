package runtimeapi

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/node/runtimeapi/frame"
)

// BenchmarkInvoke is one warm invocation through the Runtime API, Invoke
// to result, with an echoing runtime client in Go on each transport: the
// server's cost per invocation and the loop's round trips, without a
// language runtime's own.
//
//	go test -run '^$' -bench Invoke -benchmem ./internal/node/runtimeapi/
func BenchmarkInvoke(b *testing.B) {
	for _, tr := range transports {
		b.Run(string(tr), func(b *testing.B) {
			s := New(Options{})
			network, addr := "tcp", "127.0.0.1:0"
			if tr == overSocket {
				dir, err := os.MkdirTemp("", "rtbench")
				if err != nil {
					b.Fatal(err)
				}
				defer os.RemoveAll(dir)
				network, addr = "unix", filepath.Join(dir, "s")
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				b.Fatal(err)
			}
			served := make(chan error, 1)
			go func() {
				if tr == overSocket {
					served <- s.ServeSocket(ln)
				} else {
					served <- s.Serve(ln)
				}
			}()
			ctx, cancel := context.WithCancel(context.Background())
			clientDone := make(chan struct{})
			go func() {
				defer close(clientDone)
				if tr == overSocket {
					echoOverSocket(ctx, ln.Addr().String())
				} else {
					echoOverHTTP(ctx, ln.Addr().String())
				}
			}()
			<-s.Ready()
			payload := []byte(`{"hello":"world"}`)
			deadline := time.Now().Add(time.Hour)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				res, err := s.Invoke(ctx, Event{RequestID: "bench", Payload: payload, Deadline: deadline})
				if err != nil || !bytes.Equal(res.Payload, payload) {
					b.Fatalf("Invoke: %q, %v", res.Payload, err)
				}
			}
			b.StopTimer()
			cancel()
			s.Close()
			<-clientDone
			<-served
		})
	}
}

// echoOverHTTP answers every event with its payload, over HTTP as a
// runtime client does, until ctx ends.
func echoOverHTTP(ctx context.Context, addr string) {
	hc := &http.Client{Transport: &http.Transport{}}
	base := "http://" + addr + apiVersionPath
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/invocation/next", nil)
		resp, err := hc.Do(req)
		if err != nil {
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		id := resp.Header.Get(headerRequestID)
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, base+"/invocation/"+id+"/response", bytes.NewReader(body))
		if resp, err = hc.Do(req); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// echoOverSocket does the same over the socket, each result sent with the
// next Next, until the connection is closed.
func echoOverSocket(ctx context.Context, path string) {
	r, err := dialSock(path)
	if err != nil {
		return
	}
	stop := context.AfterFunc(ctx, func() { r.nc.Close() })
	defer stop()
	out := frame.AppendNext(nil)
	for {
		if _, err := r.nc.Write(out); err != nil {
			return
		}
		kind, body, err := r.readFrame()
		if err != nil || kind != frame.Event {
			return
		}
		f, payload, err := frame.ParseEvent(body)
		if err != nil {
			return
		}
		out = frame.AppendNext(frame.AppendResponse(out[:0], f.RequestID, payload))
	}
}
