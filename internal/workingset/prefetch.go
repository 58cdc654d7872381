package workingset

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// prefetchWorkers is how many goroutines issue readahead: a few keep the
// device's queue busy without competing with the start for the CPU.
const prefetchWorkers = 4

// ErrStale is returned (wrapped) by Check when a file the record names is
// gone or changed: the record must be made again.
var ErrStale = errors.New("working set is stale")

// Result says what a prefetch did.
type Result struct {
	Files  int
	Ranges int
	Bytes  int64
}

// Target is a file of the record where it is now.
type Target struct {
	path   string
	ranges []Range
	bytes  int64
}

// Check resolves every file of rec under roots (the roots' current paths
// by ID) and checks it is the file that was recorded: same size, mtime and
// inode. A root not in roots, or a file gone or changed, makes the whole
// record stale (ErrStale): a partial prefetch would hide the pages a new
// recording needs to see.
func Check(rec Record, roots map[string]string) ([]Target, error) {
	if rec.Format != FormatVersion {
		return nil, errorf("record format %d, want %d: %w", rec.Format, FormatVersion, ErrStale)
	}
	out := make([]Target, 0, len(rec.Files))
	for _, f := range rec.Files {
		if f.Root < 0 || f.Root >= len(rec.Roots) {
			return nil, errorf("file %q names root %d of %d: %w", f.Path, f.Root, len(rec.Roots), ErrStale)
		}
		dir, ok := roots[rec.Roots[f.Root]]
		if !ok {
			return nil, errorf("root %s is not this sandbox's: %w", rec.Roots[f.Root], ErrStale)
		}
		p := dir
		if f.Path != "" {
			if !filepath.IsLocal(f.Path) {
				return nil, errorf("file %q is not below its root: %w", f.Path, ErrStale)
			}
			p = filepath.Join(dir, f.Path)
		}
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return nil, errorf("%s: %w: %w", p, err, ErrStale)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != f.Size || st.Mtim.Nano() != f.MtimeNs || st.Ino != f.Ino {
			return nil, errorf("%s changed since it was recorded: %w", p, ErrStale)
		}
		t := Target{path: p, ranges: f.Pairs()}
		for _, r := range t.ranges {
			t.bytes += int64(r.Len) * PageSize
		}
		out = append(out, t)
	}
	return out, nil
}

// Prefetch reads every range of targets into the page cache (queued with
// posix_fadvise WILLNEED, then read), on a few goroutines that it waits
// for. It stops early when ctx ends. A file that vanished since Check is
// skipped.
func Prefetch(ctx context.Context, targets []Target) (Result, error) {
	work := make(chan Target)
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		res Result
	)
	for range min(prefetchWorkers, len(targets)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<20)
			for t := range work {
				n, err := prefetchFile(ctx, t, buf)
				mu.Lock()
				if err == nil {
					res.Files++
					res.Ranges += len(t.ranges)
					res.Bytes += n
				}
				mu.Unlock()
			}
		}()
	}
	var err error
feed:
	for _, t := range targets {
		select {
		case work <- t:
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err != nil {
		return res, errorf("prefetch: %w", err)
	}
	return res, nil
}

func prefetchFile(ctx context.Context, t Target, buf []byte) (int64, error) {
	f, err := os.Open(t.path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, err
		}
		return 0, errorf("prefetch %s: %w", t.path, err)
	}
	defer f.Close()
	// Only what is not cached yet: with a warm cache the prefetch then
	// costs a residency check and no copy.
	missing := t.ranges
	if st := residencyOf(f, os.Getpagesize()); st != nil {
		missing = notResident(t.ranges, st)
	}
	// The ranges are what is needed: no readahead beyond them.
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM)
	// First every range is queued (WILLNEED returns once the reads are
	// submitted), so that the device sees them all at once; then each is
	// read, which waits for them. Readahead alone is best effort: on an
	// EROFS file whose backing file is not cached, the kernel may drop
	// pages it could not read at once, and each of those would be a
	// major fault of the instance.
	for _, r := range missing {
		off, length := int64(r.Start)*PageSize, int64(r.Len)*PageSize
		if err := unix.Fadvise(int(f.Fd()), off, length, unix.FADV_WILLNEED); err != nil {
			return 0, errorf("prefetch %s: %w", t.path, err)
		}
	}
	var n int64
	for _, r := range missing {
		off, end := int64(r.Start)*PageSize, int64(r.Start+r.Len)*PageSize
		for off < end {
			if ctx.Err() != nil {
				return n, ctx.Err()
			}
			m, err := f.ReadAt(buf[:min(int64(len(buf)), end-off)], off)
			n += int64(m)
			off += int64(m)
			if err != nil {
				if errors.Is(err, io.EOF) {
					break // the last page of the file is partial
				}
				return n, errorf("prefetch %s: %w", t.path, err)
			}
		}
	}
	return n, nil
}

// notResident returns the parts of ranges whose pages st does not have.
func notResident(ranges []Range, st *fileState) []Range {
	pages := len(st.resident) * 64
	var out []Range
	for _, r := range ranges {
		for p := r.Start; p < r.Start+r.Len; p++ {
			if int(p) < pages && st.has(int(p)) {
				continue
			}
			if n := len(out); n > 0 && out[n-1].Start+out[n-1].Len == p {
				out[n-1].Len++
				continue
			}
			out = append(out, Range{Start: p, Len: 1})
		}
	}
	return out
}
