package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/baton-faas/baton/internal/archive"
)

// CodeSource hands out code archives by digest (the registry in-process,
// the object store in a cluster).
type CodeSource interface {
	Code(ctx context.Context, digest string) (io.ReadCloser, error)
}

// codeUse tracks who uses an unpacked code directory.
type codeUse struct {
	refs     int
	lastUsed time.Time
}

// codeCacheTTL is how long unused unpacked code is kept for the next cold
// start before the janitor removes it.
const codeCacheTTL = 10 * time.Minute

func (w *Worker) holdCode(digest string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	u := w.codeUses[digest]
	if u == nil {
		u = &codeUse{}
		w.codeUses[digest] = u
	}
	u.refs++
	u.lastUsed = time.Now()
}

func (w *Worker) releaseCode(digest string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if u := w.codeUses[digest]; u != nil {
		u.refs--
		u.lastUsed = time.Now()
	}
}

// collectCode removes unpacked code that no instance used for ttl, so
// that deploys of new code cannot fill the disk over time.
func (w *Worker) collectCode(ttl time.Duration) {
	now := time.Now()
	var victims []string
	w.mu.Lock()
	for digest, u := range w.codeUses {
		if u.refs <= 0 && now.Sub(u.lastUsed) >= ttl {
			if _, busy := w.extracting[digest]; busy {
				continue
			}
			delete(w.codeUses, digest)
			victims = append(victims, digest)
		}
	}
	w.mu.Unlock()
	for _, digest := range victims {
		dir := filepath.Join(w.opts.DataDir, "code", strings.TrimPrefix(digest, "sha256:"))
		if err := os.RemoveAll(dir); err != nil {
			w.log.Warn("remove unused code", "digest", digest, "err", err)
		}
	}
}

func (w *Worker) janitor() {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			w.collectCode(codeCacheTTL)
		}
	}
}

// codeDir returns the unpacked code of digest, fetching and extracting it
// once per host. Concurrent callers for one digest share one extraction.
func (w *Worker) codeDir(ctx context.Context, digest string) (string, error) {
	hexDigest, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(hexDigest) != 64 || strings.ContainsAny(hexDigest, "/.") {
		return "", fmt.Errorf("bad code digest %q", digest)
	}
	dir := filepath.Join(w.opts.DataDir, "code", hexDigest)
	for {
		if _, err := os.Stat(dir); err == nil {
			return dir, nil
		}
		w.mu.Lock()
		wait, busy := w.extracting[digest]
		if !busy {
			wait = make(chan struct{})
			w.extracting[digest] = wait
		}
		w.mu.Unlock()
		if busy {
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		err := w.extract(ctx, digest, dir)
		w.mu.Lock()
		delete(w.extracting, digest)
		close(wait)
		w.mu.Unlock()
		if err != nil {
			return "", err
		}
		return dir, nil
	}
}

func (w *Worker) extract(ctx context.Context, digest, dir string) error {
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("code cache: %w", err)
	}
	rc, err := w.opts.Code.Code(ctx, digest)
	if err != nil {
		return fmt.Errorf("fetch code %s: %w", digest, err)
	}
	defer rc.Close()
	tmpZip, err := os.CreateTemp(parent, "fetch-*.zip")
	if err != nil {
		return fmt.Errorf("code cache: %w", err)
	}
	defer os.Remove(tmpZip.Name())
	defer tmpZip.Close()
	size, err := io.Copy(tmpZip, rc)
	if err != nil {
		return fmt.Errorf("fetch code %s: %w", digest, err)
	}
	tmpDir, err := os.MkdirTemp(parent, "unpack-*")
	if err != nil {
		return fmt.Errorf("code cache: %w", err)
	}
	if _, err := archive.Extract(tmpZip, size, tmpDir, w.opts.ArchiveLimits); err != nil {
		os.RemoveAll(tmpDir)
		return fmt.Errorf("unpack code %s: %w", digest, err)
	}
	// Code dirs are shared by every instance of the version: readable, not
	// writable, by the function.
	if err := os.Chmod(tmpDir, 0o755); err != nil {
		os.RemoveAll(tmpDir)
		return fmt.Errorf("code cache: %w", err)
	}
	if err := os.Rename(tmpDir, dir); err != nil {
		os.RemoveAll(tmpDir)
		if errors.Is(err, os.ErrExist) {
			return nil
		}
		return fmt.Errorf("code cache: %w", err)
	}
	return nil
}
