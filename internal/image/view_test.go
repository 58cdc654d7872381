package image

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// codeTree writes a function's code as an unpacked archive would look:
// nested directories, several modes, symlinks (relative, absolute and
// dangling), empty files and one large file. It returns the directory and
// the large file's content.
func codeTree(t *testing.T) (string, []byte) {
	t.Helper()
	d := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(d, "lib", "pkg", "deep", "er"), 0o755))
	must(t, os.Mkdir(filepath.Join(d, "private"), 0o700))
	must(t, os.WriteFile(filepath.Join(d, "app.py"), []byte("def handler(e, c):\n    return e\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(d, "bootstrap"), []byte("#!/bin/sh\nexit 0\n"), 0o755))
	must(t, os.WriteFile(filepath.Join(d, "private", "secret"), []byte("s"), 0o600))
	must(t, os.WriteFile(filepath.Join(d, "lib", "pkg", "__init__.py"), nil, 0o644))
	must(t, os.WriteFile(filepath.Join(d, "lib", "pkg", "deep", "er", "empty"), nil, 0o444))
	must(t, os.Symlink("app.py", filepath.Join(d, "main.py")))
	must(t, os.Symlink("../../app.py", filepath.Join(d, "lib", "pkg", "up.py")))
	must(t, os.Symlink("/etc/hostname", filepath.Join(d, "abs")))
	must(t, os.Symlink("missing", filepath.Join(d, "dangling")))
	big := make([]byte, 20<<20+12345) // not a multiple of the block size
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i+8 <= len(big); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			big[i+j] = byte(v >> (8 * j))
		}
	}
	must(t, os.WriteFile(filepath.Join(d, "model.bin"), big, 0o644))
	return d, big
}

// checkCodeTree compares a layer's tree, read through fsys, with what
// codeTree wrote.
func checkCodeTree(t *testing.T, fsys fs.FS, big []byte, perm func(name string) fs.FileMode) {
	t.Helper()
	modes := map[string]fs.FileMode{
		".":                     fs.ModeDir | 0o755,
		"lib/pkg/deep/er":       fs.ModeDir | 0o755,
		"private":               fs.ModeDir | 0o700,
		"app.py":                0o644,
		"bootstrap":             0o755,
		"private/secret":        0o600,
		"lib/pkg/__init__.py":   0o644,
		"lib/pkg/deep/er/empty": 0o444,
		"main.py":               fs.ModeSymlink,
		"lib/pkg/up.py":         fs.ModeSymlink,
		"abs":                   fs.ModeSymlink,
		"dangling":              fs.ModeSymlink,
		"model.bin":             0o644,
	}
	for name, want := range modes {
		got := perm(name)
		if want == fs.ModeSymlink {
			got &= fs.ModeType
		}
		if got != want {
			t.Errorf("%s: mode %v, want %v", name, got, want)
		}
	}
	links := map[string]string{"main.py": "app.py", "lib/pkg/up.py": "../../app.py", "abs": "/etc/hostname", "dangling": "missing"}
	for name, want := range links {
		if got, err := fs.ReadLink(fsys, name); err != nil || got != want {
			t.Errorf("%s -> %q (%v), want %q", name, got, err, want)
		}
	}
	for name, want := range map[string][]byte{"lib/pkg/__init__.py": {}, "lib/pkg/deep/er/empty": {}, "model.bin": big,
		"app.py": []byte("def handler(e, c):\n    return e\n")} {
		got, err := fs.ReadFile(fsys, name)
		if err != nil {
			t.Errorf("read %s: %v", name, err)
		} else if !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes differ from the %d written", name, len(got), len(want))
		}
	}
}

func TestCodeLayerFromDirectory(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	dir, big := codeTree(t)
	l, err := s.AddLayerFromDir(ctx, dir, WithRef("code/f00d"))
	if err != nil {
		t.Fatal(err)
	}
	img := openLayer(t, s, l)
	checkCodeTree(t, img, big, func(name string) fs.FileMode {
		m, st := lstat(t, img, name)
		if st.UID != 0 || st.GID != 0 {
			t.Errorf("%s owned by %d:%d, want root", name, st.UID, st.GID)
		}
		return m
	})
	got, err := s.Ref("code/f00d")
	if err != nil || got != l {
		t.Fatalf("Ref: %+v, %v; want %+v", got, err, l)
	}

	if requireMountOK() {
		// The kernel reads the same tree.
		v, err := s.NewView("check")
		if err != nil {
			t.Fatal(err)
		}
		p, err := v.Attach(ctx, "code", l.DiffID)
		if err != nil {
			t.Fatal(err)
		}
		checkCodeTree(t, os.DirFS(p), big, func(name string) fs.FileMode {
			fi, err := os.Lstat(filepath.Join(p, name))
			if err != nil {
				t.Fatal(err)
			}
			return fi.Mode()
		})
		if err := os.WriteFile(filepath.Join(p, "app.py"), nil, 0o644); !errors.Is(err, unix.EROFS) {
			t.Errorf("write into an attached layer: %v, want EROFS", err)
		}
		must(t, v.Close())
	}
}

