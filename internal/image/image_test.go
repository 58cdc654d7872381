package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestValidateName(t *testing.T) {
	good := []string{"python", "baton/python:3.11", "registry.local:5000/team/app:v1.2-rc.1", "a", "x/y/z", "app:latest"}
	for _, n := range good {
		if err := ValidateName(n); err != nil {
			t.Errorf("%q rejected: %v", n, err)
		}
	}
	bad := map[string]string{
		"":                       "empty",
		"Python":                 "lower-case",
		"app name":               "not allowed",
		"app_name":               "not allowed",
		"-app":                   "start and end",
		"app/":                   "start and end",
		"a//b":                   "empty or dot-only",
		"a/../b":                 "empty or dot-only",
		"a/./b":                  "empty or dot-only",
		strings.Repeat("a", 256): "longer than",
		"caf\u00e9":              "not allowed",
		"app\x00":                "not allowed",
	}
	for n, want := range bad {
		err := ValidateName(n)
		if !errors.Is(err, ErrInvalidName) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want ErrInvalidName mentioning %q", n, err, want)
		}
	}
}

func TestImportOCILayoutRecordsConfig(t *testing.T) {
	s := newStore(t)
	img := importStd(t, s, "test/app:1")
	if img.Name != "test/app:1" || len(img.Layers) != 2 || !strings.HasPrefix(img.ID, "sha256:") {
		t.Fatalf("image %+v", img)
	}
	if !slices.Equal(img.Cmd, []string{"run"}) || !slices.Equal(img.Entrypoint, []string{"/bin/sh", "-c"}) ||
		img.WorkingDir != "/c" || !slices.Contains(img.Env, "APP=run") {
		t.Errorf("config not recorded: %+v", img)
	}
	if !img.Created.Equal(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("created %v", img.Created)
	}
	if !strings.HasPrefix(img.Source, "oci-layout:") {
		t.Errorf("source %q", img.Source)
	}
	var size int64
	for _, d := range img.Layers {
		l, err := s.Layer(d)
		if err != nil {
			t.Fatal(err)
		}
		size += l.Size
	}
	if img.Size != size {
		t.Errorf("size %d, want %d", img.Size, size)
	}
	got, err := s.Get("test/app:1")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != img.ID || !slices.Equal(got.Layers, img.Layers) {
		t.Errorf("Get = %+v, want %+v", got, img)
	}
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].Name != img.Name {
		t.Errorf("List = %v, %v", list, err)
	}
	if _, err := s.Get("test/none:1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of a missing image: %v", err)
	}
}

func TestImportOCILayoutPicksByRefName(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	dir := t.TempDir()
	writeLayout(t, dir, map[string]v1.Image{
		"one": buildImage(t, "one", lowerTar(t)),
		"two": buildImage(t, "two", upperTar(t)),
	})
	img, err := s.ImportOCILayout(ctx, dir, "two")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(img.Cmd, []string{"two"}) {
		t.Errorf("picked %v, want two", img.Cmd)
	}
	_, err = s.ImportOCILayout(ctx, dir, "three")
	if err == nil || !strings.Contains(err.Error(), "none is named") || !strings.Contains(err.Error(), "one") {
		t.Fatalf("missing name: %v", err)
	}
	t.Log(err)
	if _, err := s.ImportOCILayout(ctx, t.TempDir(), "x"); err == nil {
		t.Fatal("empty directory accepted as a layout")
	}
	if _, err := s.ImportOCILayout(ctx, dir, "Bad Name"); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("bad name: %v", err)
	}
}

func TestImportOCIArchive(t *testing.T) {
	s := newStore(t)
	dir := t.TempDir()
	writeLayout(t, dir, map[string]v1.Image{"test/oci:1": buildImage(t, "oci", lowerTar(t), upperTar(t))})
	archive := filepath.Join(t.TempDir(), "image.tar")
	tarDir(t, dir, archive)
	img, err := s.ImportArchive(context.Background(), archive, "test/oci:1")
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Layers) != 2 || !slices.Equal(img.Cmd, []string{"oci"}) || !strings.HasPrefix(img.Source, "oci-archive:") {
		t.Fatalf("image %+v", img)
	}
	if ents, _ := os.ReadDir(s.tmpDir()); len(ents) != 0 {
		t.Errorf("import left temporary files: %v", ents)
	}
}

