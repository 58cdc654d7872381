package node

import (
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workingset"
)

// Working sets (REAP, see internal/workingset). A start of a version with
// a record on this host prefetches the record while the code is fetched
// and the sandbox made; a start without one (or with one that no longer
// matches its files) records: a residency snapshot just before the
// runtime starts, another once it asks for work, off the start's path.

// Prefixes of working-set root IDs.
const (
	layerRoot = "layer:" // an image or code layer, by diff ID
	hostRoot  = "host:"  // a host path
)

// wsStart is one start's part in recording or prefetching its working
// set. Its goroutine and its mount references belong to the start, which
// ends them with wsFinish.
type wsStart struct {
	key string
	// prefetch: the record found, and the outcome of its prefetch (done
	// is closed when the goroutine ends). releases drop the layer mounts
	// the prefetch or the recording holds.
	rec      workingset.Record
	have     bool
	done     chan struct{}
	cancel   context.CancelFunc
	err      error
	res      workingset.Result
	took     time.Duration
	releases []func()
	// recording: the claim on the key, the roots and the snapshot before
	// the runtime started; platform is Baton's own executables that a
	// container's creation runs, snapshotted when the start begins.
	unclaim  func()
	roots    []workingset.Root
	before   *workingset.Snapshot
	platform *workingset.Snapshot
}

// wsBegin starts spec's prefetch if this host has its working set, or
// returns a wsStart that records it; nil when working sets are off for
// spec.
//
// Only sandboxes that see images and code layers take part: without
// isolation a start reads the host's own interpreter and libraries, shared
// with every other process and mostly cached, and a snapshot of a host's
// whole standard library costs seconds on a busy machine, on the first
// cold start of every version.
func (w *Worker) wsBegin(ctx context.Context, spec workerapi.InstanceSpec) *wsStart {
	if w.workingSets == nil || !spec.Spec.PrefetchOn() || !w.caps.Programs {
		return nil
	}
	if _, isolated := w.files.(imageFiles); !isolated {
		return nil
	}
	ws := &wsStart{key: workingset.Key(spec.Function, spec.Version, spec.CodeDigest, spec.Spec.Runtime, spec.Spec.Image)}
	ws.rec, ws.have = w.workingSets.Get(ws.key)
	if !ws.have {
		if roots := w.platformRoots(); len(roots) > 0 {
			// Before the sandbox is made: creating a container runs these.
			if snap, err := workingset.Snap(ctx, roots); err == nil {
				ws.platform = snap
			}
		}
		return ws
	}
	pctx, cancel := context.WithCancel(ctx)
	ws.cancel, ws.done = cancel, make(chan struct{})
	go func() {
		defer close(ws.done)
		began := time.Now()
		ws.res, ws.err = w.wsPrefetch(pctx, ws)
		ws.took = time.Since(began)
	}()
	return ws
}

// wsPrefetch resolves the record's roots (holding layer mounts, so that
// what it reads stays cached until the sandbox holds them too), checks
// its files and reads them in.
func (w *Worker) wsPrefetch(ctx context.Context, ws *wsStart) (workingset.Result, error) {
	roots := map[string]string{}
	for _, id := range ws.rec.Roots {
		switch {
		case strings.HasPrefix(id, layerRoot):
			if w.opts.Layers == nil {
				continue
			}
			dir, release, err := w.opts.Layers.Mount(ctx, strings.TrimPrefix(id, layerRoot))
			if err != nil {
				// Gone (collected, re-imported): Check reports the
				// record stale.
				w.log.Debug("working set: layer not mountable", "root", id, "err", err)
				continue
			}
			ws.releases = append(ws.releases, release)
			roots[id] = dir
		case strings.HasPrefix(id, hostRoot):
			roots[id] = strings.TrimPrefix(id, hostRoot)
		}
	}
	targets, err := workingset.Check(ws.rec, roots)
	if err != nil {
		return workingset.Result{}, err
	}
	return workingset.Prefetch(ctx, targets)
}