// requireMountOK reports whether the test may mount (see requireMount).
func requireMountOK() bool {
	data, err := os.ReadFile("/proc/filesystems")
	return os.Geteuid() == 0 && err == nil && bytes.Contains(data, []byte("\terofs\n"))
}

func TestRefsKeepLayersFromGC(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	dir, _ := codeTree(t)
	l, err := s.AddLayerFromDir(ctx, dir, WithRef("code/aa"))
	if err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	must(t, os.WriteFile(filepath.Join(other, "x"), []byte("x"), 0o644))
	unref, err := s.AddLayerFromDir(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	removed, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{unref.DiffID}) {
		t.Fatalf("GC removed %v, want only the unnamed layer %s", removed, unref.DiffID)
	}
	// A second ref to the same layer keeps it when the first goes.
	if _, err := s.AddLayerFromDir(ctx, dir, WithRef("code/bb")); err != nil {
		t.Fatal(err)
	}
	refs, err := s.Refs("code/")
	if err != nil || len(refs) != 2 || refs["code/aa"] != l.DiffID {
		t.Fatalf("Refs: %v, %v", refs, err)
	}
	must(t, s.DeleteRef(ctx, "code/aa"))
	if _, err := s.Ref("code/aa"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted ref: %v, want ErrNotFound", err)
	}
	if _, err := s.Layer(l.DiffID); err != nil {
		t.Fatalf("layer still named by code/bb is gone: %v", err)
	}
	must(t, s.DeleteRef(ctx, "code/bb"))
	if _, err := s.Layer(l.DiffID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("layer named by no ref survived DeleteRef: %v", err)
	}
	must(t, s.DeleteRef(ctx, "code/bb")) // deleting twice is fine
	if err := s.DeleteRef(ctx, "../x"); err == nil {
		t.Error("bad ref name accepted")
	}
}

func TestCorruptCodeLayerIsRefused(t *testing.T) {
	requireMount(t)
	s := newStore(t)
	ctx := context.Background()
	dir, _ := codeTree(t)
	l, err := s.AddLayerFromDir(ctx, dir, WithRef("code/cc"))
	if err != nil {
		t.Fatal(err)
	}
	h, _ := parseDigest(l.DiffID)
	// The add recorded the file's stamp as verified; kernels without
	// fine-grained timestamps would give a change in the same tick the
	// same ctime.
	time.Sleep(20 * time.Millisecond)
	f, err := os.OpenFile(s.layerFile(h), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte{0}
	_, err = f.ReadAt(b, l.Size/2)
	must(t, err)
	b[0] ^= 0x80
	_, err = f.WriteAt(b, l.Size/2)
	must(t, err)
	must(t, f.Close())

	v, err := s.NewView("corrupt")
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	_, err = v.Attach(ctx, "code", l.DiffID)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Attach of a corrupt code layer: %v, want ErrCorrupt", err)
	}
	if n := mountCount(t, s.mountDir(h)); n != 0 {
		t.Fatal("corrupt code layer mounted")
	}
	if left := mountsBelow(t, v.Path()); len(left) != 1 {
		t.Fatalf("mounts in the view after a refused attach: %v, want only the view", left)
	}
	// Building it again repairs it.
	if _, err := s.AddLayerFromDir(ctx, dir, WithRef("code/cc")); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Attach(ctx, "code", l.DiffID); err != nil {
		t.Fatalf("Attach after repair: %v", err)
	}
}

