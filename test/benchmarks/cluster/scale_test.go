package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/cluster/membership"
	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/fake"
	"github.com/baton-faas/baton/internal/workerapi/remote"
	"github.com/baton-faas/baton/internal/workerapi/remote/remotetest"
)

// BenchmarkControlPlaneScale measures one controller following the
// membership of many workers: BATON_SCALE_SMALL (10) workers, then
// BATON_SCALE_WORKERS (1000), each a fake worker with its own NATS
// connection that joins the membership (JetStream KV, 1 s heartbeats) and,
// with BATON_SCALE_TRANSPORT=grpc (the default), serves the real worker API
// (its own gRPC server with mutual TLS on a loopback port); with
// "inprocess" the controller holds the fakes directly. The controller
// follows the membership as `baton controller` does: a worker that joins is
// dialed and added, one that leaves is removed.
//
// Everything runs in this one process (NATS server, workers, controller),
// so process CPU and heap are the whole simulated cluster's. Three steady
// windows of BATON_SCALE_WINDOW (30s), no invocations: the small cluster,
// the large one, and the large one with the controller's membership watch
// stopped; the difference of the last two is what the controller spends on
// heartbeats. After each of the first two windows, cold starts at
// BATON_SCALE_RATE (1000/s) for BATON_SCALE_DURATION (3s), as in
// BenchmarkSandboxChurn.
func BenchmarkControlPlaneScale(b *testing.B) {
	small := envInt(b, "BATON_SCALE_SMALL", 10)
	large := envInt(b, "BATON_SCALE_WORKERS", 1000)
	window := envDuration(b, "BATON_SCALE_WINDOW", 30*time.Second)
	rate := float64(envInt(b, "BATON_SCALE_RATE", 1000))
	duration := envDuration(b, "BATON_SCALE_DURATION", 3*time.Second)
	latency := envDuration(b, "BATON_CHURN_START_LATENCY", 40*time.Millisecond)
	transport := os.Getenv("BATON_SCALE_TRANSPORT")
	if transport == "" {
		transport = "grpc"
	}
	if transport != "grpc" && transport != "inprocess" {
		b.Fatalf("BATON_SCALE_TRANSPORT=%q: want grpc or inprocess", transport)
	}
	if large < small {
		b.Fatalf("BATON_SCALE_WORKERS=%d is below BATON_SCALE_SMALL=%d", large, small)
	}
	ctx := context.Background()

	r := newRig(b)
	js, err := jetstream.New(r.nc)
	if err != nil {
		b.Fatal(err)
	}
	members, err := membership.Open(ctx, js, membership.Config{})
	if err != nil {
		b.Fatal(err)
	}
	f := &follower{r: r, transport: transport, tls: r.pki.ClientTLS(b), fakes: map[string]*fake.Worker{},
		clients: map[string]*remote.Client{}}
	defer f.closeClients()
	defer r.close(b)
	if err := f.start(ctx, members); err != nil {
		b.Fatal(err)
	}
	defer f.stopWatch()
	names := r.deploy(b, "scale", int(rate*duration.Seconds()))
	senders := int(2*rate) + 256

	var windows []windowResult
	var runs []loadResult
	for _, n := range []int{small, large} {
		began := time.Now()
		f.join(b, n, latency)
		waitFor(b, fmt.Sprintf("the controller to route to %d workers", n), func() bool { return f.added.Load() == int64(n) })
		b.Logf("%d workers joined and added in %s", n, time.Since(began).Round(time.Millisecond))
		settle()
		w := measureWindow(window, n, true, f)
		windows = append(windows, w)
		b.Logf("window: %s", w)
		settle()
		res, err := runOpenLoop(ctx, rate, duration, names, senders, r.invokeCold)
		if err != nil {
			b.Fatal(err)
		}
		res.load = loadAvg()
		b.Logf("cold starts with %d workers:\n%s", n, formatTable([]loadResult{res}))
		if left := r.drain(b, names[:res.sent]); left > 0 {
			b.Logf("with %d workers, %d instances were left on the workers after the controller stopped them", n, left)
		}
		runs = append(runs, res)
	}
	f.stopWatch()
	settle()
	w := measureWindow(window, large, false, f)
	windows = append(windows, w)
	b.Logf("window: %s", w)

	ws, wl, wq := windows[0], windows[1], windows[2]
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ws.cpuPercent(), "cpu-small-%")
	b.ReportMetric(wl.cpuPercent(), "cpu-large-%")
	b.ReportMetric(ws.heapMean/(1<<20), "heap-small-MB")
	b.ReportMetric(wl.heapMean/(1<<20), "heap-large-MB")
	perBeat := perHeartbeat(ws, wl)
	ctrlBeat := ctrlPerHeartbeat(wq, wl)
	b.ReportMetric(perBeat, "cpu-us/heartbeat")
	b.ReportMetric(ctrlBeat, "ctrl-cpu-us/heartbeat")
	b.ReportMetric(pct(runs[0].latMs, 99), "p99-small-ms")
	b.ReportMetric(pct(runs[1].latMs, 99), "p99-large-ms")
	b.Logf("control-plane scale (%s transport, %s windows, GOMAXPROCS %d):\n%s\n"+
		"whole-process CPU per heartbeat (large - small window): %.1f µs; controller's share (watch on - off): %.1f µs\n%s",
		transport, window, runtime.GOMAXPROCS(0), formatWindows(windows), perBeat, ctrlBeat, formatTable(runs))
}