// dockerImage is one image of a hand-made `docker save` archive.
type dockerImage struct {
	tags   []string
	cmd    string
	layers [][]byte
	// badDiffID makes the config lie about the first layer.
	badDiffID bool
}

// writeDockerArchive writes what `docker save` writes: per layer a
// <id>/layer.tar, a config <digest>.json and manifest.json.
func writeDockerArchive(t *testing.T, path string, gz bool, imgs ...dockerImage) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, data []byte) {
		must(t, tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))}))
		_, err := tw.Write(data)
		must(t, err)
	}
	type entry struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	var manifest []entry
	for _, img := range imgs {
		cfg := v1.ConfigFile{OS: "linux", Architecture: runtime.GOARCH, Created: v1.Time{Time: time.Unix(1700000000, 0).UTC()},
			Config: v1.Config{Cmd: []string{img.cmd}, Env: []string{"PATH=/bin"}, WorkingDir: "/"},
			RootFS: v1.RootFS{Type: "layers"}}
		var paths []string
		for i, l := range img.layers {
			sum := sha256.Sum256(l)
			h := hex.EncodeToString(sum[:])
			if img.badDiffID && i == 0 {
				h = strings.Repeat("ab", 32)
			}
			cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, v1.Hash{Algorithm: "sha256", Hex: h})
			id := hex.EncodeToString(sum[:])[:16] + img.cmd
			must(t, tw.WriteHeader(&tar.Header{Name: id + "/", Typeflag: tar.TypeDir, Mode: 0o755}))
			add(id+"/VERSION", []byte("1.0"))
			add(id+"/layer.tar", l)
			paths = append(paths, id+"/layer.tar")
		}
		cb, err := json.Marshal(cfg)
		must(t, err)
		sum := sha256.Sum256(cb)
		cname := hex.EncodeToString(sum[:]) + ".json"
		add(cname, cb)
		manifest = append(manifest, entry{Config: cname, RepoTags: img.tags, Layers: paths})
	}
	mb, err := json.Marshal(manifest)
	must(t, err)
	add("manifest.json", mb)
	must(t, tw.Close())
	data := buf.Bytes()
	if gz {
		var zb bytes.Buffer
		zw := gzip.NewWriter(&zb)
		_, err := zw.Write(data)
		must(t, err)
		must(t, zw.Close())
		data = zb.Bytes()
	}
	must(t, os.WriteFile(path, data, 0o644))
}

func TestImportDockerArchive(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	for _, gz := range []bool{false, true} {
		archive := filepath.Join(t.TempDir(), "saved.tar")
		writeDockerArchive(t, archive, gz,
			dockerImage{tags: []string{"test/docker:1"}, cmd: "docker", layers: [][]byte{lowerTar(t), upperTar(t)}},
			dockerImage{tags: []string{"other:2"}, cmd: "other", layers: [][]byte{makeTar(t, file("o", "o", 0o644))}},
		)
		img, err := s.ImportArchive(ctx, archive, "test/docker:1")
		if err != nil {
			t.Fatalf("gzip=%v: %v", gz, err)
		}
		lsum, usum := sha256.Sum256(lowerTar(t)), sha256.Sum256(upperTar(t))
		want := []string{"sha256:" + hex.EncodeToString(lsum[:]), "sha256:" + hex.EncodeToString(usum[:])}
		if !slices.Equal(img.Layers, want) || !slices.Equal(img.Cmd, []string{"docker"}) ||
			!strings.HasPrefix(img.Source, "docker-archive:") {
			t.Fatalf("gzip=%v: image %+v", gz, img)
		}
		// docker.io/library/other:2 is the same reference as other:2.
		other, err := s.ImportArchive(ctx, archive, "docker.io/library/other:2")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(other.Cmd, []string{"other"}) {
			t.Errorf("picked %v, want other", other.Cmd)
		}
		if _, err := s.ImportArchive(ctx, archive, "missing:1"); err == nil || !strings.Contains(err.Error(), "other:2") {
			t.Errorf("missing tag: %v", err)
		}
	}

	bad := filepath.Join(t.TempDir(), "bad.tar")
	writeDockerArchive(t, bad, false, dockerImage{tags: []string{"bad:1"}, cmd: "bad", layers: [][]byte{lowerTar(t)}, badDiffID: true})
	if _, err := s.ImportArchive(ctx, bad, "bad:1"); err == nil || !strings.Contains(err.Error(), "diffID") {
		t.Fatalf("layer not matching its config accepted: %v", err)
	}
	junk := filepath.Join(t.TempDir(), "junk.tar")
	must(t, os.WriteFile(junk, makeTar(t, file("hello", "x", 0o644)), 0o644))
	if _, err := s.ImportArchive(ctx, junk, "junk:1"); err == nil || !strings.Contains(err.Error(), "neither") {
		t.Fatalf("a plain tar accepted: %v", err)
	}
}

