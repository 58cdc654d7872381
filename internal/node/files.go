package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/baton-faas/baton/internal/image"
	"github.com/baton-faas/baton/internal/runtimes"
	"github.com/baton-faas/baton/internal/sandbox"
	"github.com/baton-faas/baton/internal/workerapi"
)

// Paths as processes inside a sandbox see them.
const (
	taskMount    = "/var/task"
	runtimeMount = "/opt/baton/runtime"
)

// sandboxFiles is how this host's sandboxes get their files, chosen once
// in New: hostFiles when they see the host's own (process and fake
// sandboxes), imageFiles when each has a root of its own made of images,
// with functions' code as read-only layers (containers, Options.RootFS).
// Everything that differs between the two is here.
type sandboxFiles interface {
	// adopt takes over the code a previous run of the worker left.
	adopt() error
	// prepare makes digest's code available on this host, building it
	// once per host, and returns its host directory ("" when the code is
	// a layer that only a sandbox's view shows).
	prepare(ctx context.Context, digest string) (string, error)
	// remove deletes digest's code from this host.
	remove(ctx context.Context, digest, hexDigest string) error
	// root gives the spec of a's sandbox its root and its task mount.
	root(ctx context.Context, a *app, spec workerapi.InstanceSpec, codeDir string, sb *sandbox.Spec) error
	// taskRoot makes digest's code visible in a's sandbox and returns its
	// path there and a host path of the same files.
	taskRoot(ctx context.Context, a *app, digest, codeDir string) (inSandbox, onHost string, err error)
	// interpreter returns the path, as a's sandbox sees it, of the
	// interpreter that runs drv's client ("" when drv needs none).
	interpreter(a *app, spec workerapi.InstanceSpec, drv runtimes.Driver) (string, error)
	// env adjusts an instance's environment to what its sandbox holds.
	env(a *app, env map[string]string)
	// cleanup releases what a's root was made of; the sandbox is gone.
	cleanup(a *app)
}

// hostFiles: sandboxes see the host's files. Code is unpacked into the
// host's code cache, which is every sandbox's /var/task, and runtimes use
// the host's interpreters.
type hostFiles struct{ w *Worker }

func (hostFiles) adopt() error { return nil }

func (f hostFiles) prepare(ctx context.Context, digest string) (string, error) {
	return f.w.unpackedCode(ctx, digest)
}

func (f hostFiles) remove(_ context.Context, _, hexDigest string) error {
	return os.RemoveAll(filepath.Join(f.w.opts.DataDir, "code", hexDigest))
}

func (hostFiles) root(_ context.Context, _ *app, _ workerapi.InstanceSpec, codeDir string, sb *sandbox.Spec) error {
	sb.Mounts = append(sb.Mounts, sandbox.Mount{Source: filepath.Dir(codeDir), Target: taskMount})
	return nil
}

func (hostFiles) taskRoot(_ context.Context, a *app, digest, codeDir string) (string, string, error) {
	hexDigest, err := codeHex(digest)
	if err != nil {
		return "", "", err
	}
	return filepath.Join(a.sb.Path(taskMount), hexDigest), codeDir, nil
}

func (f hostFiles) interpreter(_ *app, _ workerapi.InstanceSpec, drv runtimes.Driver) (string, error) {
	if !f.w.caps.Programs {
		// The runtime executes nothing (the fake): the interpreter's
		// name is all the command needs.
		return drv.Interpreter(), nil
	}
	return f.w.interps.find(drv)
}

func (hostFiles) env(*app, map[string]string) {}

func (hostFiles) cleanup(*app) {}

// imageFiles: each sandbox's root is made of images (Options.RootFS) and
// its /var/task is a view to which the versions' code layers are
// attached (Options.Layers).
type imageFiles struct{ w *Worker }

func (f imageFiles) adopt() error { return f.w.adoptCodeLayers() }

func (f imageFiles) prepare(ctx context.Context, digest string) (string, error) {
	_, err := f.w.codeLayer(ctx, digest)
	return "", err
}

func (f imageFiles) remove(ctx context.Context, _, hexDigest string) error {
	// The layer goes with its ref unless a sandbox still shows it (it
	// cannot: sandboxes hold the code they show).
	return f.w.opts.Layers.DeleteRef(ctx, codeRefPrefix+hexDigest)
}

