package node

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/sandbox/process"
)

type mapCode map[string][]byte

func (m mapCode) Code(_ context.Context, digest string) (io.ReadCloser, error) {
	b, ok := m[digest]
	if !ok {
		return nil, fmt.Errorf("no code %s", digest)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// randomZip holds one incompressible file of n bytes.
func randomZip(t *testing.T, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: "data.bin", Method: zip.Store})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, n)
	_, _ = rand.Read(data)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// The code cache of a host is bounded: unused code is evicted to make
// room, and when code in use fills it, a start is refused with a clear
// error instead of filling the disk.
func TestCodeCacheBudget(t *testing.T) {
	// Workers check what the store hands out against the digest.
	code := mapCode{}
	names := map[byte]string{}
	for _, c := range []byte("abc") {
		zip := randomZip(t, 600<<10)
		sum := sha256.Sum256(zip)
		names[c] = "sha256:" + hex.EncodeToString(sum[:])
		code[names[c]] = zip
	}
	d := func(c byte) string { return names[c] }
	w, err := New(Options{DataDir: t.TempDir(), Sandboxes: process.New(), Code: code, CodeCacheBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	dirOf := func(digest string) string {
		return filepath.Join(w.opts.DataDir, "code", strings.TrimPrefix(digest, "sha256:"))
	}

	w.holdCode(d('a'))
	if _, err := w.codeDir(t.Context(), d('a')); err != nil {
		t.Fatal(err)
	}
	w.releaseCode(d('a')) // a is now unused, and evictable

	w.holdCode(d('b'))
	if _, err := w.codeDir(t.Context(), d('b')); err != nil {
		t.Fatalf("b should fit after evicting unused a: %v", err)
	}
	if _, err := os.Stat(dirOf(d('a'))); !os.IsNotExist(err) {
		t.Errorf("unused code a was not evicted: %v", err)
	}

	w.holdCode(d('c'))
	_, err = w.codeDir(t.Context(), d('c'))
	if !errors.Is(err, ErrCodeCacheFull) || !errdefs.Is(err, errdefs.Unavailable) || !strings.Contains(err.Error(), "1 MiB limit") {
		t.Fatalf("c with b in use: %v, want ErrCodeCacheFull naming the limit", err)
	}
	if _, err := os.Stat(dirOf(d('c'))); !os.IsNotExist(err) {
		t.Errorf("refused code c was left on disk: %v", err)
	}
	if _, err := os.Stat(dirOf(d('b'))); err != nil {
		t.Errorf("code b in use was removed: %v", err)
	}
	if used := w.budget.used(); used != 600<<10 {
		t.Errorf("budget counts %d bytes, want %d", used, 600<<10)
	}
}