// wsBeforeSpawn runs once the sandbox shows the code, just before the
// runtime starts: it waits for the prefetch (which ran while the sandbox
// was made, so that little of it is left by now) and, when the start has
// no usable record, takes the snapshot a recording starts from.
func (w *Worker) wsBeforeSpawn(ctx context.Context, ws *wsStart, in *instance) {
	if ws == nil {
		return
	}
	roots, release := w.wsRoots(ctx, ws, in)
	recording := false
	defer func() {
		if !recording {
			release()
		}
	}()
	if ws.have {
		<-ws.done
		same := slices.Equal(sortedIDs(roots), slices.Sorted(slices.Values(ws.rec.Roots)))
		if ws.err == nil && same {
			w.workingSets.Used(ws.key)
			w.log.Debug("working set prefetched", "function", in.spec.Function, "version", in.spec.Version,
				"files", ws.res.Files, "ranges", ws.res.Ranges, "bytes", ws.res.Bytes, "took", ws.took)
			return
		}
		if ctx.Err() != nil {
			return
		}
		if ws.err == nil {
			// Prefetched, but the sandbox reads other layers too (the
			// image changed under its name): what was prefetched would
			// hide from a recording now, so the next cold start records.
			w.log.Info("working set no longer matches the sandbox's layers; the next cold start records it again",
				"function", in.spec.Function, "version", in.spec.Version)
			w.workingSets.Delete(ws.key)
			return
		}
		w.log.Info("working set no longer matches; recording it again", "function", in.spec.Function, "version", in.spec.Version, "reason", ws.err)
		w.workingSets.Delete(ws.key)
	}
	unclaim, ok := w.workingSets.Claim(ws.key)
	if !ok {
		return // another start of the version records it
	}
	before, err := workingset.Snap(ctx, roots)
	if err != nil {
		unclaim()
		w.log.Warn("working set: snapshot before the start", "function", in.spec.Function, "err", err)
		return
	}
	if ws.platform != nil {
		before = workingset.Merge(ws.platform, before)
		roots = append(slices.Clone(ws.platform.Roots()), roots...)
	}
	ws.unclaim, ws.roots, ws.before = unclaim, roots, before
	// The roots' mounts are held until the second snapshot.
	ws.releases = append(ws.releases, release)
	recording = true
}

// wsFinish ends the start's part: on a successful start that records,
// the second snapshot and the record are made in the background (the
// instance is ready; nothing waits for them).
func (w *Worker) wsFinish(ws *wsStart, spec workerapi.InstanceSpec, started bool) {
	if ws == nil {
		return
	}
	if ws.done != nil {
		ws.cancel()
		<-ws.done
	}
	releaseAll := func() {
		for _, release := range ws.releases {
			release()
		}
	}
	if ws.before == nil || !started {
		releaseAll()
		if ws.unclaim != nil {
			ws.unclaim()
		}
		return
	}
	w.background.Add(1)
	go func() {
		defer w.background.Done()
		defer ws.unclaim()
		defer releaseAll()
		after, err := workingset.Snap(w.ctx, ws.roots)
		if err != nil {
			if w.ctx.Err() == nil { // else the worker is closing
				w.log.Warn("working set: snapshot after the start", "function", spec.Function, "err", err)
			}
			return
		}
		rec := workingset.Build(ws.before, after, workingset.DefaultLimits())
		rec.Key, rec.Function, rec.Version = ws.key, spec.Function, spec.Version
		if len(rec.Files) == 0 {
			// Everything was cached already: nothing to learn; the next
			// cold start tries again.
			w.log.Debug("working set: the start read no page that was not cached", "function", spec.Function)
			return
		}
		if err := w.workingSets.Put(rec); err != nil {
			w.log.Warn("working set: store record", "function", spec.Function, "err", err)
			return
		}
		w.log.Info("working set recorded", "function", spec.Function, "version", spec.Version,
			"files", len(rec.Files), "ranges", rec.RangeCount(), "bytes", rec.Bytes(),
			"snapshots", ws.before.Took+after.Took)
	}()
}

