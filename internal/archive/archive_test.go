package archive

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"errors"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// zipBuilder builds test archives, including malformed ones that
// archive/zip's high-level API would not produce.
type zipBuilder struct {
	t   testing.TB
	buf bytes.Buffer
	zw  *zip.Writer
}

func newZip(t testing.TB) *zipBuilder {
	b := &zipBuilder{t: t}
	b.zw = zip.NewWriter(&b.buf)
	return b
}

func (b *zipBuilder) add(name string, mode fs.FileMode, body string) *zipBuilder {
	b.t.Helper()
	hdr := &zip.FileHeader{Name: name, Method: zip.Deflate}
	hdr.SetMode(mode)
	w, err := b.zw.CreateHeader(hdr)
	if err != nil {
		b.t.Fatalf("CreateHeader(%q): %v", name, err)
	}
	if _, err := io.WriteString(w, body); err != nil {
		b.t.Fatal(err)
	}
	return b
}

func (b *zipBuilder) file(name, body string) *zipBuilder { return b.add(name, 0o644, body) }
func (b *zipBuilder) dir(name string) *zipBuilder        { return b.add(name, fs.ModeDir|0o755, "") }
func (b *zipBuilder) symlink(name, target string) *zipBuilder {
	return b.add(name, fs.ModeSymlink|0o777, target)
}

// raw adds an entry whose header fields are taken verbatim, so tests can
// lie about sizes and checksums.
func (b *zipBuilder) raw(hdr *zip.FileHeader, compressed []byte) *zipBuilder {
	b.t.Helper()
	w, err := b.zw.CreateRaw(hdr)
	if err != nil {
		b.t.Fatalf("CreateRaw(%q): %v", hdr.Name, err)
	}
	if _, err := w.Write(compressed); err != nil {
		b.t.Fatal(err)
	}
	return b
}

func (b *zipBuilder) bytes() []byte {
	b.t.Helper()
	if err := b.zw.Close(); err != nil {
		b.t.Fatal(err)
	}
	return b.buf.Bytes()
}

