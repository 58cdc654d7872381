package controller

import (
	"context"
	"errors"
	"fmt"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/image"
	"github.com/baton-faas/baton/internal/image/baseimage"

	"github.com/baton-faas/baton/internal/errdefs"
)

// ErrNoImageStore is returned when the server runs without an image store.
var ErrNoImageStore = errdefs.New(errdefs.NotImplemented, "no_image_store", "this server has no image store")

func (c *Controller) ensureBaseImages(ctx context.Context) {
	for _, rt := range []baseimage.Runtime{baseimage.Python, baseimage.Node, baseimage.Provided} {
		img, err := c.base.Get(ctx, rt)
		switch {
		case errors.Is(err, baseimage.ErrNoInterpreter):
			c.log.Debug("no base image: interpreter not installed on this host", "runtime", rt)
		case err != nil:
			c.log.Warn("base image not built", "runtime", rt, "err", err)
		default:
			c.log.Debug("base image ready", "image", img.Name, "size", img.Size)
		}
	}
}

// Images lists the stored images, building the runtime base images first.
func (c *Controller) Images(ctx context.Context) ([]image.Image, error) {
	if c.images == nil {
		return nil, ErrNoImageStore
	}
	c.ensureBaseImages(ctx)
	return c.images.List()
}

// ImportImage stores the image in an OCI layout tarball or docker-save
// archive at path under name.
func (c *Controller) ImportImage(ctx context.Context, name, path string) (image.Image, error) {
	if c.images == nil {
		return image.Image{}, ErrNoImageStore
	}
	if err := image.ValidateName(name); err != nil {
		return image.Image{}, err
	}
	return c.images.ImportArchive(ctx, path, name)
}

// RemoveImage deletes an image no function uses, then collects its layers.
func (c *Controller) RemoveImage(ctx context.Context, name string) error {
	if c.images == nil {
		return ErrNoImageStore
	}
	fns, err := c.reg.List(ctx)
	if err != nil {
		return err
	}
	var users []string
	inUse := func(n string) bool {
		for _, f := range fns {
			if f.Spec.Image == n || (f.Spec.Image == "" && n == baseimage.ImageName(baseimage.Runtime(f.Spec.Runtime))) {
				users = append(users, f.Name)
			}
		}
		return len(users) > 0
	}
	if err := c.images.Remove(name, inUse); err != nil {
		if errors.Is(err, image.ErrInUse) {
			return fmt.Errorf("%w: used by function(s) %v", err, users)
		}
		return err
	}
	// A removed base image is built again when next needed.
	c.base.Forget(name)
	if _, err := c.images.GC(ctx); err != nil {
		c.log.Warn("image layer collection", "err", err)
	}
	return nil
}

// checkImage makes sure a spec names an image that exists.
func (c *Controller) checkImage(spec function.Spec) error {
	if spec.Image == "" {
		return nil
	}
	if c.images == nil {
		return fmt.Errorf("%w: image %q: %w", function.ErrInvalid, spec.Image, ErrNoImageStore)
	}
	if _, err := c.images.Get(spec.Image); err != nil {
		if errors.Is(err, image.ErrNotFound) {
			return fmt.Errorf("%w: image %q not found (see baton image ls; import one with baton image import)", function.ErrInvalid, spec.Image)
		}
		return err
	}
	return nil
}
