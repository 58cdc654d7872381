package controller

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/image/baseimage"
	"github.com/baton-faas/baton/internal/workerapi"
)

// Images are the worker's: the controller asks for them through the
// worker API and never touches the host's image store.

// Images lists the worker's images, building the runtime base images first.
func (c *Controller) Images(ctx context.Context) ([]workerapi.Image, error) {
	return c.worker.Images(ctx)
}

// ImportImage stores the image read from archive (an OCI layout tarball
// or docker-save archive, optionally gzipped) under name.
func (c *Controller) ImportImage(ctx context.Context, name string, archive io.Reader) (workerapi.Image, error) {
	return c.worker.ImportImage(ctx, name, archive)
}

// RemoveImage deletes an image no function uses, then collects its
// layers. The functions that use it (by name, or a runtime's base image
// by default) come from the registry.
func (c *Controller) RemoveImage(ctx context.Context, name string) error {
	fns, err := c.reg.List(ctx)
	if err != nil {
		return err
	}
	var users []string
	for _, f := range fns {
		if f.Spec.Image == name || (f.Spec.Image == "" && name == baseimage.ImageName(baseimage.Runtime(f.Spec.Runtime))) {
			users = append(users, f.Name)
		}
	}
	return c.worker.RemoveImage(ctx, name, users)
}

// checkImage makes sure a spec names an image the worker has.
func (c *Controller) checkImage(ctx context.Context, spec function.Spec) error {
	if spec.Image == "" {
		return nil
	}
	err := c.worker.CheckImage(ctx, spec.Image)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, workerapi.ErrNoImageStore):
		return fmt.Errorf("%w: image %q: %w", function.ErrInvalid, spec.Image, err)
	case errors.Is(err, workerapi.ErrImageNotFound):
		return fmt.Errorf("%w: image %q not found (see baton image ls; import one with baton image import)", function.ErrInvalid, spec.Image)
	}
	return err
}
