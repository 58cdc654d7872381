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
	"slices"
	"strings"
	"sync"
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

// codeRefs is who uses which code on this host, and which code is being
// built. Its lock is taken alone, or under the digest's codeLocks (see
// the package comment).
type codeRefs struct {
	mu       sync.Mutex
	uses     map[string]*codeUse
	building map[string]bool
}

func (c *codeRefs) init() {
	c.uses = map[string]*codeUse{}
	c.building = map[string]bool{}
}

func (c *codeRefs) hold(digest string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	u := c.uses[digest]
	if u == nil {
		u = &codeUse{}
		c.uses[digest] = u
	}
	u.refs++
	u.lastUsed = time.Now()
}

func (c *codeRefs) release(digest string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if u := c.uses[digest]; u != nil {
		u.refs--
		u.lastUsed = time.Now()
	}
}

// adopt registers code found on disk, unused since now.
func (c *codeRefs) adopt(digest string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.uses[digest] = &codeUse{lastUsed: now}
}

// unused lists the digests nobody held for ttl.
func (c *codeRefs) unused(ttl time.Duration, now time.Time) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for digest, u := range c.uses {
		if u.refs <= 0 && now.Sub(u.lastUsed) >= ttl {
			out = append(out, digest)
		}
	}
	return out
}

// forget drops digest if it is still unused for ttl and not being built,
// and reports whether it did; its code may then be deleted.
func (c *codeRefs) forget(digest string, ttl time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	u := c.uses[digest]
	if u == nil || u.refs > 0 || time.Since(u.lastUsed) < ttl || c.building[digest] {
		return false
	}
	delete(c.uses, digest)
	return true
}

func (c *codeRefs) setBuilding(digest string, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if on {
		c.building[digest] = true
	} else {
		delete(c.building, digest)
	}
}

// refs returns how many hold digest, and whether it is known at all.
func (c *codeRefs) refs(digest string) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	u := c.uses[digest]
	if u == nil {
		return 0, false
	}
	return u.refs, true
}

// lruUnused lists the digests nobody holds, least recently used first,
// except keep.
func (c *codeRefs) lruUnused(keep string) []string {
	type cand struct {
		digest string
		used   time.Time
	}
	var cands []cand
	c.mu.Lock()
	for d, u := range c.uses {
		if d != keep && u.refs <= 0 {
			cands = append(cands, cand{d, u.lastUsed})
		}
	}
	c.mu.Unlock()
	slices.SortFunc(cands, func(a, b cand) int { return a.used.Compare(b.used) })
	out := make([]string, len(cands))
	for i, c := range cands {
		out[i] = c.digest
	}
	return out
}

// codeCacheTTL is how long unused code (unpacked, or its layer) is kept
// for the next cold start before the janitor removes it.
const codeCacheTTL = 10 * time.Minute

func (w *Worker) holdCode(digest string)    { w.code.hold(digest) }
func (w *Worker) releaseCode(digest string) { w.code.release(digest) }

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
	for name := range refs {
		w.code.adopt("sha256:"+strings.TrimPrefix(name, codeRefPrefix), now)
	}
	return nil
}

// collectCode removes the code (unpacked, or its layer) that nothing used
// for ttl, so that deploys of new code cannot fill the disk over time.
func (w *Worker) collectCode(ttl time.Duration) {
	for _, digest := range w.code.unused(ttl, time.Now()) {
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
	if !w.code.forget(digest, ttl) {
		return
	}
	if err := w.files.remove(context.Background(), digest, hexDigest); err != nil {
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
		case <-w.ctx.Done():
			return
		case <-t.C:
			w.collectCode(codeCacheTTL)
		}
	}
}

// codeDir makes the code of digest available on this host (see
// sandboxFiles.prepare), fetching it once per host; concurrent callers
// for one digest share the work.
func (w *Worker) codeDir(ctx context.Context, digest string) (string, error) {
	return w.files.prepare(ctx, digest)
}

// unpackedCode unpacks digest's code into the host's code cache and
// returns its directory.
func (w *Worker) unpackedCode(ctx context.Context, digest string) (string, error) {
	hexDigest, err := codeHex(digest)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(w.opts.DataDir, "code", hexDigest)
	err = w.prepareCode(ctx, digest, func() bool {
		_, err := os.Stat(dir)
		return err == nil
	}, func(ctx context.Context) error {
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
	}, func(ctx context.Context) error {
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
// concurrent callers of one digest (singleflight). ready runs under the
// digest's lock, so that removeCode cannot delete what it found.
//
// The build runs under the worker's lifetime, bounded by the start
// timeout, not under any caller's ctx: a caller whose ctx ends stops
// waiting and gets ctx's error, while the build goes on for the others
// (and for the next start). Every caller waits in a goroutine of the
// worker's, so that Close waits for builds under way.
func (w *Worker) prepareCode(ctx context.Context, digest string, ready func() bool, build func(context.Context) error) error {
	// ready also collects what the caller wants (a layer's diffID), so it
	// runs again once a build, maybe another caller's, is done.
	for attempt := 0; ; attempt++ {
		unlock := w.codeLocks.Lock(digest)
		ok := ready()
		unlock()
		if ok {
			return nil
		}
		if attempt == 2 {
			return fmt.Errorf("code %s was removed each time it was prepared", digest)
		}
		if err := w.buildShared(ctx, digest, ready, build); err != nil {
			return err
		}
	}
}

// buildShared runs build for digest, or joins the build under way.
func (w *Worker) buildShared(ctx context.Context, digest string, ready func() bool, build func(context.Context) error) error {
	done := make(chan error, 1)
	w.background.Add(1)
	go func() {
		defer w.background.Done()
		_, err, _ := w.builds.Do(digest, func() (any, error) {
			// A build that finished after the caller's check made the
			// code ready.
			unlock := w.codeLocks.Lock(digest)
			ok := ready()
			unlock()
			if ok {
				return nil, nil
			}
			w.code.setBuilding(digest, true)
			defer w.code.setBuilding(digest, false)
			bctx, cancel := context.WithTimeout(w.ctx, w.opts.StartTimeout)
			defer cancel()
			return nil, build(bctx)
		})
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
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