// perHeartbeat is the CPU difference of two windows divided by the
// difference of their heartbeats written, in µs.
func perHeartbeat(a, b windowResult) float64 {
	beats := b.heartbeatsWritten() - a.heartbeatsWritten()
	if beats <= 0 {
		return 0
	}
	// Negative when the difference is below the noise: reported as is.
	return (b.cpuPerSecond() - a.cpuPerSecond()) * 1e6 / beats
}

// ctrlPerHeartbeat is the CPU the controller's watch costs (window with it
// minus window without) per heartbeat it read, in µs. Joins and leaves it
// handled in the window are included.
func ctrlPerHeartbeat(off, on windowResult) float64 {
	seen := float64(on.updates) / on.dur.Seconds()
	if seen <= 0 {
		return 0
	}
	return (on.cpuPerSecond() - off.cpuPerSecond()) * 1e6 / seen
}

// follower is what `baton controller` does with the membership
// (assemble.workerPool, not exported): a worker that joins is dialed and
// added to the controller, one that leaves is removed. It also counts the
// heartbeats (Updated events) it reads.
type follower struct {
	r         *rig
	transport string
	tls       *tls.Config

	mu      sync.Mutex
	fakes   map[string]*fake.Worker // by address, for the in-process transport
	clients map[string]*remote.Client
	next    int

	added   atomic.Int64
	updates atomic.Int64

	cancel context.CancelFunc
	done   chan struct{}
}

func (f *follower) start(ctx context.Context, members *membership.Members) error {
	ctx, cancel := context.WithCancel(ctx)
	w, err := members.Watch(ctx)
	if err != nil {
		cancel()
		return err
	}
	f.cancel, f.done = cancel, make(chan struct{})
	go func() {
		defer close(f.done)
		defer w.Stop()
		for _, n := range w.Snapshot() {
			f.apply(ctx, membership.Event{Kind: membership.Joined, Node: n})
		}
		for ev := range w.Events() {
			f.apply(ctx, ev)
		}
	}()
	return nil
}

// stopWatch stops following the membership; the workers stay added.
func (f *follower) stopWatch() {
	if f.cancel != nil {
		f.cancel()
		<-f.done
	}
}

func (f *follower) apply(ctx context.Context, ev membership.Event) {
	if !ev.Node.Has(membership.RoleWorker) {
		return
	}
	switch ev.Kind {
	case membership.Updated:
		f.updates.Add(1)
	case membership.Joined:
		var api workerapi.Worker
		if f.transport == "inprocess" {
			f.mu.Lock()
			api = f.fakes[ev.Node.Address]
			f.mu.Unlock()
			if api == nil {
				return
			}
		} else {
			c, err := remote.Dial(ev.Node.Address, f.tls, remote.ClientOptions{Logger: quiet})
			if err != nil {
				return
			}
			f.mu.Lock()
			f.clients[ev.Node.ID] = c
			f.mu.Unlock()
			api = c
		}
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := f.r.ctrl.AddWorker(actx, api); err == nil {
			f.added.Add(1)
		}
	case membership.Left:
		if f.r.ctrl.RemoveWorker(ev.Node.ID) {
			f.added.Add(-1)
		}
	}
}

// closeClients closes the controller's connections (after its shutdown).
func (f *follower) closeClients() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, c := range f.clients {
		_ = c.Close()
		delete(f.clients, id)
	}
}