func (f imageFiles) root(ctx context.Context, a *app, spec workerapi.InstanceSpec, _ string, sb *sandbox.Spec) error {
	img, err := f.w.opts.RootFS.RootFS(ctx, spec.Spec.Runtime, spec.Spec.Image, mixedRuntimes(spec))
	if err != nil {
		return fmt.Errorf("root filesystem for app %s: %w", spec.App, err)
	}
	a.image = img
	// The versions' code layers are attached to the view while the
	// sandbox runs; its /var/task is a slave of the view, so they appear
	// there without files linked or copied (see taskRoot).
	if a.task, err = f.w.opts.Layers.NewView(sb.ID); err != nil {
		img.Release()
		a.image = RootImage{}
		return fmt.Errorf("sandbox task directory: %w", err)
	}
	sb.RootLowerDirs = img.LowerDirs
	sb.Mounts = append(sb.Mounts, sandbox.Mount{Source: a.task.Path(), Target: taskMount, Propagate: true})
	return nil
}

// taskRoot: an isolated sandbox sees only the code of its own app: the
// version's code layer, mounted once per host, is attached to the
// sandbox's task view and so appears read-only at /var/task/<hex> in the
// running sandbox. The sandbox holds the code until it is destroyed.
func (f imageFiles) taskRoot(ctx context.Context, a *app, digest, _ string) (string, string, error) {
	w := f.w
	hexDigest, err := codeHex(digest)
	if err != nil {
		return "", "", err
	}
	// Per digest: attaching may fetch and build the layer, which other
	// versions of the app need not wait for.
	unlock := a.attaching.Lock(digest)
	defer unlock()
	a.codeMu.Lock()
	attached := a.codes[digest]
	a.codeMu.Unlock()
	if !attached {
		if err := w.attachCode(ctx, a, digest, hexDigest); err != nil {
			return "", "", fmt.Errorf("place code in sandbox: %w", err)
		}
		w.holdCode(digest)
		a.codeMu.Lock()
		closed := a.codes == nil
		if !closed {
			a.codes[digest] = true
		}
		a.codeMu.Unlock()
		if closed {
			w.releaseCode(digest)
			return "", "", errors.New("place code in sandbox: the sandbox is gone")
		}
	}
	return path.Join(taskMount, hexDigest), filepath.Join(a.task.Path(), hexDigest), nil
}

func (imageFiles) interpreter(a *app, spec workerapi.InstanceSpec, drv runtimes.Driver) (string, error) {
	if interp := a.image.Interpreters[drv.Name()]; interp != "" {
		return interp, nil
	}
	if drv.Interpreter() != "" && spec.Spec.Image == "" {
		// The host runtimes' root lacks this runtime: its base image
		// could not be built when the sandbox was made.
		return "", fmt.Errorf("runtime %s is not available in app %s's sandbox: its base image could not be built on this host (see the server log)", drv.Name(), spec.App)
	}
	// A custom image: the interpreter is looked up on its PATH.
	return drv.Interpreter(), nil
}

func (imageFiles) env(a *app, env map[string]string) {
	// Inside the sandbox only the image's files exist.
	env["HOME"] = "/tmp"
	env["PATH"] = ""
	for _, kv := range a.image.Env {
		if p, ok := strings.CutPrefix(kv, "PATH="); ok {
			env["PATH"] = p
		}
	}
}

func (f imageFiles) cleanup(a *app) {
	if a.task != nil {
		if err := a.task.Close(); err != nil {
			f.w.log.Error("remove sandbox task directory", "app", a.key, "err", err)
		}
		a.codeMu.Lock()
		codes := a.codes
		a.codes = nil // an attach finishing now releases its own hold
		a.codeMu.Unlock()
		for digest := range codes {
			f.w.releaseCode(digest)
		}
	}
	if a.image.Release != nil {
		a.image.Release()
	}
}

// attachCode attaches the code layer to the app's view. A layer file that
// fails its digest check is never mounted: it is deleted and built again
// from the code archive, which is the source of truth.
func (w *Worker) attachCode(ctx context.Context, a *app, digest, hexDigest string) error {
	for attempt := 0; ; attempt++ {
		diffID, err := w.codeLayer(ctx, digest)
		if err != nil {
			return err
		}
		_, err = a.task.Attach(ctx, hexDigest, diffID)
		if err == nil || !errors.Is(err, image.ErrCorrupt) || attempt > 0 {
			return err
		}
		w.log.Warn("code layer failed its digest check; building it again", "digest", digest, "err", err)
		unlock := w.codeLocks.Lock(digest)
		err = w.opts.Layers.DeleteRef(ctx, codeRefPrefix+hexDigest)
		unlock()
		if err != nil {
			return err
		}
	}
}
