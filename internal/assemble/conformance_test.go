package assemble

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
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

// The node with container sandboxes, wired as `baton server` wires it
// (image-backed roots, code layers), passes the worker API's conformance
// suite.
func TestConformanceContainer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("container sandboxes need root")
	}
	if runtimes.Python() == "" {
		t.Skip("python3 is not installed: the suite's functions are Python")
	}
	log := slog.New(slog.DiscardHandler)
	// One image store for the suite: the base images are built once.
	images, err := image.Open(filepath.Join(t.TempDir(), "images"), log)
	if err != nil {
		t.Fatal(err)
	}
	defer images.Close()
	bases := baseimage.NewCache(images, log)
	defer bases.Close()
	workerapitest.Run(t, func(t *testing.T) (workerapi.Worker, workerapitest.Deployer) {
		dir := t.TempDir()
		sandboxes, err := container.New(container.Options{StateDir: filepath.Join(dir, "sandboxes-state"), Logger: log})
		if err != nil {
			t.Skipf("container sandboxes are unavailable on this host: %v", err)
		}
		code := workerapitest.NewPythonCode()
		w, err := node.New(node.Options{ID: "node-container-test", DataDir: filepath.Join(dir, "worker"), Sandboxes: sandboxes,
			Code: code, RootFS: imageRootFS{store: images, base: bases, log: log, unavailable: &sync.Map{}},
			Layers: images, Images: images, BaseImages: bases, EventBuffer: workerapitest.EventBuffer})
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
	})
}
