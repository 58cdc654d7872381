package cluster

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/nats-io/nats.go"

	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/controlplane/controller"
	"github.com/baton-faas/baton/internal/controlplane/metrics"
	"github.com/baton-faas/baton/internal/controlplane/records"
	"github.com/baton-faas/baton/internal/controlplane/registry"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/store/jsstore"
	"github.com/baton-faas/baton/internal/store/natsd"
	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/fake"
	"github.com/baton-faas/baton/internal/workerapi/remote/remotetest"
)

// rig is one controller as `baton controller` assembles it (registry and
// records on JetStream, metrics, the default router), on an in-process
// NATS server, with workers added by the benchmark.
type rig struct {
	ns   *natsd.Server
	nc   *nats.Conn
	st   *jsstore.Store
	recs *records.Log
	ctrl *controller.Controller
	pki  *remotetest.PKI

	mu    sync.Mutex
	fakes []*fake.Worker
}

// setupTimeout bounds every setup step (deploys, joins, drains).
const setupTimeout = 10 * time.Minute

// quiet is the controller's and the servers' logger: a run at thousands of
// starts per second must not measure its own logging.
var quiet = slog.New(slog.DiscardHandler)

// newRig starts NATS, the stores and a started controller. Close it with
// close (the controller first, then the rest).
func newRig(b *testing.B) *rig {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	ns, err := natsd.Start(ctx, natsd.Options{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(ns.Shutdown)
	nc, err := ns.Connect()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	// The same stores and bounds as assemble's openControlState with
	// default flags (5000 records).
	st, err := jsstore.Open(ctx, nc, jsstore.Options{MaxRecords: 5000, MaxRecordBytes: 512 << 20})
	if err != nil {
		b.Fatal(err)
	}
	reg := registry.New(st, st, archive.Limits{}, quiet)
	recs, err := records.Open(ctx, records.Options{Store: st, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	ctrl := controller.New(controller.Options{Registry: reg, Records: recs, Metrics: metrics.New(), Logger: quiet, Changes: st})
	if err := ctrl.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	return &rig{ns: ns, nc: nc, st: st, recs: recs, ctrl: ctrl, pki: remotetest.NewPKI(b)}
}

// close shuts the controller down (its instances stop), then the records.
func (r *rig) close(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := r.ctrl.Shutdown(ctx); err != nil {
		b.Logf("controller shutdown: %v", err)
	}
	r.recs.Close()
}

// fakeCapacity is far more than any run starts: placement must never be
// what limits the churn (fake instances count at their memory size).
var fakeCapacity = workerapi.Resources{MemoryMB: 1 << 30, MilliCPUs: 1 << 30}

// newFake returns a fake worker whose instances take latency to start and
// that keeps events events, closed when the benchmark ends.
func (r *rig) newFake(b *testing.B, id string, latency time.Duration, events int) *fake.Worker {
	w := fake.New(fake.Options{ID: id, StartLatency: latency, Capacity: fakeCapacity, EventBuffer: events})
	b.Cleanup(w.Close)
	r.mu.Lock()
	r.fakes = append(r.fakes, w)
	r.mu.Unlock()
	return w
}

// serve puts w behind the real worker API (a gRPC server with mutual TLS
// on a loopback port) and returns a controller's client of it.
func (r *rig) serve(b *testing.B, w workerapi.Worker) workerapi.Worker {
	return remotetest.Dial(b, remotetest.Serve(b, w, r.pki, "127.0.0.1:0").Addr, r.pki)
}

// instances counts the live instances on every fake worker.
func (r *rig) instances() int {
	r.mu.Lock()
	fakes := append([]*fake.Worker(nil), r.fakes...)
	r.mu.Unlock()
	n := 0
	for _, w := range fakes {
		info, _ := w.Info(context.Background())
		n += info.Instances
	}
	return n
}

// appCode is the code every benchmark function deploys: one archive, so
// the object store holds it once (fake workers never run it).
func appCode(b *testing.B) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	f, err := zw.Create("app.py")
	if err == nil {
		_, err = f.Write([]byte("def handler(event, context):\n    return event\n"))
	}
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// deploy registers n functions named prefix-00000 ... through the
// controller (registry on JetStream, router) and returns their names.
func (r *rig) deploy(b *testing.B, prefix string, n int) []string {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	code := appCode(b)
	spec := function.Spec{Runtime: "python3", Handler: "app.handler", MemoryMB: 128}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%05d", prefix, i)
	}
	began := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, name := range names {
		g.Go(func() error {
			if _, err := r.ctrl.Deploy(gctx, name, spec, code); err != nil {
				return fmt.Errorf("deploy %s: %w", name, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	b.Logf("deployed %d functions in %s", n, time.Since(began).Round(time.Millisecond))
	return names
}

// drain stops every instance of the named functions through the
// controller and waits until the workers run none, so that each run
// starts from empty workers. Instances still on the workers after
// drainGrace (the router forgot them, e.g. a stop that failed) are stopped
// on the fakes directly; their number is returned, and is a finding.
func (r *rig) drain(b *testing.B, names []string) int {
	b.Helper()
	for _, name := range names {
		if _, _, err := r.ctrl.Recycle(name); err != nil {
			b.Fatalf("recycle %s: %v", name, err)
		}
	}
	deadline := time.Now().Add(drainGrace)
	for r.instances() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	left := r.instances()
	if left == 0 {
		return 0
	}
	b.Logf("%d instances were still on the workers %s after the controller stopped its functions' instances; stopping them on the fakes", left, drainGrace)
	ctx := context.Background()
	r.mu.Lock()
	fakes := append([]*fake.Worker(nil), r.fakes...)
	r.mu.Unlock()
	for _, w := range fakes {
		ins, _ := w.Instances(ctx)
		for _, in := range ins {
			_ = w.StopInstance(ctx, in.ID)
		}
	}
	return left
}

// drainGrace bounds how long drain waits for the controller's stops.
const drainGrace = 30 * time.Second

// waitFor polls cond until it holds or the setup deadline passes.
func waitFor(b *testing.B, what string, cond func() bool) {
	b.Helper()
	deadline := time.Now().Add(setupTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
