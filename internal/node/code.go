package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/image"
)

// codeUse tracks who uses a digest's code (unpacked or its layer): its
// instances, and the isolated sandboxes that show it.
type codeUse struct {
	refs     int
	lastUsed time.Time
}

// codeCacheTTL is how long unused code (unpacked, or its layer) is kept
// for the next cold start before the janitor removes it.
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

// codeRefPrefix names the image store refs of code layers: code/<hex>.
const codeRefPrefix = "code/"

// codeHex checks a code digest ("sha256:<64 hex>") and returns its hex.
func codeHex(digest string) (string, error) {
	h, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		return "", fmt.Errorf("bad code digest %q", digest)
	}
	return h, nil
}

// adoptCodeLayers registers the code layers a previous run stored, so
// that the janitor collects those nobody uses any more.
func (w *Worker) adoptCodeLayers() error {
	refs, err := w.opts.Layers.Refs(codeRefPrefix)
	if err != nil {
		return fmt.Errorf("code layers: %w", err)
	}
	for name := range refs {
		if l, err := w.opts.Layers.Ref(name); err == nil {
			w.budget.set("sha256:"+strings.TrimPrefix(name, codeRefPrefix), l.Size)
		}
	}
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	for name := range refs {
		w.codeUses["sha256:"+strings.TrimPrefix(name, codeRefPrefix)] = &codeUse{lastUsed: now}
	}
	return nil
}

// collectCode removes the code (unpacked, or its layer) that nothing used
// for ttl, so that deploys of new code cannot fill the disk over time.
func (w *Worker) collectCode(ttl time.Duration) {
	now := time.Now()
	var candidates []string
	w.mu.Lock()
	for digest, u := range w.codeUses {
		if u.refs <= 0 && now.Sub(u.lastUsed) >= ttl {
			candidates = append(candidates, digest)
		}
	}
	w.mu.Unlock()
	for _, digest := range candidates {
		w.removeCode(digest, ttl)
	}
}

// removeCode deletes digest's code unless it came back into use. The
// digest's lock keeps codeDir from handing out what is being deleted.
func (w *Worker) removeCode(digest string, ttl time.Duration) {
	hexDigest, err := codeHex(digest)
	if err != nil {
		return
	}
	unlock := w.codeLocks.Lock(digest)
	defer unlock()
	w.mu.Lock()
	u := w.codeUses[digest]
	_, busy := w.extracting[digest]
	if u == nil || u.refs > 0 || time.Since(u.lastUsed) < ttl || busy {
		w.mu.Unlock()
		return
	}
	delete(w.codeUses, digest)
	w.mu.Unlock()
	if w.isolated() {
		// The layer goes with its ref unless a sandbox still shows it
		// (it cannot: sandboxes hold the code they show).
		err = w.opts.Layers.DeleteRef(context.Background(), codeRefPrefix+hexDigest)
	} else {
		err = os.RemoveAll(filepath.Join(w.opts.DataDir, "code", hexDigest))
	}
	if err != nil {
		w.log.Warn("remove unused code", "digest", digest, "err", err)
		return
	}
	w.budget.remove(digest)
	w.log.Debug("unused code removed", "digest", digest)
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

// codeDir makes the code of digest available on this host, fetching it
// once per host; concurrent callers for one digest share the work.
// Without isolation the code is unpacked into the code cache, whose
// directory is returned. With isolated sandboxes it is stored as a
// read-only EROFS layer instead (see codeLayer; taskRoot shows it in the
// sandbox) and the returned directory is empty.
func (w *Worker) codeDir(ctx context.Context, digest string) (string, error) {
	if w.isolated() {
		_, err := w.codeLayer(ctx, digest)
		return "", err
	}
	hexDigest, err := codeHex(digest)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(w.opts.DataDir, "code", hexDigest)
	err = w.prepareCode(ctx, digest, func() bool {
		_, err := os.Stat(dir)
		return err == nil
	}, func() error {
		if err := w.extract(ctx, digest, dir); err != nil {
			return err
		}
		return w.admitUnpacked(digest, dir)
	})
	if err != nil {
		return "", err
	}
	return dir, nil
}

// codeLayer returns the diffID of digest's code layer, building the layer
// from the code archive once per host. The layer stays stored (across
// restarts) until the janitor finds it unused.
func (w *Worker) codeLayer(ctx context.Context, digest string) (string, error) {
	hexDigest, err := codeHex(digest)
	if err != nil {
		return "", err
	}
	var diffID string
	err = w.prepareCode(ctx, digest, func() bool {
		l, err := w.opts.Layers.Ref(codeRefPrefix + hexDigest)
		if err != nil && !errors.Is(err, image.ErrNotFound) {
			// Code layers are not synced to disk (image.Rebuildable): a
			// crash can leave them unreadable. Building again repairs.
			w.log.Warn("code layer unreadable; building it again", "digest", digest, "err", err)
		}
		diffID = l.DiffID
		return err == nil
	}, func() error {
		l, err := w.buildCodeLayer(ctx, digest, hexDigest)
		diffID = l.DiffID
		return err
	})
	if err != nil {
		return "", err
	}
	return diffID, nil
}

// buildCodeLayer unpacks the code archive into a temporary directory (with
// the archive package's checks) and stores that tree as a layer.
func (w *Worker) buildCodeLayer(ctx context.Context, digest, hexDigest string) (image.Layer, error) {
	start := time.Now()
	parent := filepath.Join(w.opts.DataDir, "code")
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return image.Layer{}, fmt.Errorf("code cache: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "layer-")
	if err != nil {
		return image.Layer{}, fmt.Errorf("code cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "code")
	if err := w.extract(ctx, digest, dir); err != nil {
		return image.Layer{}, err
	}
	unpacked := time.Since(start)
	l, err := w.opts.Layers.AddLayerFromDir(ctx, dir, image.WithRef(codeRefPrefix+hexDigest), image.Rebuildable())
	if err != nil {
		return image.Layer{}, fmt.Errorf("code layer of %s: %w", digest, err)
	}
	if err := w.admitCode(digest, l.Size); err != nil {
		if derr := w.opts.Layers.DeleteRef(ctx, codeRefPrefix+hexDigest); derr != nil {
			w.log.Warn("remove code layer that did not fit", "digest", digest, "err", derr)
		}
		return image.Layer{}, err
	}
	w.log.Info("code layer built", "digest", digest, "layer", l.DiffID, "size", l.Size,
		"unpack", unpacked, "took", time.Since(start))
	return l, nil
}

// prepareCode runs build unless ready reports the code is there, once for
// concurrent callers of one digest. ready runs under the digest's lock, so
// that removeCode cannot delete what it found.
func (w *Worker) prepareCode(ctx context.Context, digest string, ready func() bool, build func() error) error {
	for {
		unlock := w.codeLocks.Lock(digest)
		ok := ready()
		unlock()
		if ok {
			return nil
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
				return ctx.Err()
			}
		}
		err := build()
		w.mu.Lock()
		delete(w.extracting, digest)
		close(wait)
		w.mu.Unlock()
		return err
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
	// What the store handed out must be what the digest names: a worker
	// never runs code it cannot vouch for.
	sum := sha256.New()
	size, err := io.Copy(io.MultiWriter(tmpZip, sum), rc)
	if err != nil {
		return fmt.Errorf("fetch code %s: %w", digest, err)
	}
	if got := "sha256:" + hex.EncodeToString(sum.Sum(nil)); got != digest {
		return fmt.Errorf("fetch code %s: the code store returned content with digest %s", digest, got)
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