func deflate(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	fw, err := flate.NewWriter(&buf, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func extractTo(t *testing.T, data []byte, limits Limits) (string, Summary, error) {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "code")
	if err := os.Mkdir(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Extract(bytes.NewReader(data), int64(len(data)), dest, limits)
	return dest, s, err
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("%s not empty after failed extract: %v", dir, names)
	}
}

func TestRefusals(t *testing.T) {
	small := Limits{MaxFiles: 4, MaxTotalBytes: 1000, MaxFileBytes: 600}
	big := bytes.Repeat([]byte("A"), 1<<20)

	tests := []struct {
		name      string
		zip       func(t *testing.T) []byte
		limits    Limits
		wantEntry string
		wantIn    string // substring of the reason
	}{
		{"not a zip", func(t *testing.T) []byte { return []byte("definitely not a zip file") },
			Limits{}, "", "not a valid zip"},
		{"truncated", func(t *testing.T) []byte { b := newZip(t).file("a", "x").bytes(); return b[:len(b)-10] },
			Limits{}, "", "not a valid zip"},
		{"absolute path", func(t *testing.T) []byte { return newZip(t).file("/etc/passwd", "x").bytes() },
			Limits{}, "/etc/passwd", "absolute"},
		{"dotdot escape", func(t *testing.T) []byte { return newZip(t).file("../x", "x").bytes() },
			Limits{}, "../x", "path escapes the code root"},
		{"escape after cleaning", func(t *testing.T) []byte { return newZip(t).file("a/b/../../../x", "x").bytes() },
			Limits{}, "a/b/../../../x", "path escapes the code root"},
		{"inner dotdot", func(t *testing.T) []byte { return newZip(t).file("a/../b", "x").bytes() },
			Limits{}, "a/../b", `".." component`},
		{"backslash traversal", func(t *testing.T) []byte { return newZip(t).file(`..\..\evil`, "x").bytes() },
			Limits{}, `..\..\evil`, "backslash"},
		{"empty name", func(t *testing.T) []byte { return newZip(t).file("", "x").bytes() },
			Limits{}, "", "empty name"},
		{"nul byte", func(t *testing.T) []byte { return newZip(t).file("a\x00b", "x").bytes() },
			Limits{}, "a\x00b", "NUL"},
		{"duplicate", func(t *testing.T) []byte { return newZip(t).file("a.txt", "1").file("a.txt", "2").bytes() },
			Limits{}, "a.txt", "duplicate"},
		{"duplicate after cleaning", func(t *testing.T) []byte { return newZip(t).file("a.txt", "1").file("./a.txt", "2").bytes() },
			Limits{}, "./a.txt", "duplicate"},
		{"file then child", func(t *testing.T) []byte { return newZip(t).file("a", "1").file("a/b", "2").bytes() },
			Limits{}, "a/b", "parent \"a\" is a file"},
		{"child then file", func(t *testing.T) []byte { return newZip(t).file("a/b", "1").file("a", "2").bytes() },
			Limits{}, "a", "clashes with a directory"},
		{"symlink absolute", func(t *testing.T) []byte { return newZip(t).symlink("l", "/etc").bytes() },
			Limits{}, "l", "absolute"},
		{"symlink escapes", func(t *testing.T) []byte { return newZip(t).symlink("a/l", "../../etc").bytes() },
			Limits{}, "a/l", "escapes"},
		{"symlink escapes through another symlink", func(t *testing.T) []byte {
			return newZip(t).symlink("a", ".").symlink("b", "a/..").bytes()
		}, Limits{}, "b", "escapes"},
		{"symlink escapes through deeper symlink", func(t *testing.T) []byte {
			return newZip(t).dir("d/").symlink("d/up", "..").symlink("x", "d/up/d/up/..").bytes()
		}, Limits{}, "x", "escapes"},
		{"symlink loop", func(t *testing.T) []byte { return newZip(t).symlink("a", "b").symlink("b", "a").bytes() },
			Limits{}, "a", "loop"},
		{"write through earlier symlink via dotdot", func(t *testing.T) []byte {
			return newZip(t).symlink("link", ".").file("link/../../etc/x", "pwned").bytes()
		}, Limits{}, "link/../../etc/x", "escapes"},
		{"write through earlier symlink", func(t *testing.T) []byte {
			return newZip(t).symlink("link", ".").file("link/x", "pwned").bytes()
		}, Limits{}, "link/x", "symlink"},
		{"device", func(t *testing.T) []byte { return newZip(t).add("dev", fs.ModeDevice|0o600, "").bytes() },
			Limits{}, "dev", "special"},
		{"char device", func(t *testing.T) []byte {
			return newZip(t).add("tty", fs.ModeDevice|fs.ModeCharDevice|0o600, "").bytes()
		}, Limits{}, "tty", "special"},
		{"fifo", func(t *testing.T) []byte { return newZip(t).add("fifo", fs.ModeNamedPipe|0o600, "").bytes() },
			Limits{}, "fifo", "special"},
		{"socket", func(t *testing.T) []byte { return newZip(t).add("sock", fs.ModeSocket|0o600, "").bytes() },
			Limits{}, "sock", "special"},
		{"encrypted", func(t *testing.T) []byte {
			return newZip(t).raw(&zip.FileHeader{Name: "secret", Method: zip.Store, Flags: 0x1,
				CRC32: crc32.ChecksumIEEE([]byte("xx")), CompressedSize64: 2, UncompressedSize64: 2}, []byte("xx")).bytes()
		}, Limits{}, "secret", "encrypted"},
		{"unsupported method", func(t *testing.T) []byte {
			return newZip(t).raw(&zip.FileHeader{Name: "bz", Method: 12,
				CRC32: 0, CompressedSize64: 2, UncompressedSize64: 2}, []byte("xx")).bytes()
		}, Limits{}, "bz", "compression method 12"},
		{"checksum mismatch", func(t *testing.T) []byte {
			return newZip(t).raw(&zip.FileHeader{Name: "c", Method: zip.Store,
				CRC32: 1234, CompressedSize64: 2, UncompressedSize64: 2}, []byte("xx")).bytes()
		}, Limits{}, "c", "checksum"},
		{"file over limit by header", func(t *testing.T) []byte { return newZip(t).file("big", strings.Repeat("x", 601)).bytes() },
			small, "big", "per-file limit"},
		{"header lies about size", func(t *testing.T) []byte {
			return newZip(t).raw(&zip.FileHeader{Name: "bomb", Method: zip.Deflate,
				CRC32: crc32.ChecksumIEEE(big), CompressedSize64: uint64(len(deflate(t, big))), UncompressedSize64: 10},
				deflate(t, big)).bytes()
		}, small, "bomb", "size declared in its header"},
		{"headers lie about total", func(t *testing.T) []byte {
			b := newZip(t)
			for _, n := range []string{"b1", "b2"} {
				data := big[:500]
				b.raw(&zip.FileHeader{Name: n, Method: zip.Deflate, CRC32: crc32.ChecksumIEEE(data),
					CompressedSize64: uint64(len(deflate(t, data))), UncompressedSize64: 1}, deflate(t, data))
			}
			return b.bytes()
		}, small, "b1", "size declared in its header"},
		{"total over limit", func(t *testing.T) []byte {
			return newZip(t).file("a", strings.Repeat("x", 400)).file("b", strings.Repeat("x", 400)).file("c", strings.Repeat("x", 400)).bytes()
		}, small, "c", "limit of 1000 bytes unpacked per function"},
		{"too many files", func(t *testing.T) []byte {
			return newZip(t).file("1", "").file("2", "").file("3", "").dir("4/").file("4/5", "").bytes()
		}, small, "", "5 entries, over the limit of 4"},
		{"symlink target too long", func(t *testing.T) []byte {
			return newZip(t).symlink("l", strings.Repeat("a/", 3000)).bytes()
		}, Limits{}, "l", "longer than"},
		{"symlink with directory name", func(t *testing.T) []byte {
			// archive/zip will not write data for a directory name, so the
			// target is empty; the name check comes first anyway.
			hdr := &zip.FileHeader{Name: "l/", Method: zip.Store}
			hdr.SetMode(fs.ModeSymlink | 0o777)
			return newZip(t).raw(hdr, nil).bytes()
		},
			Limits{}, "l/", "directory name"},
		{"root directory entry", func(t *testing.T) []byte { return newZip(t).file("./", "").bytes() },
			Limits{}, "", ""}, // a "./" entry is a directory by its name; accepted
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.zip(t)
			_, verr := Validate(bytes.NewReader(data), int64(len(data)), tc.limits)
			dest, _, xerr := extractTo(t, data, tc.limits)
			if tc.wantIn == "" {
				if verr != nil || xerr != nil {
					t.Fatalf("want success, got Validate: %v, Extract: %v", verr, xerr)
				}
				return
			}
			for _, err := range []error{verr, xerr} {
				if err == nil {
					t.Fatalf("want error, got nil")
				}
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("errors.Is(%v, ErrInvalid) = false", err)
				}
				ae, ok := errors.AsType[*Error](err)
				if !ok {
					t.Fatalf("error %T is not *Error: %v", err, err)
				}
				if ae.Entry != tc.wantEntry {
					t.Errorf("Entry = %q, want %q (%v)", ae.Entry, tc.wantEntry, err)
				}
				if !strings.Contains(ae.Reason, tc.wantIn) {
					t.Errorf("Reason = %q, want it to contain %q", ae.Reason, tc.wantIn)
				}
			}
			assertEmpty(t, dest)
		})
	}
}

