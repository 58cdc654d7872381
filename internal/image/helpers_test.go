package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	specs "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// ent is one tar entry of a hand-made layer.
type ent struct {
	name   string
	typ    byte // tar.Type*; 0 means a regular file
	mode   int64
	body   string
	link   string
	uid    int
	gid    int
	xattrs map[string]string
}

func dir(name string) ent { return ent{name: name, typ: tar.TypeDir, mode: 0o755} }
func file(name, body string, mode int64) ent {
	return ent{name: name, typ: tar.TypeReg, body: body, mode: mode}
}
func symlink(name, target string) ent {
	return ent{name: name, typ: tar.TypeSymlink, link: target, mode: 0o777}
}

func makeTar(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, e := range ents {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Mode: e.mode, Linkname: e.link, Uid: e.uid, Gid: e.gid,
			ModTime: mt, Format: tar.FormatPAX}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		for k, v := range e.xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// The image of the whiteout test: a lower layer with a/x, b/y, c/z and a
// symlink, and an upper layer deleting a/x, making b opaque and adding d/e.
func lowerTar(t testing.TB) []byte {
	return makeTar(t,
		dir("a/"), file("a/x", "x-content\n", 0o644),
		dir("b/"), file("b/y", "y-content\n", 0o600),
		dir("c/"), file("c/z", "#!/bin/sh\necho z\n", 0o755),
		symlink("c/link", "z"),
		symlink("abs", "/c/z"),
	)
}

func upperTar(t testing.TB) []byte {
	return makeTar(t,
		dir("a/"), ent{name: "a/.wh.x", typ: tar.TypeReg, mode: 0o644},
		dir("b/"), ent{name: "b/.wh..wh..opq", typ: tar.TypeReg, mode: 0o644}, file("b/new", "new-content\n", 0o640),
		dir("d/"), file("d/e", "e-content\n", 0o4755),
	)
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func newStore(t testing.TB) *Store {
	t.Helper()
	log := testLogger(t)
	if _, ok := t.(*testing.B); ok {
		log = slog.New(slog.DiscardHandler) // keep logging out of the timings
	}
	s, err := Open(filepath.Join(t.TempDir(), "images"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// requireMount skips tests that mount unless the process is root on a
// kernel with EROFS and overlayfs.
func requireMount(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: mounting EROFS layers and overlays needs root")
	}
	data, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		t.Skipf("skipping: cannot read /proc/filesystems: %v", err)
	}
	for _, fs := range []string{"erofs", "overlay"} {
		if !bytes.Contains(data, []byte("\t"+fs+"\n")) {
			t.Skipf("skipping: the kernel has no %s support (modprobe %s?)", fs, fs)
		}
	}
}

// mountCount counts the mounts at exactly mountPoint.
func mountCount(t testing.TB, mountPoint string) int {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMountinfo(fields[4]) == mountPoint {
			n++
		}
	}
	return n
}

// mountOverlay assembles lowers the way a sandbox does, with a private
// upper and work dir, and returns the merged directory.
func mountOverlay(t testing.TB, lowers []string) string {
	t.Helper()
	base := t.TempDir()
	upper, work, merged := filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "merged")
	for _, d := range []string{upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay %s: %v", opts, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount overlay: %v", err)
		}
	})
	return merged
}

// buildImage makes an image from layer tars, with a small config.
func buildImage(t testing.TB, cmd string, layers ...[]byte) v1.Image {
	t.Helper()
	var ls []v1.Layer
	for _, b := range layers {
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	img, err := mutate.AppendLayers(empty.Image, ls...)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Created = v1.Time{Time: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)}
	cfg.Config.Env = []string{"PATH=/usr/bin:/bin", "APP=" + cmd}
	cfg.Config.Entrypoint = []string{"/bin/sh", "-c"}
	cfg.Config.Cmd = []string{cmd}
	cfg.Config.WorkingDir = "/c"
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// writeLayout writes an OCI image layout holding imgs, annotated with their
// ref names.
func writeLayout(t testing.TB, dir string, imgs map[string]v1.Image) {
	t.Helper()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	for ref, img := range imgs {
		if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{specs.AnnotationRefName: ref})); err != nil {
			t.Fatal(err)
		}
	}
}

// tarDir archives a directory tree (an OCI layout) into a tar file.
func tarDir(t testing.TB, src, dst string) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.AddFS(os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func importStd(t testing.TB, s *Store, name string) Image {
	t.Helper()
	dir := t.TempDir()
	writeLayout(t, dir, map[string]v1.Image{name: buildImage(t, "run", lowerTar(t), upperTar(t))})
	img, err := s.ImportOCILayout(context.Background(), dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return img
}
