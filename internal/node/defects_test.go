package node

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/sandbox"
	"github.com/baton-faas/baton/internal/sandbox/fake"
	"github.com/baton-faas/baton/internal/sandbox/process"
	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/workerapitest"
)

// waitFor polls cond until it holds, failing the test after a generous
// deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// gatedRuntime is the fake runtime whose grain workers (zygotes) start
// only once the test opens the gate; a start whose ctx ends first fails,
// as a real one would.
type gatedRuntime struct {
	*fake.Runtime
	entered chan struct{} // one value per zygote start that began
	gate    chan struct{}
}

func (r *gatedRuntime) Create(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	sb, err := r.Runtime.Create(ctx, spec)
	if err != nil {
		return nil, err
	}
	return &gatedSandbox{Sandbox: sb, r: r}, nil
}

type gatedSandbox struct {
	sandbox.Sandbox
	r *gatedRuntime
}

func (s *gatedSandbox) Start(ctx context.Context, spec sandbox.ProcessSpec) (sandbox.Process, error) {
	if len(spec.Args) > 0 && spec.Args[len(spec.Args)-1] == "zygote" {
		s.r.entered <- struct{}{}
		select {
		case <-s.r.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.Sandbox.Start(ctx, spec)
}

// Stopping the start that first needed a grain worker must not take the
// grain worker from the other starts of the same version waiting on it.
func TestStoppingFirstStartKeepsSharedGrainWorker(t *testing.T) {
	fr, err := fake.New(fake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rt := &gatedRuntime{Runtime: fr, entered: make(chan struct{}, 4), gate: make(chan struct{})}
	code := workerapitest.NewPythonCode()
	w, err := New(Options{ID: "node-test", DataDir: t.TempDir(), Sandboxes: rt, Code: code})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spec := code.Deploy(t, "shared", workerapitest.Echo)

	first, err := w.StartInstance(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	<-rt.entered // the grain worker is starting, for the first start
	second, err := w.StartInstance(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second start waits for the grain worker", func() bool { return grainChildren(w) == 2 })
	if err := w.StopInstance(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	close(rt.gate)
	ready, err := w.WaitInstance(ctx, second.ID)
	if err != nil {
		t.Fatalf("the second start failed with the first one's stop: %v", err)
	}
	if ready.State != workerapi.Ready || !ready.Forked {
		t.Errorf("second instance: %+v, want a ready fork", ready)
	}
	res, err := w.Invoke(ctx, second.ID, workerapi.Invocation{ID: "r1", Payload: []byte(`{"a":1}`), Deadline: time.Now().Add(time.Minute)})
	if err != nil || !bytes.Equal(res.Payload, []byte(`{"a":1}`)) {
		t.Fatalf("invoke: %+v, %v", res, err)
	}
	if err := w.StopInstance(ctx, second.ID); err != nil {
		t.Fatal(err)
	}
	assertNothingHeld(t, w)
}

// grainChildren sums the children counted against grain workers.
func grainChildren(w *Worker) int {
	w.grains.mu.Lock()
	defer w.grains.mu.Unlock()
	n := 0
	for _, g := range w.grains.grains {
		n += g.children
	}
	return n
}

// blockingCode serves one archive, holding every fetch until released.
type blockingCode struct {
	*zipCode
	entered chan struct{}
	release chan struct{}
	mu      sync.Mutex
}

func (b *blockingCode) Code(ctx context.Context, digest string) (io.ReadCloser, error) {
	b.mu.Lock()
	rc, err := b.zipCode.Code(ctx, digest)
	b.mu.Unlock()
	b.entered <- struct{}{}
	select {
	case <-b.release:
		return rc, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (b *blockingCode) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.fetches
}

// Concurrent fetches of one digest share one build; a caller whose ctx
// ends stops waiting without cancelling the build for the others.
func TestCodeFetchSharedAndNotCancelledByOneCaller(t *testing.T) {
	src := &blockingCode{zipCode: newZipCode(t), entered: make(chan struct{}, 4), release: make(chan struct{})}
	w, err := New(Options{DataDir: t.TempDir(), Sandboxes: process.New(), Code: src})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())

	firstCtx, cancelFirst := context.WithCancel(context.Background())
	firstDone := make(chan error, 1)
	go func() {
		_, err := w.codeDir(firstCtx, src.digest)
		firstDone <- err
	}()
	<-src.entered // the first caller's fetch is under way
	type result struct {
		dir string
		err error
	}
	others := make(chan result, 2)
	for range 2 {
		go func() {
			dir, err := w.codeDir(context.Background(), src.digest)
			others <- result{dir, err}
		}()
	}
	cancelFirst()
	if err := <-firstDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: %v, want context.Canceled", err)
	}
	close(src.release)
	for range 2 {
		if r := <-others; r.err != nil || r.dir == "" {
			t.Fatalf("a caller sharing the build: %q, %v", r.dir, r.err)
		}
	}
	if n := src.count(); n != 1 {
		t.Errorf("code fetched %d times, want once for all callers", n)
	}
}

// A host without python3 runs functions of sandboxes that execute no
// programs (the fake), and a start that needs the missing interpreter
// fails as an init error naming it.
func TestMissingInterpreterOnlyFailsItsRuntime(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no python3 on this "host"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := workerapitest.NewPythonCode()
	spec := code.Deploy(t, "py", workerapitest.Echo)

	fr, err := fake.New(fake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(Options{ID: "fake", DataDir: t.TempDir(), Sandboxes: fr, Code: code})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	in, err := w.StartInstance(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitInstance(ctx, in.ID); err != nil {
		t.Fatalf("fake sandbox, no python3 on the host: %v", err)
	}

	p, err := New(Options{ID: "process", DataDir: t.TempDir(), Sandboxes: process.New(), Code: code})
	if err != nil {
		t.Fatalf("a host without python3: %v", err)
	}
	defer p.Close(context.Background())
	in, err = p.StartInstance(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.WaitInstance(ctx, in.ID)
	var initErr *workerapi.InitError
	if !errors.As(err, &initErr) || !strings.Contains(initErr.Err.Message, "python3") {
		t.Fatalf("process sandbox without python3: %v, want an init error naming python3", err)
	}
}
