package assemble

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/baton-faas/baton/internal/image"
	"github.com/baton-faas/baton/internal/image/baseimage"
	"github.com/baton-faas/baton/internal/node"
	"github.com/baton-faas/baton/internal/runtimes"
	"github.com/baton-faas/baton/internal/runtimes/provided"
)

// imageRootFS gives container sandboxes their root filesystem from the
// image store: the named image, or the host's runtime base images built
// from the host's interpreters.
type imageRootFS struct {
	store *image.Store
	base  *baseimage.Cache
	log   *slog.Logger
	// unavailable holds the optional runtimes whose base image could not
	// be built: a host without Node says so once and does not try again
	// for every sandbox.
	unavailable *sync.Map
}

// hostRuntimes are the runtimes whose base images make up the root of a
// sandbox that names no image and may mix runtimes.
var hostRuntimes = runtimes.Names()

// shellRuntime's base image (C library, POSIX shell, sleep, setsid; a few
// MB) is in every root of host runtimes, as it was when every root held
// every runtime: functions expect /bin/sh (Python's os.system and
// subprocess with shell=True, Node's child_process.exec).
const shellRuntime = provided.Name

// RootFS implements node.RootFSProvider.
func (p imageRootFS) RootFS(ctx context.Context, runtime, name string, mixed bool) (node.RootImage, error) {
	if name != "" {
		img, err := p.store.Get(name)
		if err != nil {
			return node.RootImage{}, fmt.Errorf("image for runtime %s: %w", runtime, err)
		}
		return p.mount(ctx, []image.Image{img}, nil)
	}
	// The runtime's own base image first (required, and top-most), then
	// the optional ones. Base images come from one host, so the files
	// they share (the C library, /etc) are the same in each.
	order := []string{runtime}
	for _, rt := range hostRuntimes {
		if rt != runtime && (mixed || rt == shellRuntime) {
			order = append(order, rt)
		}
	}
	rts := make([]baseimage.Runtime, 0, len(order))
	for i, rt := range order {
		if _, skip := p.unavailable.Load(rt); !skip || i == 0 {
			rts = append(rts, baseimage.Runtime(rt))
		}
	}
	began := time.Now()
	got, errs := p.base.GetAll(ctx, rts...)
	var imgs []image.Image
	interps := map[string]string{}
	for i, rt := range rts {
		img, err := got[i], errs[i]
		if err != nil {
			if i == 0 {
				return node.RootImage{}, fmt.Errorf("base image for runtime %s: %w", runtime, err)
			}
			if ctx.Err() != nil {
				return node.RootImage{}, err
			}
			p.unavailable.Store(string(rt), true)
			p.log.Warn("runtime base image unavailable; sandboxes leave it out, and that runtime's functions cannot start in them until the server restarts", "runtime", rt, "err", err)
			continue
		}
		imgs = append(imgs, img)
		// Runtimes without an interpreter run the function's own
		// executable; the image's command (a shell) is not theirs.
		if d, ok := runtimes.Lookup(string(rt)); ok && d.Interpreter() != "" && len(img.Cmd) > 0 {
			interps[string(rt)] = img.Cmd[0]
		}
	}
	built := time.Now()
	root, err := p.mount(ctx, imgs, interps)
	if err == nil {
		p.log.Debug("sandbox root", "image", root.Name, "base-images", built.Sub(began), "mount", time.Since(built))
	}
	return root, err
}

// mount mounts the layers of imgs, the first image's on top.
func (p imageRootFS) mount(ctx context.Context, imgs []image.Image, interps map[string]string) (node.RootImage, error) {
	root := node.RootImage{Interpreters: interps}
	var releases []func()
	release := func() {
		for _, r := range releases {
			r()
		}
	}
	var names, paths []string
	for _, img := range imgs {
		lower, rel, err := p.store.RootFS(ctx, img)
		if err != nil {
			release()
			return node.RootImage{}, err
		}
		releases = append(releases, rel)
		for _, l := range lower {
			// Layers shared by two images are one lower dir.
			if !slices.Contains(root.LowerDirs, l) {
				root.LowerDirs = append(root.LowerDirs, l)
			}
		}
		names = append(names, img.Name)
		for _, kv := range img.Env {
			if v, ok := strings.CutPrefix(kv, "PATH="); ok {
				for _, dir := range strings.Split(v, ":") {
					if !slices.Contains(paths, dir) {
						paths = append(paths, dir)
					}
				}
			} else if !slices.ContainsFunc(root.Env, func(e string) bool { return strings.SplitN(e, "=", 2)[0] == strings.SplitN(kv, "=", 2)[0] }) {
				root.Env = append(root.Env, kv)
			}
		}
	}
	if len(paths) > 0 {
		root.Env = append(root.Env, "PATH="+strings.Join(paths, ":"))
	}
	root.Name = strings.Join(names, "+")
	root.Release = release
	return root, nil
}
