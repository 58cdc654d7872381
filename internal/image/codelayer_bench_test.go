package image

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkCodeLayer measures what a new code version costs an isolated
// sandbox before its first instance can start, once the archive is
// unpacked: storing the tree as an EROFS layer (write and fsync), checking
// its digest, mounting it and attaching it to a sandbox's task view —
// against the baseline of hard-linking the unpacked tree into a
// per-sandbox directory (what the worker did before code layers):
//
//	go test -run '^$' -bench CodeLayer -benchtime 30x ./internal/image/
//
// Each iteration stores different content (a new version). build-ms/op
// and attach-ms/op split the layer's cost.
func BenchmarkCodeLayer(b *testing.B) {
	requireMount(b)
	for _, sz := range []struct {
		name string
		bulk int
	}{{"small", 0}, {"20MB", 20 << 20}} {
		src := codeBenchTree(b, sz.bulk)
		b.Run(sz.name+"/erofs-layer", func(b *testing.B) {
			s := newStore(b)
			ctx := context.Background()
			var build, attach time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				must(b, os.WriteFile(filepath.Join(src, "VERSION"), []byte(fmt.Sprint(i, time.Now().UnixNano())), 0o644))
				v, err := s.NewView(fmt.Sprintf("sb-%d", i))
				must(b, err)
				ref := fmt.Sprintf("code/%d", i)
				b.StartTimer()

				t0 := time.Now()
				l, err := s.AddLayerFromDir(ctx, src, WithRef(ref), Rebuildable()) // as the worker stores code
				must(b, err)
				t1 := time.Now()
				_, err = v.Attach(ctx, "code", l.DiffID)
				must(b, err)
				build, attach = build+t1.Sub(t0), attach+time.Since(t1)

				b.StopTimer()
				must(b, v.Close())
				must(b, s.DeleteRef(ctx, ref))
				b.StartTimer()
			}
			b.ReportMetric(float64(build.Microseconds())/1000/float64(b.N), "build-ms/op")
			b.ReportMetric(float64(attach.Microseconds())/1000/float64(b.N), "attach-ms/op")
		})
		b.Run(sz.name+"/hardlink-tree", func(b *testing.B) {
			dst := b.TempDir()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				must(b, os.WriteFile(filepath.Join(src, "VERSION"), []byte(fmt.Sprint(i)), 0o644))
				target := filepath.Join(dst, fmt.Sprint(i))
				b.StartTimer()
				must(b, hardLinkTree(src, target))
				b.StopTimer()
				must(b, os.RemoveAll(target))
				b.StartTimer()
			}
		})
	}
}

// codeBenchTree is a function's unpacked code: a handler, 24 small modules
// in 4 packages, and bulk bytes of libraries in 512 KiB files.
func codeBenchTree(b *testing.B, bulk int) string {
	dir := b.TempDir()
	rng := rand.New(rand.NewPCG(7, 7))
	write := func(name string, size int) {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		must(b, os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755))
		must(b, os.WriteFile(filepath.Join(dir, name), data, 0o644))
	}
	write("app.py", 2048)
	for i := range 24 {
		write(fmt.Sprintf("pkg%d/mod%d.py", i%4, i), 1024+rng.IntN(8192))
	}
	for i := 0; i*512<<10 < bulk; i++ {
		write(fmt.Sprintf("lib/part%03d.so", i), 512<<10)
	}
	return dir
}

// hardLinkTree is the baseline: src recreated at dst with hard links.
func hardLinkTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		return os.Link(p, target)
	})
}
