package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/baton-faas/baton/internal/sandbox"
	"github.com/baton-faas/baton/internal/workerapi"
)

// isolated reports whether sandboxes have their own root filesystem.
func (w *Worker) isolated() bool { return w.opts.RootFS != nil }

// appKey: one sandbox per application and image on this host. Functions
// of one app that need different images (a Python and a Node function)
// get one sandbox each; functions of different apps never share one.
func appKey(spec workerapi.InstanceSpec) string {
	return spec.App + "|" + spec.Spec.Image + "|" + spec.Spec.Runtime + "|" + spec.Spec.Network
}

// Per-instance memory beyond the function's memoryMB that a sandbox's
// limit allows for: the grain worker and the runtime client.
const (
	sandboxBaseMB  = 64
	grainWorkerMB  = 64
	minSandboxPIDs = 256
)

// acquireApp returns the sandbox for spec's app, creating it if needed,
// and counts one more instance (with its memory) against it.
func (w *Worker) acquireApp(ctx context.Context, spec workerapi.InstanceSpec, codeDir string) (*app, error) {
	key := appKey(spec)
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil, errors.New("worker is shutting down")
	}
	a, ok := w.apps[key]
	if ok {
		a.instances++
		a.memoryMB += spec.Spec.MemoryMB
		w.mu.Unlock()
		select {
		case <-a.ready:
		case <-ctx.Done():
			w.releaseApp(key, spec.Spec.MemoryMB)
			return nil, ctx.Err()
		}
		if a.err != nil {
			w.releaseApp(key, spec.Spec.MemoryMB)
			return nil, a.err
		}
		w.resize(ctx, a)
		return a, nil
	}
	a = &app{key: key, instances: 1, memoryMB: spec.Spec.MemoryMB, ready: make(chan struct{}),
		linked: map[string]bool{}}
	w.apps[key] = a
	w.mu.Unlock()

	a.err = w.createSandbox(ctx, a, spec, codeDir)
	close(a.ready)
	if a.err != nil {
		w.releaseApp(key, spec.Spec.MemoryMB)
		return nil, a.err
	}
	return a, nil
}

func (w *Worker) createSandbox(ctx context.Context, a *app, spec workerapi.InstanceSpec, codeDir string) error {
	sbSpec := sandbox.Spec{
		ID: newID("sb-"), App: spec.App, Network: spec.Spec.Network,
		MemoryMB: a.limitMB(), PIDs: minSandboxPIDs,
		Mounts: []sandbox.Mount{{Source: filepath.Dir(w.runtimes.Python), Target: runtimeMount}},
	}
	if !w.isolated() {
		// Without isolation the code cache itself is the task root.
		sbSpec.Mounts = append(sbSpec.Mounts, sandbox.Mount{Source: filepath.Dir(codeDir), Target: taskMount})
	} else {
		img, err := w.opts.RootFS.RootFS(ctx, spec.Spec.Runtime, spec.Spec.Image)
		if err != nil {
			return fmt.Errorf("root filesystem for app %s: %w", spec.App, err)
		}
		a.image = img
		a.taskDir = filepath.Join(w.opts.DataDir, "sandboxes", sbSpec.ID, "task")
		if err := os.MkdirAll(a.taskDir, 0o755); err != nil {
			img.Release()
			return fmt.Errorf("sandbox task dir: %w", err)
		}
		sbSpec.RootLowerDirs = img.LowerDirs
		sbSpec.Mounts = append(sbSpec.Mounts, sandbox.Mount{Source: a.taskDir, Target: taskMount})
	}
	sb, err := w.opts.Sandboxes.Create(ctx, sbSpec)
	if err != nil {
		a.cleanupFiles()
		return fmt.Errorf("create sandbox for app %s: %w", spec.App, err)
	}
	a.sb = sb
	// Only sandboxes that report OOM kills get a broadcast channel; a nil
	// one means "never".
	if n, ok := sb.(sandbox.OOMNotifier); ok {
		ch := make(chan struct{})
		a.oom.Store(&ch)
		go w.watchOOM(a, n.OOMEvents())
	}
	return nil
}

func (a *app) limitMB() int {
	return sandboxBaseMB + a.memoryMB + grainWorkerMB
}

func (a *app) cleanupFiles() {
	if a.image.Release != nil {
		a.image.Release()
	}
	if a.taskDir != "" {
		_ = os.RemoveAll(filepath.Dir(a.taskDir))
	}
}

// watchOOM turns the sandbox's OOM kills into a broadcast that invocations
// of dying instances check to say "out of memory" instead of "crashed".
func (w *Worker) watchOOM(a *app, events <-chan struct{}) {
	for {
		select {
		case <-w.stop:
			return
		case _, ok := <-events:
			if !ok {
				return
			}
			next := make(chan struct{})
			close(*a.oom.Swap(&next))
			w.log.Warn("out-of-memory kill in sandbox", "app", a.key)
		}
	}
}

// resize sets the sandbox's memory limit to what its instances need.
func (w *Worker) resize(ctx context.Context, a *app) {
	w.mu.Lock()
	limit := a.limitMB()
	w.mu.Unlock()
	if a.sb == nil {
		return
	}
	if err := a.sb.Resize(ctx, sandbox.Resources{MemoryMB: limit, PIDs: minSandboxPIDs}); err != nil {
		w.log.Debug("resize sandbox", "app", a.key, "memoryMB", limit, "err", err)
	}
}

// releaseApp drops one instance; the last one destroys the sandbox.
func (w *Worker) releaseApp(key string, memoryMB int) {
	w.mu.Lock()
	a, ok := w.apps[key]
	if !ok {
		w.mu.Unlock()
		return
	}
	a.instances--
	a.memoryMB -= memoryMB
	if a.instances > 0 {
		w.mu.Unlock()
		w.resize(context.Background(), a)
		return
	}
	delete(w.apps, key)
	w.releases++ // Close no longer sees the app, but must wait for this
	w.mu.Unlock()
	w.destroyApp(a)
	w.endRelease()
}

func (w *Worker) destroyApp(a *app) {
	if a.sb != nil {
		if err := a.sb.Destroy(context.Background()); err != nil {
			w.log.Warn("destroy sandbox", "app", a.key, "err", err)
		}
	}
	a.cleanupFiles()
}

// taskRoot makes the version's code visible in the sandbox and returns its
// path there. Isolated sandboxes see only the code of their own app:
// it is hard-linked (cheap, read-only through the bind mount) from the
// host's code cache into the sandbox's task directory.
func (w *Worker) taskRoot(a *app, digest, codeDir string) (string, error) {
	hexDigest := strings.TrimPrefix(digest, "sha256:")
	if !w.isolated() {
		return filepath.Join(a.sb.Path(taskMount), hexDigest), nil
	}
	a.codeMu.Lock()
	defer a.codeMu.Unlock()
	if !a.linked[digest] {
		dst := filepath.Join(a.taskDir, hexDigest)
		if err := linkTree(codeDir, dst); err != nil {
			_ = os.RemoveAll(dst)
			return "", fmt.Errorf("place code in sandbox: %w", err)
		}
		a.linked[digest] = true
	}
	return filepath.Join(taskMount, hexDigest), nil
}

// linkTree recreates src at dst with hard links (copies across
// filesystems) and the same symlinks.
func linkTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		default:
			if err := os.Link(path, target); err == nil {
				return nil
			} else if !errors.Is(err, syscall.EXDEV) {
				return err
			}
			return copyFile(path, target)
		}
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, st.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