// mountsBelow lists mount points at or below dir.
func mountsBelow(t *testing.T, dir string) []string {
	t.Helper()
	m, err := mountPointsUnder(dir)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A slave bind of a view, as a sandbox's /var/task is, sees layers attached
// after it was made; one layer attached to two views is mounted once.
func TestViewPropagatesToSlaveBinds(t *testing.T) {
	requireMount(t)
	s := newStore(t)
	ctx := context.Background()
	mk := func(content string) Layer {
		d := t.TempDir()
		must(t, os.WriteFile(filepath.Join(d, "v"), []byte(content), 0o644))
		l, err := s.AddLayerFromDir(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	l1, l2 := mk("one"), mk("two")

	v1, err := s.NewView("sb-1")
	if err != nil {
		t.Fatal(err)
	}
	v2, err := s.NewView("sb-2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.NewView("sb-1"); err == nil {
		t.Error("second view with the same id accepted")
	}
	// What libcontainer does for a propagating mount: a bind, made a slave.
	sandboxTask := t.TempDir()
	must(t, unix.Mount(v1.Path(), sandboxTask, "", unix.MS_BIND|unix.MS_REC, ""))
	t.Cleanup(func() { _ = unix.Unmount(sandboxTask, unix.MNT_DETACH) })
	must(t, unix.Mount("", sandboxTask, "", unix.MS_SLAVE|unix.MS_REC, ""))

	if _, err := v1.Attach(ctx, "one", l1.DiffID); err != nil {
		t.Fatal(err)
	}
	if _, err := v2.Attach(ctx, "one", l1.DiffID); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(sandboxTask, "one", "v")); err != nil || string(got) != "one" {
		t.Fatalf("attached layer seen through the slave bind: %q, %v", got, err)
	}
	if _, err := v1.Attach(ctx, "two", l2.DiffID); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(sandboxTask, "two", "v")); err != nil || string(got) != "two" {
		t.Fatalf("layer attached later seen through the slave bind: %q, %v", got, err)
	}
	// Read-only, nosuid and nodev also where it propagated to.
	var st unix.Statfs_t
	must(t, unix.Statfs(filepath.Join(sandboxTask, "two"), &st))
	for _, f := range []int64{unix.ST_RDONLY, unix.ST_NOSUID, unix.ST_NODEV} {
		if st.Flags&f == 0 {
			t.Errorf("propagated code mount flags %#x lack %#x", st.Flags, f)
		}
	}
	h1, _ := parseDigest(l1.DiffID)
	if n := mountCount(t, s.mountDir(h1)); n != 1 {
		t.Errorf("layer attached to two views is mounted %d times at its mount point, want 1", n)
	}
	if n := superblocksOf(t, s.layerFile(h1)); n != 1 {
		t.Errorf("the layer file is mounted as %d file systems, want one", n)
	}

	// Nothing propagates back out of the sandbox's copy.
	must(t, v1.Close())
	if _, err := os.Stat(v1.Path()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("closed view's directory: %v", err)
	}
	if m := mountsBelow(t, sandboxTask); len(m) != 1 {
		t.Errorf("detaching the view's layers did not reach its slave bind: %v", m)
	}
	if !s.mounted(h1) {
		t.Error("layer still attached to the other view was unmounted")
	}
	must(t, v2.Close())
	if s.mounted(h1) {
		t.Error("layer attached to no view is still mounted")
	}
	if m := mountsBelow(t, filepath.Join(s.Root(), "views")); len(m) != 0 {
		t.Errorf("left mounted: %v", m)
	}
	if m := mountsBelow(t, filepath.Join(s.Root(), "mnt")); len(m) != 0 {
		t.Errorf("left mounted: %v", m)
	}
}

// superblocksOf counts the distinct EROFS file systems (device numbers in
// /proc/self/mountinfo) mounted from file: binds of one mount share one.
func superblocksOf(t *testing.T, file string) int {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	devs := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		before, after, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, b := strings.Fields(after), strings.Fields(before)
		if len(f) >= 2 && len(b) >= 3 && f[0] == "erofs" && unescapeMountinfo(f[1]) == file {
			devs[b[2]] = true
		}
	}
	return len(devs)
}

func TestOpenCleansStaleViewsAndCloseClosesViews(t *testing.T) {
	requireMount(t)
	root := filepath.Join(t.TempDir(), "images")
	s, err := Open(root, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d := t.TempDir()
	must(t, os.WriteFile(filepath.Join(d, "x"), []byte("x"), 0o644))
	l, err := s.AddLayerFromDir(ctx, d, WithRef("code/dd"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.NewView("crashed")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Attach(ctx, "code", l.DiffID); err != nil {
		t.Fatal(err)
	}
	// A crash: the process is gone with its lock, the mounts stay.
	must(t, s.lock.Close())
	t.Cleanup(func() { _ = unmountTree(root) })
	if n := len(mountsBelow(t, root)); n != 3 {
		t.Fatalf("test setup: %d mounts, want view, bind and layer", n)
	}

	s2, err := Open(root, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if m := mountsBelow(t, root); len(m) != 0 {
		t.Fatalf("stale mounts survived Open: %v", m)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "views")); len(ents) != 0 {
		t.Errorf("stale view directories survived Open: %v", ents)
	}
	// The code layer survived the restart and is usable as is.
	got, err := s2.Ref("code/dd")
	if err != nil || got != l {
		t.Fatalf("code layer after restart: %+v, %v", got, err)
	}
	v2, err := s2.NewView("crashed")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v2.Attach(ctx, "code", l.DiffID); err != nil {
		t.Fatal(err)
	}
	must(t, s2.Close())
	if m := mountsBelow(t, root); len(m) != 0 {
		t.Fatalf("Close left a view mounted: %v", m)
	}
	if _, err := v2.Attach(ctx, "again", l.DiffID); err == nil {
		t.Error("Attach after the store closed succeeded")
	}
}
