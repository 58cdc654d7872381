package node

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/sandbox"
	"github.com/baton-faas/baton/internal/workerapi"
)

// slowRuntime creates sandboxes that exist only once the test lets them.
type slowRuntime struct {
	entered chan struct{} // one value per Create that began
	release chan struct{}
}

func (*slowRuntime) Isolation() string                  { return "test" }
func (*slowRuntime) Capabilities() sandbox.Capabilities { return sandbox.Capabilities{} }

func (r *slowRuntime) Create(context.Context, sandbox.Spec) (sandbox.Sandbox, error) {
	r.entered <- struct{}{}
	<-r.release
	return &stubSandbox{}, nil
}

// stubSandbox runs nothing; it records its limits.
type stubSandbox struct {
	mu     sync.Mutex
	limits sandbox.Resources
}

func (*stubSandbox) ID() string                { return "sb-test" }
func (*stubSandbox) Path(target string) string { return target }
func (*stubSandbox) Start(context.Context, sandbox.ProcessSpec) (sandbox.Process, error) {
	return nil, errors.New("stub sandbox runs nothing")
}
func (s *stubSandbox) Resize(_ context.Context, r sandbox.Resources) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limits = r
	return nil
}
func (*stubSandbox) Listen(string, string) (net.Listener, error) {
	return nil, errors.New("stub sandbox has no network")
}
func (*stubSandbox) Destroy(context.Context) error { return nil }

// A waiter that gives up before its app's sandbox exists leaves without
// touching the sandbox its creator is still writing (the race detector
// flagged resize reading a.sb here).
func TestWaiterGivingUpBeforeSandboxIsReady(t *testing.T) {
	rt := &slowRuntime{entered: make(chan struct{}, 1), release: make(chan struct{})}
	w, err := New(Options{DataDir: t.TempDir(), Sandboxes: rt, Code: noCode{}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	spec := workerapi.InstanceSpec{Function: "f", Version: 1, App: "app", Spec: function.Spec{MemoryMB: 128}}
	codeDir := t.TempDir()

	created := make(chan *app, 1)
	go func() {
		a, err := w.acquireApp(context.Background(), spec, codeDir, nil)
		if err != nil {
			t.Error(err)
		}
		created <- a
	}()
	<-rt.entered
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	gaveUp := make(chan error, 1)
	go func() {
		_, err := w.acquireApp(gone, spec, codeDir, nil)
		gaveUp <- err
	}()
	// The sandbox appears while the waiter leaves: nothing orders the two.
	close(rt.release)
	if err := <-gaveUp; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("waiter: %v", err)
	}
	a := <-created
	if a == nil {
		t.Fatal("no sandbox")
	}
	w.apps.mu.Lock()
	instances, memoryMB := a.instances, a.memoryMB
	w.apps.mu.Unlock()
	if instances == 1 && memoryMB != spec.Spec.MemoryMB {
		t.Errorf("app holds %d MB for its one instance, want %d", memoryMB, spec.Spec.MemoryMB)
	}
	w.releaseApp(a.key, spec.Spec.MemoryMB)
}
