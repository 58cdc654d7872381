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

// Images are the workers': the controller asks for them through the
// worker API and never touches a host's image store. Until images are
// replicated between hosts, the local worker (or, without one, any worker)
// answers for them.

// Images lists the worker's images, building the runtime base images first.
func (c *Controller) Images(ctx context.Context) ([]workerapi.Image, error) {
	w, err := c.anyWorker()
	if err != nil {
		return nil, err
	}
	return w.Images(ctx)
}

// ImportImage stores the image read from archive (an OCI layout tarball
// or docker-save archive, optionally gzipped) under name.
func (c *Controller) ImportImage(ctx context.Context, name string, archive io.Reader) (workerapi.Image, error) {
	w, err := c.anyWorker()
	if err != nil {
		return workerapi.Image{}, err
	}
	return w.ImportImage(ctx, name, archive)
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
	w, err := c.anyWorker()
	if err != nil {
		return err
	}
	return w.RemoveImage(ctx, name, users)
}

// checkImage makes sure a spec names an image the worker has.
func (c *Controller) checkImage(ctx context.Context, spec function.Spec) error {
	if spec.Image == "" {
		return nil
	}
	w, err := c.anyWorker()
	if err == nil {
		err = w.CheckImage(ctx, spec.Image)
	}
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
