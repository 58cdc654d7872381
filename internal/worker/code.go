package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/baton-faas/baton/internal/archive"
)

// CodeSource hands out code archives by digest (the registry in-process,
// the object store in a cluster).
type CodeSource interface {
	Code(ctx context.Context, digest string) (io.ReadCloser, error)
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
