package node

import (
	"context"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/runtimes"
	"github.com/baton-faas/baton/internal/sandbox/process"
	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/workerapitest"
)

// The node with process sandboxes passes the worker API's conformance
// suite (with container sandboxes: see internal/assemble, which has the
// image-backed root filesystems), with its runtimes' invocation loop over
// the Runtime API's socket and over HTTP.
func TestConformanceProcess(t *testing.T) {
	if runtimes.Python() == "" {
		t.Skip("python3 is not installed: the node runs the suite's functions in Python")
	}
	for _, httpOnly := range []bool{false, true} {
		t.Run(map[bool]string{false: "socket", true: "http"}[httpOnly], func(t *testing.T) {
			workerapitest.Run(t, func(t *testing.T) (workerapi.Worker, workerapitest.Deployer) {
				return newConformanceNode(t, httpOnly)
			})
		})
	}
}

// newConformanceNode is a node with process sandboxes as the suite wants
// it, closed when the test ends.
func newConformanceNode(t *testing.T, httpOnly bool) (*Worker, *workerapitest.PythonCode) {
	return newPythonNode(t, Options{EventBuffer: workerapitest.EventBuffer, NoRuntimeSocket: httpOnly})
}

// newPythonNode is a node with process sandboxes and opts' other
// settings, serving the suite's Python functions, closed when the test
// ends.
func newPythonNode(t *testing.T, opts Options) (*Worker, *workerapitest.PythonCode) {
	t.Helper()
	code := workerapitest.NewPythonCode()
	opts.ID, opts.DataDir, opts.Sandboxes, opts.Code = "node-test", t.TempDir(), process.New(), code
	w, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := w.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return w, code
}

// A start stopped while the handler still imports releases everything it
// took: the grain worker, the sandbox, the code reference.
func TestStoppedStartReleasesEverything(t *testing.T) {
	if runtimes.Python() == "" {
		t.Skip("python3 is not installed: the test's function is Python")
	}
	code := workerapitest.NewPythonCode()
	w, err := New(Options{ID: "node-test", DataDir: t.TempDir(), Sandboxes: process.New(), Code: code})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spec := code.Deploy(t, "slow", workerapitest.SlowStart)
	in, err := w.StartInstance(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	// Wait until the grain worker is importing (the start is deep in its
	// path), then stop.
	for {
		if w.grains.count() > 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the grain worker never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := w.StopInstance(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	assertNothingHeld(t, w)
	if refs, known := w.code.refs(spec.CodeDigest); !known || refs != 0 {
		t.Errorf("code use after the stop: %d references (known: %v); want none", refs, known)
	}
}

// assertNothingHeld fails unless w holds no grain worker, sandbox or
// instance.
func assertNothingHeld(t *testing.T, w *Worker) {
	t.Helper()
	w.instances.mu.Lock()
	live, running := len(w.instances.live), len(w.instances.running)
	w.instances.mu.Unlock()
	if g, a := w.grains.count(), w.apps.count(); g != 0 || a != 0 || live != 0 || running != 0 {
		t.Errorf("left after the stop: %d grain workers, %d sandboxes, %d live, %d instances", g, a, live, running)
	}
}