func TestPutImage(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	l, err := s.AddLayerFromTar(ctx, bytes.NewReader(lowerTar(t)))
	if err != nil {
		t.Fatal(err)
	}
	img, err := s.PutImage(ctx, Image{Name: "baton/python:3.11", Layers: []string{l.DiffID}, Cmd: []string{"python3"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(img.ID, "sha256:") || img.Size != l.Size || img.Source != "baton" || img.Created.IsZero() {
		t.Fatalf("image %+v", img)
	}
	again, err := s.PutImage(ctx, Image{Name: "baton/python:3.11", Layers: []string{l.DiffID}, Cmd: []string{"python3"}})
	if err != nil || again.ID != img.ID {
		t.Fatalf("same content, ID %s then %s (%v)", img.ID, again.ID, err)
	}
	if _, err := s.PutImage(ctx, Image{Name: "x", Layers: []string{"sha256:" + strings.Repeat("1", 64)}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("image with a missing layer: %v", err)
	}
	if _, err := s.PutImage(ctx, Image{Name: "X", Layers: []string{l.DiffID}}); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("bad name: %v", err)
	}
}

func TestRemoveRefusedWhileInUse(t *testing.T) {
	s := newStore(t)
	img := importStd(t, s, "test/used:1")
	used := map[string]bool{img.Name: true}
	inUse := func(n string) bool { return used[n] }
	err := s.Remove(img.Name, inUse)
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), img.Name) {
		t.Fatalf("Remove of a used image: %v", err)
	}
	if _, err := s.Get(img.Name); err != nil {
		t.Fatalf("refused Remove deleted the image: %v", err)
	}
	used[img.Name] = false
	must(t, s.Remove(img.Name, inUse))
	if _, err := s.Get(img.Name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after Remove: %v", err)
	}
	if err := s.Remove(img.Name, inUse); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Remove: %v", err)
	}
}

func TestGCRemovesOnlyUnreferencedLayers(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	base := lowerTar(t)
	dir := t.TempDir()
	writeLayout(t, dir, map[string]v1.Image{
		"one": buildImage(t, "one", base, makeTar(t, file("one", "1", 0o644))),
		"two": buildImage(t, "two", base, makeTar(t, file("two", "2", 0o644))),
	})
	one, err := s.ImportOCILayout(ctx, dir, "one")
	must(t, err)
	two, err := s.ImportOCILayout(ctx, dir, "two")
	must(t, err)
	code, err := s.AddLayerFromDir(ctx, t.TempDir())
	must(t, err)
	loose, err := s.AddLayerFromTar(ctx, bytes.NewReader(makeTar(t, file("loose", "x", 0o644))))
	must(t, err)

	removed, err := s.GC(ctx, code.DiffID)
	must(t, err)
	if !slices.Equal(removed, []string{loose.DiffID}) {
		t.Fatalf("GC removed %v, want only the loose layer %s", removed, loose.DiffID)
	}
	must(t, s.Remove("one", nil))
	removed, err = s.GC(ctx, code.DiffID)
	must(t, err)
	if !slices.Equal(removed, []string{one.Layers[1]}) {
		t.Fatalf("GC removed %v, want image one's own layer %s", removed, one.Layers[1])
	}
	for _, d := range append(slices.Clone(two.Layers), code.DiffID) {
		if _, err := s.Layer(d); err != nil {
			t.Errorf("layer %s in use was removed: %v", d, err)
		}
	}
	if _, err := s.Layer(one.Layers[1]); !errors.Is(err, ErrNotFound) {
		t.Errorf("removed layer still readable: %v", err)
	}
}

func TestOpenIsExclusive(t *testing.T) {
	root := filepath.Join(t.TempDir(), "images")
	s, err := Open(root, nil)
	must(t, err)
	if _, err := Open(root, nil); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Open: %v", err)
	}
	must(t, s.Close())
	s2, err := Open(root, nil)
	must(t, err)
	must(t, s2.Close())
}
