package server

import (
	"context"
	"fmt"

	"github.com/baton-faas/baton/internal/baseimage"
	"github.com/baton-faas/baton/internal/image"
	"github.com/baton-faas/baton/internal/worker"
)

// imageRootFS gives container sandboxes their root filesystem from the
// image store: the named image, or the runtime's base image built from
// the host's interpreter.
type imageRootFS struct {
	store *image.Store
	base  *baseimage.Cache
}

// RootFS implements worker.RootFSProvider.
func (p imageRootFS) RootFS(ctx context.Context, runtime, name string) (worker.RootImage, error) {
	var img image.Image
	var err error
	interp := ""
	if name == "" {
		// Runtime provided gets baseimage.Provided: a C library, CA
		// certificates, /etc files and a POSIX shell, which static,
		// dynamically linked and shell-script bootstraps need.
		img, err = p.base.Get(ctx, baseimage.Runtime(runtime))
		if err == nil && len(img.Cmd) > 0 {
			interp = img.Cmd[0]
		}
	} else {
		img, err = p.store.Get(name)
	}
	if err != nil {
		return worker.RootImage{}, fmt.Errorf("image for runtime %s: %w", runtime, err)
	}
	lower, release, err := p.store.RootFS(ctx, img)
	if err != nil {
		return worker.RootImage{}, err
	}
	return worker.RootImage{Name: img.Name, LowerDirs: lower, Env: img.Env, Interpreter: interp, Release: release}, nil
}
