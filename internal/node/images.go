package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/baton-faas/baton/internal/image"
	"github.com/baton-faas/baton/internal/image/baseimage"
	"github.com/baton-faas/baton/internal/workerapi"
)

// The host's image store belongs to the worker: the control plane lists,
// checks, imports and removes images only through these calls.

// Images implements workerapi.Worker.
func (w *Worker) Images(ctx context.Context) ([]workerapi.Image, error) {
	if err := w.imageCall(ctx); err != nil {
		return nil, err
	}
	w.ensureBaseImages(ctx)
	imgs, err := w.opts.Images.List()
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	out := make([]workerapi.Image, len(imgs))
	for i, img := range imgs {
		out[i] = apiImage(img)
	}
	return out, nil
}

// CheckImage implements workerapi.Worker.
func (w *Worker) CheckImage(ctx context.Context, name string) error {
	if err := w.imageCall(ctx); err != nil {
		return err
	}
	if _, err := w.opts.Images.Get(name); err != nil {
		return imageError(name, err)
	}
	return nil
}

// ImportImage implements workerapi.Worker. The archive is spooled to a
// file beside the worker's data first: the importer reads it more than
// once.
func (w *Worker) ImportImage(ctx context.Context, name string, archive io.Reader) (workerapi.Image, error) {
	if err := w.imageCall(ctx); err != nil {
		return workerapi.Image{}, err
	}
	if err := image.ValidateName(name); err != nil {
		return workerapi.Image{}, err
	}
	dir := filepath.Join(w.opts.DataDir, "import")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return workerapi.Image{}, fmt.Errorf("import image %s: %w", name, err)
	}
	tmp, err := os.CreateTemp(dir, "image-*.tar")
	if err != nil {
		return workerapi.Image{}, fmt.Errorf("import image %s: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := io.Copy(tmp, contextReader{ctx, archive}); err != nil {
		return workerapi.Image{}, fmt.Errorf("import image %s: read archive: %w", name, err)
	}
	img, err := w.opts.Images.ImportArchive(ctx, tmp.Name(), name)
	if err != nil {
		return workerapi.Image{}, err
	}
	return apiImage(img), nil
}

// contextReader stops a copy once ctx ends.
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (c contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// RemoveImage implements workerapi.Worker. A removed runtime base image is
// built again when next needed.
func (w *Worker) RemoveImage(ctx context.Context, name string, inUse []string) error {
	if err := w.imageCall(ctx); err != nil {
		return err
	}
	err := w.opts.Images.Remove(name, func(string) bool { return len(inUse) > 0 })
	if errors.Is(err, image.ErrInUse) {
		return fmt.Errorf("remove image %s: %w: used by function(s) %v", name, workerapi.ErrImageInUse, inUse)
	}
	if err != nil {
		return imageError(name, err)
	}
	if w.opts.BaseImages != nil {
		w.opts.BaseImages.Forget(name)
	}
	if _, err := w.opts.Images.GC(ctx); err != nil {
		w.log.Warn("image layer collection", "err", err)
	}
	return nil
}

// imageCall checks what every image call needs.
func (w *Worker) imageCall(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if w.opts.Images == nil {
		return workerapi.ErrNoImageStore
	}
	return nil
}

func imageError(name string, err error) error {
	if errors.Is(err, image.ErrNotFound) {
		return fmt.Errorf("image %q: %w", name, workerapi.ErrImageNotFound)
	}
	return err
}

// ensureBaseImages builds the runtime base images this host can build, so
// that a listing shows them. Each is one build shared with the starts
// that need it and with Prepare's; none waits for another runtime's.
func (w *Worker) ensureBaseImages(ctx context.Context) {
	if w.opts.BaseImages == nil {
		return
	}
	// The cache logs why an image is missing; the listing shows the
	// others.
	_, _ = w.opts.BaseImages.GetAll(ctx, baseimage.Runtimes()...)
}

func apiImage(img image.Image) workerapi.Image {
	return workerapi.Image{
		Name: img.Name, ID: img.ID, Layers: img.Layers, Env: img.Env, Entrypoint: img.Entrypoint, Cmd: img.Cmd,
		WorkingDir: img.WorkingDir, User: img.User, Created: img.Created, Size: img.Size, Source: img.Source,
	}
}
