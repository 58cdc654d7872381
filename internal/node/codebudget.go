package node

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/errdefs"
)

// DefaultCodeCacheBytes bounds the code cache of a host (unpacked code, or
// code layers) when Options.CodeCacheBytes is unset: sixteen functions at
// the largest default code size.
const DefaultCodeCacheBytes = 16 * archive.DefaultMaxTotalBytes

// ErrCodeCacheFull refuses an instance start whose code does not fit in
// the host's code cache even after unused code was evicted.
var ErrCodeCacheFull = errdefs.New(errdefs.Unavailable, "code_cache_full", "the host's code cache is full")

// codeBudget accounts for the bytes the code cache holds per digest. It
// only counts; the worker decides what to evict (evictFor). Its lock is a
// leaf: nothing else is locked while it is held.
type codeBudget struct {
	limit int64

	mu    sync.Mutex
	sizes map[string]int64 // digest -> bytes on disk
	total int64
}

func newCodeBudget(limit int64) *codeBudget {
	if limit <= 0 {
		limit = DefaultCodeCacheBytes
	}
	return &codeBudget{limit: limit, sizes: map[string]int64{}}
}

// set records digest's size without any check (code found at start-up).
func (b *codeBudget) set(digest string, size int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total += size - b.sizes[digest]
	b.sizes[digest] = size
}

// tryAdd records digest's size if it fits; otherwise it reports how many
// bytes are missing.
func (b *codeBudget) tryAdd(digest string, size int64) (missing int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	total := b.total + size - b.sizes[digest]
	if total > b.limit {
		return total - b.limit
	}
	b.total = total
	b.sizes[digest] = size
	return 0
}

// remove forgets digest's code (it was deleted).
func (b *codeBudget) remove(digest string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total -= b.sizes[digest]
	delete(b.sizes, digest)
}

func (b *codeBudget) used() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total
}

// admitCode is the hook code.go calls once digest's code is on disk (size
// bytes: the unpacked tree, or the layer): it charges the code to the
// host's budget, evicting code no instance uses (least recently used
// first) to make room. When even that is not enough it returns
// ErrCodeCacheFull, and the caller deletes what it built and fails the
// start. The caller holds digest's code (holdCode), so it is never
// evicted for itself.
func (w *Worker) admitCode(digest string, size int64) error {
	missing := w.budget.tryAdd(digest, size)
	if missing == 0 {
		return nil
	}
	for _, victim := range w.code.lruUnused(digest) {
		// removeCode re-checks under the digest's lock that the code is
		// still unused, and tells the budget when it deletes it.
		w.removeCode(victim, 0)
		if missing = w.budget.tryAdd(digest, size); missing == 0 {
			w.log.Info("code cache over its limit: evicted unused code", "for", digest)
			return nil
		}
	}
	return fmt.Errorf("%w: code %s unpacks to %s, but %s of the %s limit is held by code in use (server flag --code-cache-bytes)",
		ErrCodeCacheFull, digest, archive.FormatBytes(size), archive.FormatBytes(w.budget.used()), archive.FormatBytes(w.budget.limit))
}

// admitUnpacked is admitCode for code unpacked into dir (process
// sandboxes): it measures the tree, and removes it when it does not fit.
func (w *Worker) admitUnpacked(digest, dir string) error {
	var size int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			size += fi.Size()
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("code cache: measure %s: %w", digest, err)
	}
	if err := w.admitCode(digest, size); err != nil {
		if rerr := os.RemoveAll(dir); rerr != nil {
			w.log.Warn("remove code that did not fit", "digest", digest, "err", rerr)
		}
		return err
	}
	return nil
}
