package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/erofs/go-erofs"
)

// openLayer reads a stored layer back with go-erofs' reader, so the
// conversion can be checked without mounting.
func openLayer(t *testing.T, s *Store, l Layer) fs.FS {
	t.Helper()
	h, err := parseDigest(l.DiffID)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(s.layerFile(h))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	img, err := erofs.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// lstat returns the mode and raw stat of name. The mode comes from
// erofs.Stat: go-erofs' FileInfo.Mode keeps Unix type bits in the low bits
// and does not translate setuid/setgid/sticky.
func lstat(t *testing.T, fsys fs.FS, name string) (fs.FileMode, *erofs.Stat) {
	t.Helper()
	fi, err := fs.Lstat(fsys, name)
	if err != nil {
		t.Fatalf("stat %s: %v", name, err)
	}
	st, _ := fi.Sys().(*erofs.Stat)
	if st == nil {
		t.Fatalf("stat %s: no erofs.Stat", name)
	}
	return st.Mode, st
}

func TestAddLayerFromTarConvertsWhiteouts(t *testing.T) {
	s := newStore(t)
	raw := upperTar(t)
	l, err := s.AddLayerFromTar(context.Background(), bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	if want := "sha256:" + hex.EncodeToString(sum[:]); l.DiffID != want {
		t.Fatalf("diffID %s, want %s", l.DiffID, want)
	}
	img := openLayer(t, s, l)

	// .wh.x became a 0/0 character device named x.
	fi, st := lstat(t, img, "a/x")
	if fi.Type() != fs.ModeDevice|fs.ModeCharDevice || st.Rdev != 0 {
		t.Errorf("a/x: mode %v rdev %d, want a 0/0 character device", fi, st.Rdev)
	}
	// .wh..wh..opq became the opaque xattr on b.
	_, st = lstat(t, img, "b")
	if st.Xattrs[opaqueXattr] != "y" {
		t.Errorf("b xattrs %v, want %s=y", st.Xattrs, opaqueXattr)
	}
	// No AUFS markers survive.
	err = fs.WalkDir(img, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".wh.") {
			t.Errorf("whiteout marker %s left in the layer", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := fs.ReadFile(img, "b/new"); string(got) != "new-content\n" {
		t.Errorf("b/new = %q", got)
	}
	if fi, _ := lstat(t, img, "d/e"); fi != fs.ModeSetuid|0o755 {
		t.Errorf("d/e mode %v, want setuid 0755", fi)
	}
}

func TestAddLayerFromTarKeepsMetadata(t *testing.T) {
	s := newStore(t)
	raw := makeTar(t,
		ent{name: "./", typ: tar.TypeDir, mode: 0o755},
		ent{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
		ent{name: "etc/passwd", typ: tar.TypeReg, mode: 0o644, body: "root:x:0:0::/root:/bin/sh\n", uid: 0, gid: 0},
		ent{name: "home/app/data", typ: tar.TypeReg, mode: 0o600, body: "secret", uid: 1000, gid: 1001,
			xattrs: map[string]string{"user.note": "hi", "trusted.overlay.redirect": "/etc", "system.posix_acl_access": "x"}},
		ent{name: "bin/tool", typ: tar.TypeReg, mode: 0o755, body: "tool-binary"},
		ent{name: "bin/alias", typ: tar.TypeLink, link: "bin/tool"},
		ent{name: "bin/sh", typ: tar.TypeSymlink, link: "/usr/bin/dash"},
		ent{name: "run/fifo", typ: tar.TypeFifo, mode: 0o620},
		ent{name: "empty", typ: tar.TypeReg, mode: 0o644},
		ent{name: "../../escape", typ: tar.TypeReg, mode: 0o644, body: "inside"},
	)
	l, err := s.AddLayerFromTar(context.Background(), bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	img := openLayer(t, s, l)

	if fi, _ := lstat(t, img, "tmp"); fi != fs.ModeDir|fs.ModeSticky|0o777 {
		t.Errorf("tmp mode %v", fi)
	}
	fi, st := lstat(t, img, "home/app/data")
	if fi != 0o600 || st.UID != 1000 || st.GID != 1001 {
		t.Errorf("data: mode %v uid %d gid %d", fi, st.UID, st.GID)
	}
	if st.Xattrs["user.note"] != "hi" {
		t.Errorf("user xattr lost: %v", st.Xattrs)
	}
	if _, ok := st.Xattrs["trusted.overlay.redirect"]; ok {
		t.Errorf("trusted.overlay.* from a layer must be dropped: %v", st.Xattrs)
	}
	if got, _ := fs.ReadFile(img, "bin/alias"); string(got) != "tool-binary" {
		t.Errorf("hard link content %q", got)
	}
	if fi, _ := lstat(t, img, "bin/alias"); fi != 0o755 {
		t.Errorf("hard link mode %v", fi)
	}
	if fi, _ := lstat(t, img, "bin/sh"); fi.Type() != fs.ModeSymlink {
		t.Errorf("bin/sh mode %v", fi)
	}
	if target, err := fs.ReadLink(img, "bin/sh"); err != nil || target != "/usr/bin/dash" {
		t.Errorf("bin/sh -> %q, %v", target, err)
	}
	if fi, _ := lstat(t, img, "run/fifo"); fi != fs.ModeNamedPipe|0o620 {
		t.Errorf("fifo mode %v", fi)
	}
	if got, err := fs.ReadFile(img, "escape"); err != nil || string(got) != "inside" {
		t.Errorf("../../escape should land at /escape: %q %v", got, err)
	}
	if _, st := lstat(t, img, "empty"); st.Size != 0 {
		t.Errorf("empty size %d", st.Size)
	}
}

func TestAddLayerFromTarRejectsBadLayers(t *testing.T) {
	s := newStore(t)
	cases := map[string][]byte{
		"duplicate path":       makeTar(t, file("a", "1", 0o644), file("a", "2", 0o644)),
		"parent not directory": makeTar(t, file("a", "1", 0o644), file("a/b", "2", 0o644)),
		"dangling hard link":   makeTar(t, ent{name: "x", typ: tar.TypeLink, link: "nope"}),
		"dir over file":        makeTar(t, file("a", "1", 0o644), dir("a/")),
		"truncated":            makeTar(t, file("a", strings.Repeat("z", 4096), 0o644))[:1024],
		"whiteout over a file": makeTar(t, file("a", "1", 0o644), file(".wh.a", "", 0o644)),
		"opaque in a non-dir":  makeTar(t, file("a", "1", 0o644), file("a/.wh..wh..opq", "", 0o644)),
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := s.AddLayerFromTar(context.Background(), bytes.NewReader(raw)); err == nil {
				t.Fatal("accepted")
			} else {
				t.Log(err)
			}
		})
	}
	if ls, err := s.Layers(); err != nil || len(ls) != 0 {
		t.Errorf("failed adds left layers: %v %v", ls, err)
	}
	if ents, _ := os.ReadDir(s.tmpDir()); len(ents) != 0 {
		t.Errorf("failed adds left temporary files: %v", ents)
	}
}

// The diffID is the digest of the whole stream, including the padding
// that tar writers add after the end-of-archive blocks.
func TestDiffIDCoversTrailingPadding(t *testing.T) {
	s := newStore(t)
	raw := append(makeTar(t, file("f", "data", 0o644)), make([]byte, 8192)...)
	l, err := s.AddLayerFromTar(context.Background(), bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	if want := "sha256:" + hex.EncodeToString(sum[:]); l.DiffID != want {
		t.Fatalf("diffID %s, want %s", l.DiffID, want)
	}
}

func TestAddLayerFromDirIsDeterministic(t *testing.T) {
	s := newStore(t)
	mk := func(mode os.FileMode, mtime time.Time) string {
		d := t.TempDir()
		must(t, os.Chmod(d, mode))
		must(t, os.MkdirAll(filepath.Join(d, "lib", "pkg"), 0o755))
		must(t, os.WriteFile(filepath.Join(d, "handler.py"), []byte("def handler(e, c):\n    return e\n"), 0o644))
		must(t, os.WriteFile(filepath.Join(d, "bootstrap"), []byte("#!/bin/sh\n"), 0o755))
		must(t, os.WriteFile(filepath.Join(d, "lib", "pkg", "__init__.py"), nil, 0o644))
		must(t, os.Symlink("handler.py", filepath.Join(d, "main.py")))
		for _, p := range []string{"handler.py", "bootstrap", "lib/pkg/__init__.py", "lib/pkg", "lib", "."} {
			must(t, os.Chtimes(filepath.Join(d, p), mtime, mtime))
		}
		return d
	}
	ctx := context.Background()
	d1 := mk(0o700, time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC))
	d2 := mk(0o755, time.Now())
	l1, err := s.AddLayerFromDir(ctx, d1)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := s.AddLayerFromDir(ctx, d2)
	if err != nil {
		t.Fatal(err)
	}
	if l1 != l2 {
		t.Fatalf("same content, different layers:\n%+v\n%+v", l1, l2)
	}
	img := openLayer(t, s, l1)
	if fi, st := lstat(t, img, "."); fi != fs.ModeDir|0o755 || st.UID != 0 {
		t.Errorf("layer root %v uid %d, want 0755 root", fi, st.UID)
	}
	if fi, _ := lstat(t, img, "bootstrap"); fi != 0o755 {
		t.Errorf("bootstrap mode %v", fi)
	}
	if target, _ := fs.ReadLink(img, "main.py"); target != "handler.py" {
		t.Errorf("main.py -> %q", target)
	}

	must(t, os.WriteFile(filepath.Join(d2, "handler.py"), []byte("changed"), 0o644))
	l3, err := s.AddLayerFromDir(ctx, d2)
	if err != nil {
		t.Fatal(err)
	}
	if l3.DiffID == l1.DiffID {
		t.Fatal("different content, same diffID")
	}

	l4, err := s.AddLayerFromDir(ctx, d1, WithPrefix("/var/task"))
	if err != nil {
		t.Fatal(err)
	}
	img = openLayer(t, s, l4)
	if got, _ := fs.ReadFile(img, "var/task/bootstrap"); string(got) != "#!/bin/sh\n" {
		t.Errorf("prefixed layer: var/task/bootstrap = %q", got)
	}
	for _, p := range []string{".", "var", "var/task"} {
		if fi, _ := lstat(t, img, p); fi != fs.ModeDir|0o755 {
			t.Errorf("%s mode %v, want 0755", p, fi)
		}
	}

	if _, err := s.AddLayerFromDir(ctx, filepath.Join(d1, "missing")); err == nil {
		t.Error("missing directory accepted")
	}
}

func TestConcurrentAddsOfOneLayer(t *testing.T) {
	s := newStore(t)
	raw := lowerTar(t)
	var wg sync.WaitGroup
	layers := make([]Layer, 8)
	errs := make([]error, 8)
	for i := range layers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			layers[i], errs[i] = s.AddLayerFromTar(context.Background(), bytes.NewReader(raw))
		}()
	}
	wg.Wait()
	for i := range layers {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if layers[i] != layers[0] {
			t.Fatalf("adds disagree: %+v vs %+v", layers[i], layers[0])
		}
	}
	files, _ := filepath.Glob(filepath.Join(s.layerDir(), "*.erofs"))
	if len(files) != 1 {
		t.Fatalf("%d layer files, want 1", len(files))
	}
	h, _ := parseDigest(layers[0].DiffID)
	if _, err := s.verifyLayer(context.Background(), h); err != nil {
		t.Fatal(err)
	}
}

func TestContextCancelStopsAdd(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.AddLayerFromTar(ctx, bytes.NewReader(lowerTar(t))); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
