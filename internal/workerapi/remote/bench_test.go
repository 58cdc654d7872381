package remote_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/fake"
	"github.com/baton-faas/baton/internal/workerapi/remote/remotetest"
)

// BenchmarkInvoke measures a warm invocation's round trip through the
// worker API in process and over the network transport (loopback TCP,
// mutual TLS), with the fake worker behind both, so that the difference
// is the network hop's cost. "parallel" runs GOMAXPROCS callers at once
// on one connection.
func BenchmarkInvoke(b *testing.B) {
	payload := []byte(`{"name":"Baton","n":[1,2,3],"text":"a small event of about one hundred bytes, like most"}`)
	for _, via := range []string{"in-process", "grpc"} {
		w := fake.New(fake.Options{ID: "bench", StartLatency: time.Microsecond})
		var api workerapi.Worker = w
		if via == "grpc" {
			api = remotetest.Loopback(b, w)
		}
		ctx := context.Background()
		in, err := w.StartInstance(ctx, workerapi.InstanceSpec{Function: "echo", Version: 1})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := w.WaitInstance(ctx, in.ID); err != nil {
			b.Fatal(err)
		}
		call := func() error {
			// As the router calls: a deadline on the context and in the
			// invocation.
			ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			res, err := api.Invoke(ictx, in.ID, workerapi.Invocation{ID: "bench", Payload: payload, Deadline: time.Now().Add(30 * time.Second)})
			if err == nil && len(res.Payload) != len(payload) {
				err = fmt.Errorf("%d bytes back, want %d", len(res.Payload), len(payload))
			}
			return err
		}
		b.Run(via+"/sequential", func(b *testing.B) {
			for b.Loop() {
				if err := call(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(via+"/parallel", func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := call(); err != nil {
						b.Error(err) // not Fatal: this is not the benchmark's goroutine
						return
					}
				}
			})
		})
		w.Close()
	}
}

// BenchmarkStartWaitStop measures the control plane's calls around one
// instance (StartInstance, WaitInstance, StopInstance) in process and over
// the transport, with the fake worker starting instances at once: the
// network's share of a cold start.
func BenchmarkStartWaitStop(b *testing.B) {
	for _, via := range []string{"in-process", "grpc"} {
		b.Run(via, func(b *testing.B) {
			w := fake.New(fake.Options{ID: "bench", StartLatency: time.Nanosecond, EventBuffer: 64})
			defer w.Close()
			var api workerapi.Worker = w
			if via == "grpc" {
				api = remotetest.Loopback(b, w)
			}
			ctx := context.Background()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					in, err := api.StartInstance(ctx, workerapi.InstanceSpec{Function: "f", Version: 1})
					if err == nil {
						_, err = api.WaitInstance(ctx, in.ID)
					}
					if err == nil {
						err = api.StopInstance(ctx, in.ID)
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