// wsRoots are the directories the instance's sandbox reads from: its
// image's layers, its code layer and Baton's runtime clients (wsBegin
// admits only sandboxes that see layers). Layers are reached through mount
// references of their own (release drops them), so that a recording can
// finish its walk when the sandbox is already gone.
func (w *Worker) wsRoots(ctx context.Context, ws *wsStart, in *instance) (roots []workingset.Root, release func()) {
	var releases []func()
	release = func() {
		for _, r := range releases {
			r()
		}
	}
	if ws.platform == nil {
		// The prefetch path compares every root with the record's.
		roots = append(roots, w.platformRoots()...)
	}
	// Baton's runtime clients are bound into every sandbox from here.
	roots = append(roots, workingset.Root{ID: hostRoot + w.runtimes.Dir, Path: w.runtimes.Dir})
	ids := make([]string, 0, len(in.sandbox.image.LowerDirs)+1)
	for _, dir := range in.sandbox.image.LowerDirs {
		ids = append(ids, layerID(dir))
	}
	if diffID, err := w.codeLayer(ctx, in.spec.CodeDigest); err == nil {
		ids = append(ids, layerRoot+diffID)
	}
	for _, id := range ids {
		diffID, ok := strings.CutPrefix(id, layerRoot)
		if !ok {
			roots = append(roots, workingset.Root{ID: id, Path: strings.TrimPrefix(id, hostRoot)})
			continue
		}
		dir, rel, err := w.opts.Layers.Mount(ctx, diffID)
		if err != nil {
			w.log.Debug("working set: layer not mountable", "root", id, "err", err)
			continue
		}
		releases = append(releases, rel)
		roots = append(roots, workingset.Root{ID: id, Path: dir})
	}
	return roots, release
}

// platformRoots are Baton's executables that creating a container runs:
// this program (the container's init) and the sandbox's PID 1 beside it.
// After a page-cache drop their pages are read like the function's. None
// without isolation: process sandboxes run neither.
func (w *Worker) platformRoots() []workingset.Root {
	if _, isolated := w.files.(imageFiles); !isolated {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil
	}
	if real, err := filepath.EvalSymlinks(exe); err == nil {
		exe = real
	}
	roots := []workingset.Root{{ID: hostRoot + exe, Path: exe}}
	reaper := filepath.Join(filepath.Dir(exe), reaperName)
	if st, err := os.Stat(reaper); err == nil && st.Mode().IsRegular() {
		roots = append(roots, workingset.Root{ID: hostRoot + reaper, Path: reaper})
	}
	return roots
}

// reaperName is the sandbox's PID 1 beside the baton executable
// (container.ReaperName; not imported, to keep the node free of the
// container driver).
const reaperName = "baton-reaper"

// layerID names a mounted layer by its diff ID (its mount point is
// named by the ID's hex digest), so that a record survives a remount.
func layerID(dir string) string {
	base := filepath.Base(dir)
	if _, err := hex.DecodeString(base); err == nil && len(base) == 64 {
		return layerRoot + "sha256:" + base
	}
	return hostRoot + dir
}

func sortedIDs(roots []workingset.Root) []string {
	ids := make([]string, len(roots))
	for i, r := range roots {
		ids[i] = r.ID
	}
	slices.Sort(ids)
	return ids
}

// openWorkingSets opens the host's working-set records (beside the layer
// store), or returns nil when they are off.
func openWorkingSets(opts Options) (*workingset.Store, error) {
	if !opts.Prefetch {
		return nil, nil
	}
	s, err := workingset.Open(filepath.Join(opts.DataDir, "workingsets"), 0)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// workingSetInfo lists the records for Info.
func (w *Worker) workingSetInfo() []workerapi.WorkingSet {
	if w.workingSets == nil {
		return nil
	}
	var out []workerapi.WorkingSet
	for _, s := range w.workingSets.List() {
		out = append(out, workerapi.WorkingSet{Function: s.Function, Version: s.Version, Bytes: s.Bytes,
			Ranges: s.Ranges, Files: s.Files, Recorded: s.Recorded, Prefetches: s.Prefetches})
	}
	return out
}