func TestErrorMessage(t *testing.T) {
	data := newZip(t).file("../x", "x").bytes()
	_, err := Validate(bytes.NewReader(data), int64(len(data)), Limits{})
	if got, want := err.Error(), `archive entry "../x": path escapes the code root`; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
}

func TestExtractModesAndParents(t *testing.T) {
	b := newZip(t).
		file("deep/nested/plain.txt", "plain").
		add("bin/tool", 0o700, "#!/bin/sh\n").
		add("odd", 0o777|fs.ModeSetuid, "setuid is dropped").
		dir("empty/").
		symlink("deep/link", "nested/plain.txt")
	// A Windows tool records MS-DOS attributes rather than Unix modes.
	hdr := &zip.FileHeader{Name: "win.txt", Method: zip.Deflate, CreatorVersion: 0 << 8, ExternalAttrs: 0x20}
	w, err := b.zw.CreateHeader(hdr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "windows")
	data := b.bytes()

	dest, sum, err := extractTo(t, data, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Files != 5 || sum.TotalBytes != int64(len("plain#!/bin/sh\nsetuid is droppednested/plain.txtwindows")) {
		t.Errorf("Summary = %+v", sum)
	}
	wantModes := map[string]fs.FileMode{
		"deep":                  fs.ModeDir | 0o755,
		"deep/nested":           fs.ModeDir | 0o755,
		"deep/nested/plain.txt": 0o644,
		"bin":                   fs.ModeDir | 0o755,
		"bin/tool":              0o755,
		"odd":                   0o755,
		"empty":                 fs.ModeDir | 0o755,
		"win.txt":               0o644,
	}
	for name, want := range wantModes {
		fi, err := os.Lstat(filepath.Join(dest, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode(), want)
		}
	}
	got, err := os.ReadFile(filepath.Join(dest, "deep/link"))
	if err != nil || string(got) != "plain" {
		t.Errorf("reading through symlink: %q, %v", got, err)
	}
	ents, _ := os.ReadDir(dest)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			t.Errorf("staging directory %s left behind", e.Name())
		}
	}
}

