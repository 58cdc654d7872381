package node

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/sandbox"
	"github.com/baton-faas/baton/internal/workerapi"
)

// resizeRuntime creates resizeSandboxes at once.
type resizeRuntime struct{ sb *resizeSandbox }

func (*resizeRuntime) Isolation() string                  { return "test" }
func (*resizeRuntime) Capabilities() sandbox.Capabilities { return sandbox.Capabilities{} }
func (r *resizeRuntime) Create(context.Context, sandbox.Spec) (sandbox.Sandbox, error) {
	return r.sb, nil
}

// resizeSandbox records every Resize; while gate is set, the next Resize
// waits for it to close (after saying so on entered).
type resizeSandbox struct {
	mu      sync.Mutex
	calls   []sandbox.Resources // in the order they took effect
	gate    chan struct{}
	entered chan struct{}
}

func (*resizeSandbox) ID() string                { return "sb-gated" }
func (*resizeSandbox) Path(target string) string { return target }
func (*resizeSandbox) Start(context.Context, sandbox.ProcessSpec) (sandbox.Process, error) {
	return nil, errors.New("gated sandbox runs nothing")
}
func (s *resizeSandbox) Resize(ctx context.Context, r sandbox.Resources) error {
	s.mu.Lock()
	gate := s.gate
	s.gate = nil
	s.mu.Unlock()
	if gate != nil {
		s.entered <- struct{}{}
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, r)
	return nil
}
func (s *resizeSandbox) resizes() []sandbox.Resources {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sandbox.Resources(nil), s.calls...)
}
func (*resizeSandbox) Listen(string, string) (net.Listener, error) {
	return nil, errors.New("gated sandbox has no network")
}
func (*resizeSandbox) Destroy(context.Context) error { return nil }

// An instance leaving while another joins: whichever resize reads its
// limits last must also be the last applied, or a sandbox shrunk for the
// leaver would stay too small for the joiner (and a grown one unshrunk).
func TestConcurrentResizesLeaveTheLatestLimits(t *testing.T) {
	sb := &resizeSandbox{entered: make(chan struct{}, 1)}
	w, err := New(Options{DataDir: t.TempDir(), Sandboxes: &resizeRuntime{sb: sb}, Code: noCode{}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	spec := workerapi.InstanceSpec{Function: "f", Version: 1, App: "app", Spec: function.Spec{MemoryMB: 512}}
	codeDir := t.TempDir()
	ctx := context.Background()
	a, err := w.acquireApp(ctx, spec, codeDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.acquireApp(ctx, spec, codeDir, nil); err != nil {
		t.Fatal(err)
	}
	two := w.apps.limits(a)

	// The leaver's shrink is held inside Resize...
	gate := make(chan struct{})
	sb.mu.Lock()
	sb.gate = gate
	sb.mu.Unlock()
	left := make(chan struct{})
	go func() {
		defer close(left)
		w.releaseApp(a.key, spec.Spec.MemoryMB)
	}()
	<-sb.entered
	// ...while a joiner grows the sandbox back.
	joined := make(chan error, 1)
	go func() {
		_, err := w.acquireApp(ctx, spec, codeDir, nil)
		joined <- err
	}()
	// Give an unserialised joiner the chance to apply its limits before
	// the stale shrink does (the fixed worker makes it wait instead).
	before := len(sb.resizes())
	for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline) && len(sb.resizes()) == before; {
		time.Sleep(5 * time.Millisecond)
	}
	close(gate)
	<-left
	if err := <-joined; err != nil {
		t.Fatal(err)
	}
	calls := sb.resizes()
	if len(calls) == 0 {
		t.Fatal("no resize took effect")
	}
	if got, want := calls[len(calls)-1], w.apps.limits(a); got != want || want != two {
		t.Errorf("sandbox left with %+v after a leave and a join, want %+v (two instances: %+v); resizes in order: %+v", got, want, two, calls)
	}
	for range 2 {
		w.releaseApp(a.key, spec.Spec.MemoryMB)
	}
}
