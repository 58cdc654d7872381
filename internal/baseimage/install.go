package baseimage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"

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
