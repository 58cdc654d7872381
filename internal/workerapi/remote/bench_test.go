package remote_test

import (
	"context"
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
		call := func() {
			// As the router calls: a deadline on the context and in the
			// invocation.
			ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			res, err := api.Invoke(ictx, in.ID, workerapi.Invocation{ID: "bench", Payload: payload, Deadline: time.Now().Add(30 * time.Second)})
			if err != nil || len(res.Payload) != len(payload) {
				b.Fatalf("invoke: %v (%d bytes)", err, len(res.Payload))
			}
		}
		b.Run(via+"/sequential", func(b *testing.B) {
			for b.Loop() {
				call()
			}
		})
		b.Run(via+"/parallel", func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					call()
				}
			})
		})
		w.Close()
	}
}
