package image

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// The image-spec example: whiteouts and opaque directories of an upper
// layer, applied by overlayfs over the EROFS mounts, give the right tree.
func TestRootFSOverlayAppliesWhiteouts(t *testing.T) {
	requireMount(t)
	s := newStore(t)
	img := importStd(t, s, "test/whiteouts:1")
	ctx := context.Background()

	lowers, release, err := s.RootFS(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if len(lowers) != 2 || !strings.HasSuffix(lowers[0], strings.TrimPrefix(img.Layers[1], "sha256:")) {
		t.Fatalf("lowerdirs %v: want the upper layer first", lowers)
	}
	root := mountOverlay(t, lowers)

	if _, err := os.Lstat(filepath.Join(root, "a/x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a/x should be whited out, lstat: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(root, "a")); err != nil || !fi.IsDir() {
		t.Errorf("a should remain a directory: %v", err)
	}
	names := func(d string) []string {
		ents, err := os.ReadDir(filepath.Join(root, d))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	if got := names("b"); !slices.Equal(got, []string{"new"}) {
		t.Errorf("opaque b holds %v, want only [new]", got)
	}
	if got := names("a"); len(got) != 0 {
		t.Errorf("a holds %v, want nothing", got)
	}
	if got := names("."); !slices.Equal(got, []string{"a", "abs", "b", "c", "d"}) {
		t.Errorf("root holds %v", got)
	}
	checkFile := func(p, content string, mode os.FileMode) {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(root, p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
			return
		}
		if fi.Mode() != mode {
			t.Errorf("%s mode %v, want %v", p, fi.Mode(), mode)
		}
		if got, err := os.ReadFile(filepath.Join(root, p)); err != nil || string(got) != content {
			t.Errorf("%s = %q, %v; want %q", p, got, err, content)
		}
	}
	checkFile("c/z", "#!/bin/sh\necho z\n", 0o755)
	checkFile("b/new", "new-content\n", 0o640)
	checkFile("d/e", "e-content\n", os.ModeSetuid|0o755)
	if target, err := os.Readlink(filepath.Join(root, "c/link")); err != nil || target != "z" {
		t.Errorf("c/link -> %q, %v", target, err)
	}
	if target, err := os.Readlink(filepath.Join(root, "abs")); err != nil || target != "/c/z" {
		t.Errorf("abs -> %q, %v", target, err)
	}
	if got, err := os.ReadFile(filepath.Join(root, "c/link")); err != nil || string(got) != "#!/bin/sh\necho z\n" {
		t.Errorf("reading through c/link: %q %v", got, err)
	}
	// The upper is private and writable; the layers are not touched.
	must(t, os.WriteFile(filepath.Join(root, "c/z"), []byte("changed"), 0o755))
	if got, _ := os.ReadFile(filepath.Join(lowers[1], "c/z")); string(got) != "#!/bin/sh\necho z\n" {
		t.Errorf("write through the overlay reached the layer: %q", got)
	}
	if err := os.WriteFile(filepath.Join(lowers[1], "c/new"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("layer mount should be read-only, write: %v", err)
	}
}

// A layer shared by two images is stored once and mounted once.
func TestSharedLayerStoredAndMountedOnce(t *testing.T) {
	requireMount(t)
	s := newStore(t)
	ctx := context.Background()
	base := lowerTar(t)
	dir := t.TempDir()
	writeLayout(t, dir, map[string]v1.Image{
		"app/one:1": buildImage(t, "one", base, makeTar(t, file("one", "1", 0o644))),
		"app/two:1": buildImage(t, "two", base, makeTar(t, file("two", "2", 0o644))),
	})
	one, err := s.ImportOCILayout(ctx, dir, "app/one:1")
	if err != nil {
		t.Fatal(err)
	}
	two, err := s.ImportOCILayout(ctx, dir, "app/two:1")
	if err != nil {
		t.Fatal(err)
	}
	if one.Layers[0] != two.Layers[0] || one.Layers[1] == two.Layers[1] {
		t.Fatalf("layers %v / %v: want the first shared", one.Layers, two.Layers)
	}
	files, _ := filepath.Glob(filepath.Join(s.layerDir(), "*.erofs"))
	if len(files) != 3 {
		t.Fatalf("%d layer files, want 3 (one shared + two own)", len(files))
	}

	l1, rel1, err := s.RootFS(ctx, one)
	if err != nil {
		t.Fatal(err)
	}
	l2, rel2, err := s.RootFS(ctx, two)
	if err != nil {
		t.Fatal(err)
	}
	if l1[1] != l2[1] {
		t.Fatalf("shared layer mounted at %s and %s", l1[1], l2[1])
	}
	if n := mountCount(t, l1[1]); n != 1 {
		t.Fatalf("shared layer has %d mounts, want 1", n)
	}
	// Both sandboxes' overlays work at once on the one mount.
	r1, r2 := mountOverlay(t, l1), mountOverlay(t, l2)
	for _, c := range []struct{ root, own, other string }{{r1, "one", "two"}, {r2, "two", "one"}} {
		if _, err := os.Stat(filepath.Join(c.root, c.own)); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(filepath.Join(c.root, c.other)); err == nil {
			t.Errorf("%s visible in the other image", c.other)
		}
		if _, err := os.Stat(filepath.Join(c.root, "c/z")); err != nil {
			t.Error(err)
		}
	}

	rel1()
	rel1() // idempotent
	if n := mountCount(t, l1[1]); n != 1 {
		t.Fatalf("shared layer unmounted while image two still uses it (%d mounts)", n)
	}
	if n := mountCount(t, l1[0]); n != 0 {
		t.Fatalf("image one's own layer still mounted after its release")
	}
	rel2()
	if n := mountCount(t, l1[1]); n != 0 {
		t.Fatalf("shared layer still mounted after the last release")
	}
}

func TestCorruptLayerIsNotMounted(t *testing.T) {
	requireMount(t)
	s := newStore(t)
	ctx := context.Background()
	l, err := s.AddLayerFromTar(ctx, bytes.NewReader(lowerTar(t)))
	if err != nil {
		t.Fatal(err)
	}
	h, _ := parseDigest(l.DiffID)
	data, err := os.ReadFile(s.layerFile(h))
	if err != nil {
		t.Fatal(err)
	}
	// The add recorded the file's stamp as verified; kernels without
	// fine-grained timestamps would give a change in the same tick the
	// same ctime.
	time.Sleep(20 * time.Millisecond)
	data[len(data)/2] ^= 0x01
	must(t, os.WriteFile(s.layerFile(h), data, 0o600))

	_, _, err = s.Mount(ctx, l.DiffID)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Mount of a corrupt layer: %v, want ErrCorrupt", err)
	}
	if !strings.Contains(err.Error(), l.DiffID) {
		t.Errorf("error does not name the layer: %v", err)
	}
	t.Log(err)
	if n := mountCount(t, s.mountDir(h)); n != 0 {
		t.Fatalf("corrupt layer mounted")
	}
	if _, err := os.Stat(s.mountDir(h)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mount point left behind: %v", err)
	}

	// Adding the layer again repairs it.
	if _, err := s.AddLayerFromTar(ctx, bytes.NewReader(lowerTar(t))); err != nil {
		t.Fatal(err)
	}
	p, release, err := s.Mount(ctx, l.DiffID)
	if err != nil {
		t.Fatalf("Mount after repair: %v", err)
	}
	defer release()
	if _, err := os.Stat(filepath.Join(p, "c/z")); err != nil {
		t.Error(err)
	}
}

func TestMountIsReferenceCounted(t *testing.T) {
	requireMount(t)
	s := newStore(t)
	ctx := context.Background()
	l, err := s.AddLayerFromTar(ctx, bytes.NewReader(lowerTar(t)))
	if err != nil {
		t.Fatal(err)
	}
	p1, rel1, err := s.Mount(ctx, l.DiffID)
	if err != nil {
		t.Fatal(err)
	}
	p2, rel2, err := s.Mount(ctx, l.DiffID)
	if err != nil {
		t.Fatal(err)
	}
	if p1 != p2 || mountCount(t, p1) != 1 {
		t.Fatalf("two mounts of one layer: %s %s (%d)", p1, p2, mountCount(t, p1))
	}
	rel1()
	rel1()
	if mountCount(t, p1) != 1 {
		t.Fatal("a double release dropped the other user's reference")
	}
	rel2()
	if mountCount(t, p1) != 0 {
		t.Fatal("still mounted after the last release")
	}
	if _, _, err := s.Mount(ctx, "sha256:"+strings.Repeat("0", 64)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Mount of an unknown layer: %v", err)
	}
	if _, _, err := s.Mount(ctx, "nope"); err == nil {
		t.Fatal("Mount of a bad digest accepted")
	}
}

func TestGCKeepsMountedLayers(t *testing.T) {
	requireMount(t)
	s := newStore(t)
	ctx := context.Background()
	img := importStd(t, s, "test/gc:1")
	_, release, err := s.RootFS(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	must(t, s.Remove(img.Name, nil))
	removed, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 0 {
		t.Fatalf("GC removed mounted layers %v", removed)
	}
	release()
	removed, err = s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, sortedCopy(img.Layers)) {
		t.Fatalf("GC removed %v, want %v", removed, img.Layers)
	}
}

func TestOpenCleansStaleMounts(t *testing.T) {
	requireMount(t)
	root := filepath.Join(t.TempDir(), "images")
	s, err := Open(root, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.AddLayerFromTar(context.Background(), bytes.NewReader(lowerTar(t)))
	if err != nil {
		t.Fatal(err)
	}
	must(t, s.Close())

	// What a crashed run leaves: the layer still mounted under mnt/.
	h, _ := parseDigest(l.DiffID)
	stale := s.mountDir(h)
	must(t, os.Mkdir(stale, 0o700))
	must(t, unix.Mount(s.layerFile(h), stale, "erofs", unix.MS_RDONLY, ""))
	t.Cleanup(func() { _ = unix.Unmount(stale, unix.MNT_DETACH) })
	if mountCount(t, stale) != 1 {
		t.Fatal("test setup: layer not mounted")
	}

	s2, err := Open(root, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if n := mountCount(t, stale); n != 0 {
		t.Fatalf("stale mount survived Open (%d)", n)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale mount point left: %v", err)
	}
	// The store works normally afterwards.
	p, release, err := s2.Mount(context.Background(), l.DiffID)
	if err != nil {
		t.Fatal(err)
	}
	release()
	if mountCount(t, p) != 0 {
		t.Fatal("still mounted after release")
	}
}

func TestCloseUnmountsEverything(t *testing.T) {
	requireMount(t)
	s, err := Open(filepath.Join(t.TempDir(), "images"), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	img := importStd(t, s, "test/close:1")
	lowers, release, err := s.RootFS(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	must(t, s.Close())
	for _, p := range lowers {
		if mountCount(t, p) != 0 {
			t.Errorf("%s still mounted after Close", p)
		}
	}
	release() // a no-op after Close
	if _, _, err := s.Mount(context.Background(), img.Layers[0]); !errors.Is(err, ErrClosed) {
		t.Errorf("Mount after Close: %v", err)
	}
}

// A code layer made with AddLayerFromDir stacks on an image as the
// top-most lowerdir.
func TestRootFSWithCodeLayer(t *testing.T) {
	requireMount(t)
	s := newStore(t)
	ctx := context.Background()
	img := importStd(t, s, "test/code:1")
	code := t.TempDir()
	must(t, os.WriteFile(filepath.Join(code, "handler.py"), []byte("print(1)\n"), 0o644))
	cl, err := s.AddLayerFromDir(ctx, code, WithPrefix("/var/task"))
	if err != nil {
		t.Fatal(err)
	}
	cp, crel, err := s.Mount(ctx, cl.DiffID)
	if err != nil {
		t.Fatal(err)
	}
	defer crel()
	lowers, release, err := s.RootFS(ctx, img, cp)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if lowers[0] != cp {
		t.Fatalf("code layer not top-most: %v", lowers)
	}
	root := mountOverlay(t, lowers)
	if got, err := os.ReadFile(filepath.Join(root, "var/task/handler.py")); err != nil || string(got) != "print(1)\n" {
		t.Errorf("handler: %q %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(root, "c/z")); err != nil {
		t.Error(err)
	}
	if fi, err := os.Stat(root); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("root of the sandbox: %v %v", fi.Mode(), err)
	}
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func TestConcurrentMountsShareOneMount(t *testing.T) {
	requireMount(t)
	s := newStore(t)
	ctx := context.Background()
	l, err := s.AddLayerFromTar(ctx, bytes.NewReader(lowerTar(t)))
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	paths := make([]string, n)
	releases := make([]func(), n)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			var err error
			paths[i], releases[i], err = s.Mount(ctx, l.DiffID)
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range paths {
		if p != paths[0] {
			t.Fatalf("mount points differ: %v", paths)
		}
	}
	if c := mountCount(t, paths[0]); c != 1 {
		t.Fatalf("%d mounts, want 1", c)
	}
	for _, r := range releases {
		go r()
	}
	// Releases run concurrently; wait for the last one to unmount.
	deadline := time.Now().Add(time.Minute) // generous: a busy host delays the goroutines
	for mountCount(t, paths[0]) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("still mounted after all releases")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
