package workingset

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pageFile writes a file of n pages and evicts it from the page cache, so
// that the test controls which of its pages are resident.
func pageFile(t *testing.T, dir, name string, n int) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, n*PageSize)
	for i := range data {
		data[i] = byte(i / PageSize)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	evict(t, p)
	return p
}

func evict(t *testing.T, p string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if st := residency(p, os.Getpagesize()); st == nil || anyResident(st) {
		t.Skipf("cannot evict %s from the page cache on this file system (tmpfs?): the test needs a disk-backed temp dir", p)
	}
}

func anyResident(st *fileState) bool {
	for _, w := range st.resident {
		if w != 0 {
			return true
		}
	}
	return false
}

func readPages(t *testing.T, p string, pages ...int) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Readahead would blur which pages were read: a random-access hint
	// on this descriptor keeps the reads to the pages asked for.
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, PageSize)
	for _, pg := range pages {
		if _, err := f.ReadAt(buf, int64(pg)*PageSize); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBuildRecordsThePagesTheStartRead(t *testing.T) {
	dir := t.TempDir()
	a := pageFile(t, dir, "lib/a.so", 64)
	b := pageFile(t, dir, "b.py", 4)
	pageFile(t, dir, "untouched", 8)
	readPages(t, a, 0) // resident before the start: not its working set
	ctx := context.Background()
	roots := []Root{{ID: "host:test", Path: dir}}
	before, err := Snap(ctx, roots)
	if err != nil {
		t.Fatal(err)
	}
	readPages(t, a, 0, 3, 4, 5, 20, 40)
	readPages(t, b, 1)
	after, err := Snap(ctx, roots)
	if err != nil {
		t.Fatal(err)
	}
	rec := Build(before, after, Limits{GapPages: 0})
	got := map[string][]Range{}
	for _, f := range rec.Files {
		got[f.Path] = f.Pairs()
	}
	want := map[string][]Range{"lib/a.so": {{3, 3}, {20, 1}, {40, 1}}, "b.py": {{1, 1}}}
	if len(got) != len(want) {
		t.Fatalf("files %v, want %v", got, want)
	}
	for p, w := range want {
		if len(got[p]) != len(w) {
			t.Fatalf("%s: ranges %v, want %v", p, got[p], w)
		}
		for i := range w {
			if got[p][i] != w[i] {
				t.Fatalf("%s: ranges %v, want %v", p, got[p], w)
			}
		}
	}
	if rec.Pages() != 6 || rec.RangeCount() != 4 {
		t.Fatalf("pages %d ranges %d, want 6 and 4", rec.Pages(), rec.RangeCount())
	}
	// With a gap, neighbours merge into one request.
	rec = Build(before, after, Limits{GapPages: 16})
	for _, f := range rec.Files {
		if f.Path == "lib/a.so" && (len(f.Pairs()) != 2 || f.Pairs()[0] != (Range{3, 18})) {
			t.Fatalf("coalesced ranges %v, want [{3 18} {40 1}]", f.Pairs())
		}
	}
	// Bounded: at most MaxRanges ranges, the largest files kept.
	rec = Build(before, after, Limits{GapPages: 0, MaxRanges: 1, MaxFiles: 1})
	if len(rec.Files) != 1 || rec.Files[0].Path != "lib/a.so" || rec.RangeCount() != 1 {
		t.Fatalf("bounded record %+v, want one range of lib/a.so", rec.Files)
	}
}

func TestCheckAndPrefetch(t *testing.T) {
	dir := t.TempDir()
	a := pageFile(t, dir, "a", 32)
	rec := Record{Format: FormatVersion, Key: Key("f", 1, "sha256:x", "python", ""), Roots: []string{"host:test"}}
	var st unix.Stat_t
	if err := unix.Stat(a, &st); err != nil {
		t.Fatal(err)
	}
	rec.Files = []File{{Root: 0, Path: "a", Size: st.Size, MtimeNs: st.Mtim.Nano(), Ino: st.Ino, Ranges: []uint32{2, 3, 10, 1}}}
	roots := map[string]string{"host:test": dir}
	targets, err := Check(rec, roots)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Prefetch(context.Background(), targets)
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != 1 || res.Ranges != 2 || res.Bytes != 4*PageSize {
		t.Fatalf("prefetch %+v, want 1 file, 2 ranges, 4 pages", res)
	}
	// Prefetch waits for its reads.
	if s := residency(a, os.Getpagesize()); !s.has(2) || !s.has(3) || !s.has(4) || !s.has(10) {
		t.Fatalf("prefetched pages not resident")
	}

	// Cached already: nothing is read again.
	if res, err = Prefetch(context.Background(), targets); err != nil || res.Bytes != 0 || res.Files != 1 {
		t.Fatalf("second prefetch %+v (%v), want one file and no byte read", res, err)
	}

	// A root the sandbox does not have, a file gone, or changed: stale.
	if _, err := Check(rec, map[string]string{"host:other": dir}); !errors.Is(err, ErrStale) {
		t.Fatalf("unknown root: %v, want ErrStale", err)
	}
	if err := os.WriteFile(a, make([]byte, 33*PageSize), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Check(rec, roots); !errors.Is(err, ErrStale) {
		t.Fatalf("changed file: %v, want ErrStale", err)
	}
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	if _, err := Check(rec, roots); !errors.Is(err, ErrStale) {
		t.Fatalf("missing file: %v, want ErrStale", err)
	}
	bad := rec
	bad.Files = []File{{Root: 0, Path: "../etc/passwd", Ranges: []uint32{0, 1}}}
	if _, err := Check(bad, roots); !errors.Is(err, ErrStale) {
		t.Fatalf("path out of its root: %v, want ErrStale", err)
	}
}

func TestStore(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	k1, k2, k3 := Key("f", 1, "d", "python", ""), Key("f", 2, "d", "python", ""), Key("f", 2, "d2", "python", "")
	if k1 == k2 || k2 == k3 || k1 != Key("f", 1, "d", "python", "") {
		t.Fatal("keys must follow version and code and nothing else")
	}
	if _, ok := s.Get(k1); ok {
		t.Fatal("record before any was put")
	}
	now := time.Now()
	for i, k := range []string{k1, k2} {
		rec := Record{Key: k, Function: "f", Version: i + 1, Recorded: now.Add(time.Duration(i) * time.Second),
			Roots: []string{"r"}, Files: []File{{Path: "x", Ranges: []uint32{0, 2}}}}
		if err := s.Put(rec); err != nil {
			t.Fatal(err)
		}
	}
	rec, ok := s.Get(k2)
	if !ok || rec.Version != 2 || rec.Bytes() != 2*PageSize {
		t.Fatalf("get %v %+v", ok, rec)
	}
	done, ok := s.Claim(k1)
	if !ok {
		t.Fatal("first claim refused")
	}
	if _, ok := s.Claim(k1); ok {
		t.Fatal("second claim of a key granted")
	}
	done()
	if _, ok := s.Claim(k1); !ok {
		t.Fatal("claim after done refused")
	}
	s.Used(k2)
	// Bounded: a third record evicts the oldest.
	if err := s.Put(Record{Key: k3, Recorded: now.Add(2 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Get(k1); ok {
		t.Fatal("oldest record kept beyond the bound")
	}
	list := s.List()
	if len(list) != 2 || list[0].Key != k3 || list[1].Prefetches != 1 {
		t.Fatalf("list %+v", list)
	}
	// Reopened: the records are back; a damaged one is dropped.
	if err := os.WriteFile(filepath.Join(dir, k3+".json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Get(k2); !ok {
		t.Fatal("record lost on reopen")
	}
	if _, ok := s.Get(k3); ok {
		t.Fatal("damaged record kept")
	}
}