func TestExtractDestination(t *testing.T) {
	data := newZip(t).file("a", "x").bytes()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "existing"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Extract(bytes.NewReader(data), int64(len(data)), dir, Limits{})
	if err == nil || errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("non-empty dest: %v", err)
	}
	_, err = Extract(bytes.NewReader(data), int64(len(data)), filepath.Join(dir, "missing"), Limits{})
	if err == nil || errors.Is(err, ErrInvalid) {
		t.Errorf("missing dest: %v", err)
	}
}

// failingReaderAt fails every read after the first n, to simulate I/O
// errors that are the caller's problem, not the archive's.
type failingReaderAt struct {
	r     io.ReaderAt
	n     int
	calls int
}

var errDisk = errors.New("simulated disk failure")

func (f *failingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	f.calls++
	if f.calls > f.n {
		return 0, errDisk
	}
	return f.r.ReadAt(p, off)
}

func TestIOErrorsAreNotInvalid(t *testing.T) {
	data := newZip(t).file("a", strings.Repeat("hello ", 10000)).file("b", "second").bytes()

	_, err := Validate(&failingReaderAt{r: bytes.NewReader(data)}, int64(len(data)), Limits{})
	if !errors.Is(err, errDisk) || errors.Is(err, ErrInvalid) {
		t.Errorf("failing directory read: %v", err)
	}

	// Count the reads Validate needs, then fail during Extract's second
	// (writing) pass: the staging directory must be cleaned up.
	counter := &failingReaderAt{r: bytes.NewReader(data), n: 1 << 30}
	if _, err := Validate(counter, int64(len(data)), Limits{}); err != nil {
		t.Fatal(err)
	}
	dest := t.TempDir()
	fr := &failingReaderAt{r: bytes.NewReader(data), n: counter.calls + 2}
	_, err = Extract(fr, int64(len(data)), dest, Limits{})
	if !errors.Is(err, errDisk) || errors.Is(err, ErrInvalid) {
		t.Fatalf("failing second pass: %v", err)
	}
	assertEmpty(t, dest)
}

