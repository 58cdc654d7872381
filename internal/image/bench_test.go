package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Benchmarks for the numbers DESIGN.md quotes (layer write ~9 ms for 2 MB,
// file-backed EROFS mount < 0.5 ms, overlay of several lowers ~0.1 ms):
//
//	go test -run '^$' -bench . -benchtime 200x ./internal/image/
//
// The mount benchmarks need root; each reports the mount alone as
// mount-ns/op next to the full cycle.

// codeLikeTar is a ~2 MB layer shaped like function code with libraries:
// 16 directories of 8 files, mostly small, some incompressible bulk.
func codeLikeTar(b testing.TB, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for d := range 16 {
		dir := fmt.Sprintf("site-packages/pkg%02d/", d)
		must(b, tw.WriteHeader(&tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755}))
		for f := range 8 {
			size := 1 << (9 + rng.IntN(8)) // 512 B .. 64 KiB
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			must(b, tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("%smod%d.py", dir, f), Typeflag: tar.TypeReg,
				Mode: 0o644, Size: int64(size)}))
			_, err := tw.Write(data)
			must(b, err)
		}
	}
	must(b, tw.Close())
	return buf.Bytes()
}

func BenchmarkAddLayer2MB(b *testing.B) {
	s := newStore(b)
	raw := codeLikeTar(b, 1)
	b.SetBytes(int64(len(raw)))
	ctx := context.Background()
	for b.Loop() {
		if _, err := s.AddLayerFromTar(ctx, bytes.NewReader(raw)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMountLayer(b *testing.B) {
	requireMount(b)
	s := newStore(b)
	ctx := context.Background()
	l, err := s.AddLayerFromTar(ctx, bytes.NewReader(codeLikeTar(b, 2)))
	if err != nil {
		b.Fatal(err)
	}
	h, _ := parseDigest(l.DiffID)

	// Store.Mount: digest check + mount, then the release's lazy unmount.
	b.Run("store", func(b *testing.B) {
		var mountTime time.Duration
		for b.Loop() {
			start := time.Now()
			_, release, err := s.Mount(ctx, l.DiffID)
			mountTime += time.Since(start)
			if err != nil {
				b.Fatal(err)
			}
			release()
		}
		b.ReportMetric(float64(mountTime.Nanoseconds())/float64(b.N), "mount-ns/op")
	})
	// The kernel alone: mount(2) of the EROFS file and umount2(2).
	b.Run("kernel", func(b *testing.B) {
		dir := b.TempDir()
		var mountTime time.Duration
		for b.Loop() {
			start := time.Now()
			err := unix.Mount(s.layerFile(h), dir, "erofs", unix.MS_RDONLY, "")
			mountTime += time.Since(start)
			if err != nil {
				b.Fatal(err)
			}
			must(b, unix.Unmount(dir, unix.MNT_DETACH))
		}
		b.ReportMetric(float64(mountTime.Nanoseconds())/float64(b.N), "mount-ns/op")
	})
}

func BenchmarkOverlay3Lowers(b *testing.B) {
	requireMount(b)
	s := newStore(b)
	ctx := context.Background()
	var layers []string
	for i := range 3 {
		l, err := s.AddLayerFromTar(ctx, bytes.NewReader(codeLikeTar(b, uint64(10+i))))
		if err != nil {
			b.Fatal(err)
		}
		layers = append(layers, l.DiffID)
	}
	img, err := s.PutImage(ctx, Image{Name: "bench/three:1", Layers: layers})
	if err != nil {
		b.Fatal(err)
	}
	lowers, release, err := s.RootFS(ctx, img)
	if err != nil {
		b.Fatal(err)
	}
	defer release()
	base := b.TempDir()
	merged := filepath.Join(base, "merged")
	must(b, os.Mkdir(merged, 0o755))
	var mountTime time.Duration
	i := 0
	for b.Loop() {
		// A fresh private upper per sandbox, as the sandbox makes it.
		upper, work := filepath.Join(base, fmt.Sprint("u", i)), filepath.Join(base, fmt.Sprint("w", i))
		i++
		must(b, os.Mkdir(upper, 0o755))
		must(b, os.Mkdir(work, 0o755))
		opts := "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=" + upper + ",workdir=" + work
		start := time.Now()
		err := unix.Mount("overlay", merged, "overlay", 0, opts)
		mountTime += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		must(b, unix.Unmount(merged, unix.MNT_DETACH))
	}
	b.ReportMetric(float64(mountTime.Nanoseconds())/float64(b.N), "mount-ns/op")
}
