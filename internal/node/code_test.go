package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/image"
	"github.com/baton-faas/baton/internal/sandbox/process"
)

// zipCode serves one code archive and counts fetches.
type zipCode struct {
	digest  string
	zip     []byte
	fetches int
}

func newZipCode(t *testing.T) *zipCode {
	t.Helper()
	d := t.TempDir()
	if err := os.WriteFile(filepath.Join(d, "app.py"), []byte("def handler(e, c):\n    return e\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := archive.ZipDir(d, &buf); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	return &zipCode{digest: "sha256:" + hex.EncodeToString(sum[:]), zip: buf.Bytes()}
}

func (z *zipCode) Code(_ context.Context, digest string) (io.ReadCloser, error) {
	if digest != z.digest {
		return nil, errors.New("unknown code")
	}
	z.fetches++
	return io.NopCloser(bytes.NewReader(z.zip)), nil
}

// noRootFS stands in for the image-backed provider: these tests never
// create a sandbox.
type noRootFS struct{}

func (noRootFS) RootFS(context.Context, string, string, bool) (RootImage, error) {
	return RootImage{}, errors.New("no images in this test")
}

// With isolated sandboxes code is stored as a layer once per host, kept
// across worker restarts, and collected by the janitor when unused.
func TestCodeLayersAreStoredOnceAndCollected(t *testing.T) {
	store, err := image.Open(filepath.Join(t.TempDir(), "images"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	src := newZipCode(t)
	dataDir := t.TempDir()
	newWorker := func() *Worker {
		w, err := New(Options{DataDir: dataDir, Sandboxes: process.New(), Code: src, RootFS: noRootFS{}, Layers: store})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	w := newWorker()
	ctx := context.Background()
	diffID, err := w.codeLayer(ctx, src.digest)
	if err != nil {
		t.Fatal(err)
	}
	again, err := w.codeLayer(ctx, src.digest)
	if err != nil || again != diffID || src.fetches != 1 {
		t.Fatalf("second codeLayer: %s, %v after %d fetches; want %s from one fetch", again, err, src.fetches, diffID)
	}
	if ents, _ := os.ReadDir(filepath.Join(dataDir, "code")); len(ents) != 0 {
		t.Errorf("unpacked code left beside the layer: %v", ents)
	}
	if _, err := New(Options{DataDir: t.TempDir(), Sandboxes: process.New(), Code: src, RootFS: noRootFS{}}); err == nil {
		t.Error("an isolated worker without a layer store was created")
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// A restarted worker finds the layer, and collects it once unused.
	w = newWorker()
	defer w.Close(ctx)
	_, adopted := w.code.refs(src.digest)
	if !adopted {
		t.Error("the restarted worker does not know the stored code layer: the janitor would never collect it")
	}
	if again, err := w.codeLayer(ctx, src.digest); err != nil || again != diffID || src.fetches != 1 {
		t.Fatalf("after a restart: %s, %v after %d fetches; want the stored layer", again, err, src.fetches)
	}
	w.holdCode(src.digest)
	w.collectCode(0)
	if _, err := store.Layer(diffID); err != nil {
		t.Fatalf("code in use was collected: %v", err)
	}
	w.releaseCode(src.digest)
	w.collectCode(0)
	if _, err := store.Layer(diffID); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("unused code layer: %v, want it collected", err)
	}
	if refs, _ := store.Refs(codeRefPrefix); len(refs) != 0 {
		t.Errorf("refs left: %v", refs)
	}
}