func writeTree(t *testing.T, root string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "src/lib"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "empty"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "node_modules/.bin"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "node_modules/pkg/bin"), 0o755))
	must(os.WriteFile(filepath.Join(root, "bootstrap"), []byte("#!/bin/sh\nexec ./src/main\n"), 0o755))
	must(os.WriteFile(filepath.Join(root, "src/main.js"), []byte("console.log('hi')\n"), 0o644))
	must(os.WriteFile(filepath.Join(root, "src/lib/data.bin"), bytes.Repeat([]byte{0, 1, 2, 3}, 50000), 0o600))
	must(os.WriteFile(filepath.Join(root, "node_modules/pkg/bin/cli.js"), []byte("#!/usr/bin/env node\n"), 0o755))
	must(os.Symlink("../pkg/bin/cli.js", filepath.Join(root, "node_modules/.bin/cli")))
	must(os.Symlink("src", filepath.Join(root, "srclink")))
	must(os.Symlink("does-not-exist-yet", filepath.Join(root, "dangling")))
}

type treeEntry struct {
	mode    fs.FileMode
	content string
}

func snapshot(t *testing.T, root string) map[string]treeEntry {
	t.Helper()
	out := make(map[string]treeEntry)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		e := treeEntry{mode: fi.Mode()}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			e.content, err = os.Readlink(p)
		case fi.Mode().IsRegular():
			var b []byte
			b, err = os.ReadFile(p)
			e.content = string(b)
		}
		out[filepath.ToSlash(rel)] = e
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestZipDirRoundTrip(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src)

	var z1 bytes.Buffer
	if err := ZipDir(src, &z1); err != nil {
		t.Fatal(err)
	}
	// Determinism: touching timestamps must not change the archive.
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(src, "src/main.js"), old, old); err != nil {
		t.Fatal(err)
	}
	var z2 bytes.Buffer
	if err := ZipDir(src, &z2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(z1.Bytes(), z2.Bytes()) {
		t.Error("ZipDir output is not deterministic")
	}

	zr, err := zip.NewReader(bytes.NewReader(z1.Bytes()), int64(z1.Len()))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	if !slices.IsSorted(names) {
		t.Errorf("entries not sorted: %v", names)
	}

	dest, sum, err := extractTo(t, z1.Bytes(), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Files != 7 {
		t.Errorf("Summary.Files = %d, want 7", sum.Files)
	}
	want, got := snapshot(t, src), snapshot(t, dest)
	// Only the executable bit survives: 0600 becomes 0644.
	e := want["src/lib/data.bin"]
	e.mode = 0o644
	want["src/lib/data.bin"] = e
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s missing after round trip", name)
			continue
		}
		if g.mode.Type() != w.mode.Type() || (w.mode.Type() != fs.ModeSymlink && g.mode != w.mode) {
			t.Errorf("%s: mode %v, want %v", name, g.mode, w.mode)
		}
		if g.content != w.content {
			t.Errorf("%s: content differs", name)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("unexpected %s after round trip", name)
		}
	}
}

func TestZipDirRefusals(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(t *testing.T, dir string) error
		wantIn string
	}{
		{"absolute symlink", func(t *testing.T, dir string) error {
			return os.Symlink("/etc/passwd", filepath.Join(dir, "abs"))
		}, `"abs": symlink target "/etc/passwd" is absolute`},
		{"escaping symlink", func(t *testing.T, dir string) error {
			os.Mkdir(filepath.Join(dir, "a"), 0o755)
			return os.Symlink("../../outside", filepath.Join(dir, "a/up"))
		}, `"a/up": symlink target "../../outside" escapes`},
		{"backslash name", func(t *testing.T, dir string) error {
			return os.WriteFile(filepath.Join(dir, `a\b`), nil, 0o644)
		}, "backslash"},
		{"fifo", func(t *testing.T, dir string) error {
			return mkfifo(filepath.Join(dir, "pipe"))
		}, `"pipe": special file`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "ok.txt"), []byte("fine"), 0o644)
			if err := tc.setup(t, dir); err != nil {
				t.Skipf("setup: %v", err)
			}
			err := ZipDir(dir, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.wantIn) {
				t.Fatalf("ZipDir error = %v, want it to contain %q", err, tc.wantIn)
			}
		})
	}
}

func TestZipDirNotADirectory(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o644)
	if err := ZipDir(f, io.Discard); err == nil {
		t.Fatal("ZipDir on a file succeeded")
	}
}
