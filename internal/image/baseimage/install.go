package baseimage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sync"

	"github.com/baton-faas/baton/internal/image"
)

// ImageName is the name under which the base image of rt is stored.
func ImageName(rt Runtime) string { return "baton/" + string(rt) }

// Ensure makes sure the store holds the current base image of rt: it
// builds the layer from the host's interpreter and stores it unless the
// stored image already has exactly that layer (same digest), so a changed
// host interpreter yields a new image and an unchanged one costs one build
// of the tar.
func Ensure(ctx context.Context, store *image.Store, rt Runtime) (image.Image, error) {
	tmp, err := os.CreateTemp("", "baton-base-*.tar")
	if err != nil {
		return image.Image{}, fmt.Errorf("base image %s: %w", rt, err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	info, err := Build(ctx, rt, tmp)
	if err != nil {
		return image.Image{}, fmt.Errorf("base image %s: %w", rt, err)
	}
	name := ImageName(rt)
	if cur, err := store.Get(name); err == nil && len(cur.Layers) == 1 && cur.Layers[0] == info.Digest {
		return cur, nil
	} else if err != nil && !errors.Is(err, image.ErrNotFound) {
		return image.Image{}, err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return image.Image{}, err
	}
	layer, err := store.AddLayerFromTar(ctx, tmp)
	if err != nil {
		return image.Image{}, fmt.Errorf("base image %s: %w", rt, err)
	}
	return store.PutImage(ctx, image.Image{
		Name:   name,
		Layers: []string{layer.DiffID},
		Env: []string{
			"PATH=" + path.Dir(info.Interpreter) + ":/usr/local/bin:/usr/bin:/bin",
			"LANG=C.UTF-8",
		},
		Cmd:    []string{info.Interpreter},
		Source: fmt.Sprintf("baton: host %s %s", rt, info.Version),
	})
}

// Cache builds each runtime's base image at most once per process (and
// again after Forget), on first need, so that a server that never uses
// images pays nothing.
type Cache struct {
	Store *image.Store

	mu   sync.Mutex
	done map[Runtime]image.Image
}

// Get returns the base image of rt, building it if needed.
func (c *Cache) Get(ctx context.Context, rt Runtime) (image.Image, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if img, ok := c.done[rt]; ok {
		return img, nil
	}
	img, err := Ensure(ctx, c.Store, rt)
	if err != nil {
		return image.Image{}, err
	}
	if c.done == nil {
		c.done = map[Runtime]image.Image{}
	}
	c.done[rt] = img
	return img, nil
}

// Forget drops a cached image (after it was removed from the store).
func (c *Cache) Forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for rt, img := range c.done {
		if img.Name == name {
			delete(c.done, rt)
		}
	}
}
