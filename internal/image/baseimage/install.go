package baseimage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"

	"github.com/baton-faas/baton/internal/image"
)

// ImageName is the name under which the base image of rt is stored.
func ImageName(rt Runtime) string { return "baton/" + string(rt) }

// Ensure makes sure the store holds the current base image of rt: a stored
// image whose layer the host still gives unchanged (same digest) is kept,
// otherwise the layer is built from the host's interpreter and stored, so
// a changed host interpreter yields a new image.
func Ensure(ctx context.Context, store *image.Store, rt Runtime) (image.Image, error) {
	img, _, err := ensure(ctx, store, rt, build, nil)
	return img, err
}

// buildFunc writes the base image of rt to w as a tar: build, or a test's
// stand-in.
type buildFunc func(ctx context.Context, rt Runtime, w io.Writer, o buildOptions) (Info, error)

// ensure is Ensure with the builder and its pause (buildOptions) given;
// stored says whether a new image was stored (false: the stored one is
// current).
func ensure(ctx context.Context, store *image.Store, rt Runtime, build buildFunc, pause func() error) (img image.Image, stored bool, err error) {
	name := ImageName(rt)
	cur, err := store.Get(name)
	switch {
	case err == nil && len(cur.Layers) == 1:
		// A restart: hashing the tar, written nowhere, says whether the
		// host's files still make the stored layer, at a fraction of a
		// conversion's cost.
		if _, err := store.Layer(cur.Layers[0]); err == nil {
			info, err := build(ctx, rt, io.Discard, buildOptions{pause: pause, digest: true})
			if err != nil {
				return image.Image{}, false, fmt.Errorf("base image %s: %w", rt, err)
			}
			if info.Digest == cur.Layers[0] {
				return cur, false, nil
			}
		}
	case err != nil && !errors.Is(err, image.ErrNotFound):
		return image.Image{}, false, err
	}
	info, layer, err := buildLayer(ctx, store, rt, build, pause)
	if err != nil {
		return image.Image{}, false, fmt.Errorf("base image %s: %w", rt, err)
	}
	// The image record is written last, whole or not at all: a build cut
	// short leaves at most a layer no image names, which GC removes.
	img, err = store.PutImage(ctx, image.Image{
		Name:   name,
		Layers: []string{layer.DiffID},
		Env: []string{
			"PATH=" + path.Dir(info.Interpreter) + ":/usr/local/bin:/usr/bin:/bin",
			"LANG=C.UTF-8",
		},
		Cmd:    []string{info.Interpreter},
		Source: fmt.Sprintf("baton: host %s %s", rt, info.Version),
	})
	if err != nil {
		return image.Image{}, false, err
	}
	return img, true, nil
}

// errConversionDone ends a build whose tar the store stopped reading.
var errConversionDone = errors.New("the layer conversion stopped reading")

// buildLayer streams the build into the store's layer conversion: the tar
// is never written out whole, and building and converting run side by
// side.
func buildLayer(ctx context.Context, store *image.Store, rt Runtime, build buildFunc, pause func() error) (Info, image.Layer, error) {
	pr, pw := io.Pipe()
	type built struct {
		info Info
		err  error
	}
	done := make(chan built, 1)
	go func() {
		// No digest: the store hashes what it reads (the layer's diffID).
		info, err := build(ctx, rt, pw, buildOptions{pause: pause})
		pw.CloseWithError(err) // nil: the reader sees the end of the tar
		done <- built{info, err}
	}()
	layer, convErr := store.AddLayerFromTar(ctx, pr)
	// A build still writing (the conversion failed) gets an error rather
	// than blocking; it is waited for before returning either way.
	pr.CloseWithError(errConversionDone)
	b := <-done
	switch {
	case b.err != nil && !errors.Is(b.err, errConversionDone):
		return Info{}, image.Layer{}, b.err // the cause; the conversion saw only a broken stream
	case convErr != nil:
		return Info{}, image.Layer{}, convErr
	case b.err != nil:
		return Info{}, image.Layer{}, b.err
	}
	b.info.Digest = layer.DiffID
	return b.info, layer, nil
}
