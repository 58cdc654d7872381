package archive

import (
	"archive/zip"
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/baton-faas/baton/internal/errdefs"
)

// zerosZip is an honest archive of one file of n zero bytes: deflate makes
// it about a thousand times smaller, as the zip bomb that filled a host.
func zerosZip(t *testing.T, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.Create("zeros.bin")
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for written := 0; written < n; written += len(chunk) {
		if _, err := w.Write(chunk[:min(len(chunk), n-written)]); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func wantTooLarge(t *testing.T, err error, wantIn string) {
	t.Helper()
	if err == nil {
		t.Fatal("archive accepted, want it refused as too large")
	}
	if !errors.Is(err, ErrTooLarge) || !errors.Is(err, ErrInvalid) {
		t.Errorf("error %v: want ErrTooLarge and ErrInvalid", err)
	}
	if c, code := errdefs.Classify(err); c != errdefs.TooLarge || code != "code_too_large" {
		t.Errorf("error %v classified %s/%s, want too-large/code_too_large", err, c, code)
	}
	if !strings.Contains(err.Error(), wantIn) {
		t.Errorf("error %q does not name the limit %q", err, wantIn)
	}
}

// A small archive that unpacks far beyond its size is refused by the ratio
// even under the absolute limit.
func TestCompressionRatioLimit(t *testing.T) {
	data := zerosZip(t, 16<<20)
	_, err := Validate(bytes.NewReader(data), int64(len(data)), DefaultLimits())
	wantTooLarge(t, err, "limit of 100 times the archive's size")
	dest, _, err := extractTo(t, data, DefaultLimits())
	wantTooLarge(t, err, "limit of 100 times the archive's size")
	assertEmpty(t, dest)

	// Below the floor, any ratio is fine.
	small := zerosZip(t, 4<<20)
	if _, err := Validate(bytes.NewReader(small), int64(len(small)), DefaultLimits()); err != nil {
		t.Errorf("4 MiB of zeros refused: %v", err)
	}
}

// The default bound of one function's unpacked code is 256 MiB, checked
// from the headers before anything is decompressed.
func TestDefaultUnpackedLimit(t *testing.T) {
	junk := make([]byte, 3<<20) // big enough that the ratio allows 300 MiB
	_, _ = rand.Read(junk)
	hdr := &zip.FileHeader{Name: "big.bin", Method: zip.Store, UncompressedSize64: 300 << 20, CompressedSize64: uint64(len(junk))}
	data := newZip(t).raw(hdr, junk).bytes()
	_, err := Validate(bytes.NewReader(data), int64(len(data)), Limits{})
	wantTooLarge(t, err, "256 MiB")
	if DefaultLimits().MaxTotalBytes != 256<<20 {
		t.Errorf("default limit %d", DefaultLimits().MaxTotalBytes)
	}
}
