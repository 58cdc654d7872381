package assemble

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/image"
	"github.com/baton-faas/baton/internal/image/baseimage"
	"github.com/baton-faas/baton/internal/node"
	"github.com/baton-faas/baton/internal/runtimes"
	"github.com/baton-faas/baton/internal/sandbox/container"
	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/workerapitest"
)

// containerNode is a node with container sandboxes wired as `baton
// server` wires it, on a fresh image store, without Prepare: what it
// builds is what its starts asked for.
func containerNode(t *testing.T) (*node.Worker, *baseimage.Cache, *workerapitest.PythonCode) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("container sandboxes need root")
	}
	if runtimes.Python() == "" {
		t.Skip("python3 is not installed")
	}
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	sandboxes, err := container.New(container.Options{StateDir: filepath.Join(dir, "sandboxes-state"), Logger: log})
	if err != nil {
		t.Skipf("container sandboxes are unavailable on this host: %v", err)
	}
	images, err := image.Open(filepath.Join(dir, "images"), log)
	if err != nil {
		t.Fatal(err)
	}
	bases := baseimage.NewCache(images, log)
	code := workerapitest.NewPythonCode()
	w, err := node.New(node.Options{ID: "node-base-images", DataDir: filepath.Join(dir, "worker"), Sandboxes: sandboxes,
		Code: code, RootFS: imageRootFS{store: images, base: bases, log: log, unavailable: &sync.Map{}},
		Layers: images, Images: images, BaseImages: bases})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		bases.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := w.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
		images.Close()
	})
	return w, bases, code
}

// The first starts of a Python function on a fresh worker, two at once,
// build Python's base image once and the shell's, never Node's.
func TestFirstPythonStartsBuildOnlyTheirImages(t *testing.T) {
	w, bases, code := containerNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	specs := []workerapi.InstanceSpec{code.Deploy(t, "first", workerapitest.Echo), code.Deploy(t, "second", workerapitest.Echo)}
	var wg sync.WaitGroup
	errs := make([]error, len(specs))
	for i, spec := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in, err := w.StartInstance(ctx, spec)
			if err == nil {
				_, err = w.WaitInstance(ctx, in.ID)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("start of %s: %v", specs[i].Function, err)
		}
	}
	got := bases.Started()
	slices.Sort(got)
	want := []baseimage.Runtime{baseimage.Provided, baseimage.Python}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("the first Python starts built the base images of %v, want %v (each once)", got, want)
	}
}

// An app named with --app may mix runtimes: its root holds every runtime
// this host can build, so its first start builds them all.
func TestMixedAppStartBuildsEveryRuntime(t *testing.T) {
	w, bases, code := containerNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spec := code.Deploy(t, "grouped", workerapitest.Echo)
	spec.Spec.App = "shop"
	spec.App = "shop"
	in, err := w.StartInstance(ctx, spec)
	if err == nil {
		_, err = w.WaitInstance(ctx, in.ID)
	}
	if err != nil {
		t.Fatal(err)
	}
	got := bases.Started()
	for _, rt := range baseimage.Runtimes() {
		if !slices.Contains(got, rt) {
			t.Fatalf("a start in an app that may mix runtimes built %v, not %s", got, rt)
		}
	}
}

// A host node prepares its base images in the background (Prepare);
// stopping it at once stops those builds, leaves none of its goroutines
// and no image that is not whole: the store, opened again as by the next
// run, lists only images whose every layer mounts and verifies.
func TestHostNodeStopsPreparingAtShutdown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("container sandboxes need root")
	}
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	before := runtime.NumGoroutine()
	key := make([]byte, 32)
	wk, closeNode, err := newHostNode(context.Background(), hostConfig{DataDir: dir, Sandbox: "container", TransferKey: key},
		workerapitest.NewPythonCode(), log)
	if err != nil {
		t.Skipf("no container host node here: %v", err)
	}
	wk.Prepare()
	closeNode()
	for deadline := time.Now().Add(time.Minute); runtime.NumGoroutine() > before; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after the node stopped, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
	}
	images, err := image.Open(filepath.Join(dir, "images"), log)
	if err != nil {
		t.Fatal(err)
	}
	defer images.Close()
	imgs, err := images.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range imgs {
		_, release, err := images.RootFS(context.Background(), img)
		if err != nil {
			t.Fatalf("image %s listed after a stop during the build does not mount: %v", img.Name, err)
		}
		release()
	}
	t.Logf("images whole after the stop: %d", len(imgs))
}
