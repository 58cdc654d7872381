package assemble

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/image"
	"github.com/baton-faas/baton/internal/image/baseimage"
	"github.com/baton-faas/baton/internal/node"
	"github.com/baton-faas/baton/internal/store"
	"github.com/baton-faas/baton/internal/workerapi"
)

// hostConfig is what a host's node needs, in `baton server` and in
// `baton worker` alike.
type hostConfig struct {
	// ID names the node; empty means the host name.
	ID               string
	DataDir          string
	Sandbox          string
	FakeStartLatency time.Duration
	MaxPayloadBytes  int64
	CodeLimits       archive.Limits
	CodeCacheBytes   int64
}

// newHostNode opens the host's image store, picks its sandboxes and
// creates its node. The returned function stops every instance and closes
// the image store.
func newHostNode(cfg hostConfig, code workerapi.CodeStore, log *slog.Logger) (*node.Worker, func(), error) {
	images, err := image.Open(filepath.Join(cfg.DataDir, "images"), log)
	if err != nil {
		return nil, nil, fmt.Errorf("image store: %w", err)
	}
	bases := &baseimage.Cache{Store: images}
	sandboxes, rootFS, err := chooseSandboxes(cfg, images, bases, log)
	if err != nil {
		images.Close()
		return nil, nil, err
	}
	id := cfg.ID
	if id == "" {
		id, _ = os.Hostname()
	}
	wk, err := node.New(node.Options{
		ID: id, DataDir: filepath.Join(cfg.DataDir, "worker"), Sandboxes: sandboxes,
		Code: code, Logger: log.With("component", "worker"), MaxResponseBytes: cfg.MaxPayloadBytes,
		RootFS: rootFS, Layers: images, Images: images, BaseImages: bases,
		ArchiveLimits: cfg.CodeLimits, CodeCacheBytes: cfg.CodeCacheBytes,
	})
	if err != nil {
		images.Close()
		return nil, nil, err
	}
	return wk, func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := wk.Close(closeCtx); err != nil {
			log.Warn("worker shutdown", "err", err)
		}
		images.Close()
	}, nil
}

// blobCode reads function code by digest from the code store, for a
// worker that is not beside a registry.
type blobCode struct{ blobs store.Blobs }

func (b blobCode) Code(ctx context.Context, digest string) (io.ReadCloser, error) {
	return b.blobs.GetBlob(ctx, digest)
}
