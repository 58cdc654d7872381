package node

import (
	"context"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/sandbox/process"
	"github.com/baton-faas/baton/internal/workerapi"
)

// Prepare looks up the host's interpreters in the background (process
// sandboxes), so that the first start of each does not.
func TestPrepareFindsInterpreters(t *testing.T) {
	w, err := New(Options{DataDir: t.TempDir(), Sandboxes: process.New(), Code: noCode{}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	w.Prepare()
	deadline := time.Now().Add(time.Minute)
	for _, rt := range []string{function.RuntimePython, function.RuntimeNode} {
		h := w.interps.byRuntime[rt]
		for !h.done.Load() {
			if time.Now().After(deadline) {
				t.Fatalf("runtime %s: its interpreter was not looked up in the background", rt)
			}
			time.Sleep(5 * time.Millisecond)
		}
		// A path, or why there is none.
		if h.path == "" && h.err == nil {
			t.Errorf("runtime %s: the lookup found nothing and said nothing", rt)
		}
	}
}

// A function without --app is a sandbox of its own per runtime; the
// functions of a named app share one whatever their runtimes.
func TestAppKeyByRuntimeOnlyWithoutApp(t *testing.T) {
	spec := func(app, runtime, image string) workerapi.InstanceSpec {
		s := workerapi.InstanceSpec{Function: "f", App: app, Spec: function.Spec{Runtime: runtime, App: app, Image: image}}
		if app == "" {
			s.App = "f"
		}
		return s
	}
	if appKey(spec("", function.RuntimePython, "")) == appKey(spec("", function.RuntimeNode, "")) {
		t.Error("a function without --app redeployed to another runtime would join the old runtime's sandbox")
	}
	if appKey(spec("shop", function.RuntimePython, "")) != appKey(spec("shop", function.RuntimeNode, "")) {
		t.Error("the functions of app shop do not share its sandbox across runtimes")
	}
	if appKey(spec("", function.RuntimePython, "tools:1")) != appKey(spec("", function.RuntimeNode, "tools:1")) {
		t.Error("a named image's sandbox depends on the runtime")
	}
}

// Prepare's lookups wait while a start runs, and go on after it.
func TestPrepareWaitsForStarts(t *testing.T) {
	w, err := New(Options{DataDir: t.TempDir(), Sandboxes: process.New(), Code: noCode{}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	leave := w.busy.enter()
	w.Prepare()
	// Held back, not merely slow: the lookups cannot begin while the
	// start runs, however long this takes.
	for _, h := range w.interps.byRuntime {
		if h.done.Load() {
			t.Fatal("an interpreter was looked up while a start ran")
		}
	}
	leave()
	deadline := time.Now().Add(time.Minute)
	for _, rt := range []string{function.RuntimePython, function.RuntimeNode} {
		for !w.interps.byRuntime[rt].done.Load() {
			if time.Now().After(deadline) {
				t.Fatalf("runtime %s: not looked up after the start ended", rt)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}