// join starts workers until n run: each a fake worker, served on its own
// gRPC server (or registered for the in-process transport), with its own
// NATS connection, joining the membership with 1 s heartbeats.
func (f *follower) join(b *testing.B, n int, latency time.Duration) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	var g errgroup.Group
	g.SetLimit(8)
	f.mu.Lock()
	from := f.next
	f.next = max(f.next, n)
	f.mu.Unlock()
	type started struct {
		member *membership.Member
		close  func()
	}
	out := make([]started, n-from)
	var smu sync.Mutex // testing.B's Cleanup and the rig's fakes are safe; the served list is not
	for i := from; i < n; i++ {
		id := fmt.Sprintf("scale-w%04d", i)
		// A small event buffer (each worker sees a few starts): the
		// fake's ring is allocated whole, and a thousand of the default
		// size would be the simulation's heap, not the controller's.
		w := f.r.newFake(b, id, latency, 256)
		addr := "inprocess:" + id
		if f.transport == "grpc" {
			smu.Lock()
			addr = remotetest.Serve(b, w, f.r.pki, "127.0.0.1:0").Addr
			smu.Unlock()
		} else {
			f.mu.Lock()
			f.fakes[addr] = w
			f.mu.Unlock()
		}
		g.Go(func() error {
			nc, err := f.r.ns.Connect()
			if err != nil {
				return err
			}
			js, err := jetstream.New(nc)
			if err != nil {
				nc.Close()
				return err
			}
			m, err := membership.Open(ctx, js, membership.Config{})
			if err != nil {
				nc.Close()
				return fmt.Errorf("worker %s: %w", id, err)
			}
			me, err := m.Join(ctx, membership.Self{ID: id, Roles: []membership.Role{membership.RoleWorker}, Address: addr,
				Interval: time.Second, Load: membership.WorkerLoad(w), Logger: quiet})
			if err != nil {
				nc.Close()
				return fmt.Errorf("worker %s: %w", id, err)
			}
			out[i-from] = started{member: me, close: nc.Close}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	for _, s := range out {
		b.Cleanup(func() {
			s.member.Close() // the entries expire with the server
			s.close()
		})
	}
}

// windowResult is a steady window without invocations.
type windowResult struct {
	workers   int
	following bool
	dur       time.Duration
	cpu       time.Duration // user + system, whole process
	// updates are the heartbeats the controller's watch read.
	updates           int64
	heapMean, heapMax float64 // live heap objects, bytes
	totalMean         float64 // all memory mapped by the Go runtime, bytes
	goroutines        float64
	gcCycles          uint64
	load              string
}

func (w windowResult) cpuPerSecond() float64 { return w.cpu.Seconds() / w.dur.Seconds() }
func (w windowResult) cpuPercent() float64   { return 100 * w.cpuPerSecond() }

// heartbeatsWritten is how many heartbeats the workers wrote per second:
// counted by the watch when it runs, else one per worker per second.
func (w windowResult) heartbeatsWritten() float64 {
	if w.following {
		return float64(w.updates) / w.dur.Seconds()
	}
	return float64(w.workers)
}

func (w windowResult) String() string {
	return fmt.Sprintf("%d workers, watch %v: CPU %.1f%% of one core, %.0f heartbeats/s seen, heap %.1f MB (max %.1f), runtime total %.1f MB, %.0f goroutines, %d GCs, load %s",
		w.workers, w.following, w.cpuPercent(), float64(w.updates)/w.dur.Seconds(), w.heapMean/(1<<20), w.heapMax/(1<<20),
		w.totalMean/(1<<20), w.goroutines, w.gcCycles, w.load)
}

// measureWindow measures the process over d: CPU from getrusage, memory
// and goroutines sampled from runtime/metrics twice a second.
func measureWindow(d time.Duration, workers int, following bool, f *follower) windowResult {
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/sched/goroutines:goroutines"},
		{Name: "/gc/cycles/total:gc-cycles"},
	}
	res := windowResult{workers: workers, following: following, load: loadAvg()}
	metrics.Read(samples)
	gc0 := samples[3].Value.Uint64()
	u0 := f.updates.Load()
	cpu0 := processCPU()
	began := time.Now()
	var n float64
	for time.Since(began) < d {
		time.Sleep(500 * time.Millisecond)
		metrics.Read(samples)
		heap := float64(samples[0].Value.Uint64())
		res.heapMean += heap
		res.heapMax = max(res.heapMax, heap)
		res.totalMean += float64(samples[1].Value.Uint64())
		res.goroutines += float64(samples[2].Value.Uint64())
		n++
	}
	res.dur = time.Since(began)
	res.cpu = processCPU() - cpu0
	res.updates = f.updates.Load() - u0
	res.gcCycles = samples[3].Value.Uint64() - gc0
	res.heapMean /= n
	res.totalMean /= n
	res.goroutines /= n
	return res
}

// processCPU is the user and system time of this process so far.
func processCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// formatWindows renders windows as a Markdown table.
func formatWindows(ws []windowResult) string {
	var sb strings.Builder
	sb.WriteString("| workers | controller watches membership | load | CPU (% of one core) | heartbeats/s seen | heap objects mean / max (MB) | Go runtime total (MB) | goroutines | GCs |\n")
	sb.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, w := range ws {
		fmt.Fprintf(&sb, "| %d | %v | %s | %.1f | %.0f | %.1f / %.1f | %.1f | %.0f | %d |\n", w.workers, w.following, w.load, w.cpuPercent(),
			float64(w.updates)/w.dur.Seconds(), w.heapMean/(1<<20), w.heapMax/(1<<20), w.totalMean/(1<<20), w.goroutines, w.gcCycles)
	}
	return sb.String()
}
