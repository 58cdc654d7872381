package image

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// View is a host directory into which mounted layers are attached, each
// at <dir>/<name> and read-only. The directory is a mount point of its own
// with shared propagation: a mount namespace holding a slave bind of it
// (a running sandbox's /var/task) sees layers attached later appear, and
// detached ones disappear, with no files linked or copied. Every attached
// layer is the store's one mount of that layer, so all views share its
// page cache.
//
// A view lives under the store's root (views/<id>); Close removes it, and
// Open unmounts and removes views left by a crashed run.
type View struct {
	s   *Store
	id  string
	dir string

	// mu serialises attaching and closing; they mount, so it is held
	// across that I/O, but only for this view.
	mu       sync.Mutex
	attached map[string]func() // name -> release of the layer mount
	closed   bool
}

// validViewName accepts one path component made of [A-Za-z0-9_.-].
func validViewName(n string) bool {
	if n == "" || n == "." || n == ".." || len(n) > 128 {
		return false
	}
	for _, c := range n {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

// NewView creates the view called id (one path component; unique among
// the store's open views).
func (s *Store) NewView(id string) (*View, error) {
	if !validViewName(id) {
		return nil, fmt.Errorf("view %q: want a name of [A-Za-z0-9_.-]", id)
	}
	v := &View{s: s, id: id, dir: filepath.Join(s.root, "views", id), attached: map[string]func(){}}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	if s.views[id] != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("view %s: already exists", id)
	}
	s.views[id] = v
	s.mu.Unlock()

	if err := v.setup(); err != nil {
		_ = v.teardown()
		s.mu.Lock()
		delete(s.views, id)
		s.mu.Unlock()
		return nil, err
	}
	return v, nil
}

// setup makes the view's directory a shared mount point in a peer group of
// its own: the bind onto itself makes it a mount point, private leaves the
// peer group of the file system it lives on (so nothing attached here
// spreads to the rest of the host), and shared starts a new group whose
// slaves are the sandboxes' binds of it.
func (v *View) setup() error {
	// 0755: the directory is /var/task for unprivileged function users.
	if err := os.Mkdir(v.dir, 0o755); err != nil {
		return fmt.Errorf("view %s: %w", v.id, err)
	}
	steps := []struct {
		src   string
		flags uintptr
	}{
		{v.dir, unix.MS_BIND},
		{"", unix.MS_PRIVATE},
		{"", unix.MS_SHARED},
	}
	for _, st := range steps {
		if err := unix.Mount(st.src, v.dir, "", st.flags, ""); err != nil {
			return fmt.Errorf("view %s: mount(%#x) %s: %w", v.id, st.flags, v.dir, err)
		}
	}
	return nil
}

// Path is the view's host directory.
func (v *View) Path() string { return v.dir }

// Attach mounts the layer diffID (verifying it first if it is not mounted
// yet, see Store.Mount) and makes it visible read-only at <dir>/<name>. It
// returns that path. Attaching a name that is already attached is a no-op.
func (v *View) Attach(ctx context.Context, name, diffID string) (string, error) {
	if !validViewName(name) {
		return "", fmt.Errorf("view %s: bad name %q", v.id, name)
	}
	target := filepath.Join(v.dir, name)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return "", fmt.Errorf("view %s: closed", v.id)
	}
	if _, ok := v.attached[name]; ok {
		return target, nil
	}
	src, release, err := v.s.Mount(ctx, diffID)
	if err != nil {
		return "", fmt.Errorf("view %s: %w", v.id, err)
	}
	if err := os.Mkdir(target, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		release()
		return "", fmt.Errorf("view %s: %w", v.id, err)
	}
	if err := bindReadOnly(src, target); err != nil {
		_ = os.Remove(target)
		release()
		return "", fmt.Errorf("view %s: attach layer %s at %s: %w", v.id, diffID, name, err)
	}
	v.attached[name] = release
	return target, nil
}

// bindReadOnly binds src at dst read-only, nosuid and nodev. The bind is
// built detached and then moved into place, so that the copies propagated
// to sandboxes are created with those flags (a later remount would not
// propagate). Kernels before 5.12 lack mount_setattr; there a plain bind
// is used, which stays read-only because the layer's file system is.
func bindReadOnly(src, dst string) error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if errors.Is(err, unix.ENOSYS) {
		return unix.Mount(src, dst, "", unix.MS_BIND, "")
	}
	if err != nil {
		return fmt.Errorf("open_tree %s: %w", src, err)
	}
	defer unix.Close(fd)
	attr := &unix.MountAttr{
		Attr_set:    unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV,
		Propagation: unix.MS_PRIVATE,
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, attr); errors.Is(err, unix.ENOSYS) {
		return unix.Mount(src, dst, "", unix.MS_BIND, "")
	} else if err != nil {
		return fmt.Errorf("mount_setattr %s: %w", src, err)
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount to %s: %w", dst, err)
	}
	return nil
}

// Attached lists the attached names.
func (v *View) Attached() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]string, 0, len(v.attached))
	for n := range v.attached {
		out = append(out, n)
	}
	return out
}

// Close detaches every layer, releases their mounts and removes the view.
// Sandboxes binding the view should be gone first: the detach reaches
// them too. Closing twice is fine.
func (v *View) Close() error {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return nil
	}
	v.closed = true
	releases := v.attached
	v.attached = map[string]func(){}
	err := v.teardown()
	v.mu.Unlock()
	// Released after the binds are gone, so that the last release
	// unmounts a layer nothing shows any more.
	for _, r := range releases {
		r()
	}
	v.s.mu.Lock()
	if v.s.views[v.id] == v {
		delete(v.s.views, v.id)
	}
	v.s.mu.Unlock()
	return err
}

// teardown unmounts everything at or below the view's directory and
// removes it.
func (v *View) teardown() error {
	if err := unmountTree(v.dir); err != nil {
		return fmt.Errorf("view %s: %w", v.id, err)
	}
	if err := os.RemoveAll(v.dir); err != nil {
		return fmt.Errorf("view %s: %w", v.id, err)
	}
	return nil
}

// unmountTree detaches every mount at or below dir, deepest first, and
// fails if any is left: the caller then must not remove dir's content,
// which might belong to a still-mounted file system.
func unmountTree(dir string) error {
	points, err := mountPointsUnder(dir)
	if err != nil {
		return fmt.Errorf("find mounts under %s: %w", dir, err)
	}
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmount %s: %w", p, err)
		}
	}
	left, err := mountPointsUnder(dir)
	if err != nil {
		return fmt.Errorf("find mounts under %s: %w", dir, err)
	}
	if len(left) > 0 {
		return fmt.Errorf("still mounted under %s: %s", dir, strings.Join(left, ", "))
	}
	return nil
}
