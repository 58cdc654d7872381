package node

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Zygotes kept across scale-to-zero.
//
// When the last instance of a version leaves because the worker stopped
// it (idle scale-down, recycle, a newer version), its grain worker and the
// sandbox it lives in are kept for Options.ZygoteKeep, so that the
// version's next cold start forks instead of re-importing its code. A kept
// grain worker is parked where the sandbox runtime can (container: cgroup
// freezer at once, the page cache charged to its group reclaimed once it
// was kept for reclaimDelay), holds a reference on its sandbox and its
// code, and counts no instance: placement and the worker's reserved
// resources see none.
//
// A keep ends, and the grain worker is stopped (its sandbox with it when
// nothing else uses it), when its window passes, when its zygote dies,
// when the function is deployed again or deleted (FunctionChanged), when a
// start needs the memory (the node's capacity counts kept grain workers at
// their memoryMB; the oldest keeps go first) and at Close. An instance
// that crashed, or a version whose handler failed to import, keeps
// nothing.

// DefaultZygoteKeep is the keep window of `baton server` and `baton
// worker` (--zygote-keep).
const DefaultZygoteKeep = 3 * time.Minute

// parker is implemented by sandbox processes that can be paused and have
// their page cache reclaimed (container.process).
type parker interface {
	Park() error
	Unpark() error
	Reclaim() (int64, error)
}

// ZygoteStats count kept grain workers.
type ZygoteStats struct {
	// Kept: grain workers kept after their last instance left; Revived:
	// starts that forked from a kept one; Dropped: keeps that ended
	// otherwise.
	Kept, Revived, Dropped int64
	// Now is how many are kept now, and MemoryMB what they may use.
	Now, MemoryMB int
}

type zygoteCounters struct {
	kept, revived, dropped atomic.Int64
}

// versions is the newest version of each function this worker was told
// of (FunctionChanged); 0 means deleted. Its lock is a leaf.
type versions struct {
	mu     sync.Mutex
	latest map[string]int
}

func (v *versions) set(name string, version int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.latest == nil {
		v.latest = map[string]int{}
	}
	v.latest[name] = version
}

// current tells whether version is the function's newest known one (or
// nothing is known).
func (v *versions) current(name string, version int) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	latest, ok := v.latest[name]
	return !ok || latest == version
}

// keepable tells whether g may be kept now; it is called under
// grainTable.mu and takes only leaf locks.
func (w *Worker) keepable(g *grainWorker) bool {
	if w.opts.ZygoteKeep <= 0 || w.ctx.Err() != nil || g.app == nil {
		return false
	}
	select {
	case <-g.ready:
	default:
		return false
	}
	if g.err != nil || isDone(g.z) {
		return false
	}
	if info, err := g.z.Ready(context.Background()); err != nil || info.InitError != nil {
		return false // a handler that failed to import is not worth keeping
	}
	return w.fnVersions.current(g.spec.Function, g.spec.Version)
}

// releaseGrainKeeping drops an instance's child reference; the last one
// keeps the grain worker (see the file comment) where keep allows.
func (w *Worker) releaseGrainKeeping(g *grainWorker, keep bool) {
	if !keep || w.opts.ZygoteKeep <= 0 || g.app == nil {
		w.releaseGrain(g)
		return
	}
	// The keep's references are taken first, so that a start reviving
	// the grain worker as soon as it is kept releases references it
	// holds; they are given back if the grain worker is not kept.
	w.apps.hold(g.app, g.spec.Spec.MemoryMB)
	w.holdCode(g.spec.CodeDigest)
	last, kept := w.grains.leave(g, w.keepable, time.Now().Add(w.opts.ZygoteKeep))
	if !kept {
		w.releaseKeep(g)
		if last {
			g.stop()
		}
		return
	}
	w.zygotes.kept.Add(1)
	w.log.Debug("zygote kept", "grain", g.key, "for", w.opts.ZygoteKeep)
	w.background.Add(1)
	go func() {
		defer w.background.Done()
		w.park(g)
	}()
}

// releaseKeep gives back a keep's references on the sandbox and code.
func (w *Worker) releaseKeep(g *grainWorker) {
	w.releaseCode(g.spec.CodeDigest)
	last := w.apps.unhold(g.app, g.spec.Spec.MemoryMB, &w.releases)
	w.afterAppRelease(g.app, last)
}

// park pauses a kept grain worker, unless it was taken back meanwhile.
func (w *Worker) park(g *grainWorker) {
	p, ok := g.proc.(parker)
	if !ok {
		return
	}
	began := time.Now()
	g.parkMu.Lock()
	defer g.parkMu.Unlock()
	if g.parked || !w.grains.isKept(g) {
		return
	}
	if err := p.Park(); err != nil {
		w.log.Debug("park a kept zygote", "grain", g.key, "err", err)
		return
	}
	g.parked = true
	w.log.Debug("zygote parked", "grain", g.key, "took", time.Since(began))
}

// reclaimDelay is how long a kept grain worker keeps its page cache: a
// version that returns within it finds the pages its fork touches still
// in memory (reclaimed, they are read again, by the working-set prefetch
// or fault by fault); one that stays away gives them back.
func reclaimDelay(keep time.Duration) time.Duration {
	return min(keep/2, 30*time.Second)
}

// reclaim gives back the page cache charged to kept grain workers whose
// reclaim is due; a start that takes one back meanwhile does not wait
// for it.
func (w *Worker) reclaim(now time.Time) {
	for _, g := range w.grains.reclaimDue(now) {
		p, ok := g.proc.(parker)
		if !ok {
			continue
		}
		began := time.Now()
		n, err := p.Reclaim()
		if err != nil {
			w.log.Debug("reclaim a kept zygote's memory", "grain", g.key, "err", err)
			continue
		}
		w.log.Debug("kept zygote's page cache reclaimed", "grain", g.key, "reclaimed-bytes", n, "took", time.Since(began))
	}
}

// unpark lets a parked grain worker run again.
func (g *grainWorker) unpark() error {
	g.parkMu.Lock()
	defer g.parkMu.Unlock()
	if !g.parked {
		return nil
	}
	if err := g.proc.(parker).Unpark(); err != nil {
		return err
	}
	g.parked = false
	return nil
}

// revived gives back the keep's references of a grain worker a start took
// back (the start holds its own).
func (w *Worker) revived(g *grainWorker) {
	w.zygotes.revived.Add(1)
	w.releaseKeep(g)
}

// keptFor takes key's kept grain worker back for a start, unless the start
// is to record the version's working set (there is no usable record: none,
// or its prefetch failed): a fork from a kept zygote reads nothing such a
// recording is made of, so the keep is dropped and the start imports
// afresh.
func (w *Worker) keptFor(ctx context.Context, ws *wsStart, key string) *grainWorker {
	if ws != nil && w.grains.hasKept(key) {
		usable := ws.have
		if usable {
			select {
			case <-ws.done: // the prefetch checked the record's files
			case <-ctx.Done():
				return nil
			}
			usable = ws.err == nil
		}
		if !usable {
			w.dropKept("the version's working set is to be recorded again", w.grains.takeKept(func(g *grainWorker) bool {
				return g.key == key
			})...)
			return nil
		}
	}
	return w.grains.claimKept(key)
}

// hasKept tells whether key's grain worker is kept.
func (t *grainTable) hasKept(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	g := t.grains[key]
	return g != nil && g.kept
}

// claimKept takes key's kept grain worker back for a start, counting the
// start as its child; nil if there is none (or it died: the keeper or
// join drops it).
func (t *grainTable) claimKept(key string) *grainWorker {
	t.mu.Lock()
	defer t.mu.Unlock()
	g := t.grains[key]
	if g == nil || !g.kept || isDone(g.z) {
		return nil
	}
	g.kept = false
	g.children++
	return g
}

// dropKept ends the keep of grain workers already taken out of the
// table: each is thawed (a frozen task would not die), stopped, and its
// references given back.
func (w *Worker) dropKept(reason string, gs ...*grainWorker) {
	for _, g := range gs {
		w.zygotes.dropped.Add(1)
		w.log.Debug("kept zygote dropped", "grain", g.key, "reason", reason)
		if err := g.unpark(); err != nil {
			w.log.Warn("unpark a kept zygote to stop it", "grain", g.key, "err", err)
		}
		g.stop()
		w.releaseKeep(g)
	}
}

// FunctionChanged tells the worker that function name now has version
// (0: it was deleted): kept grain workers of its other versions are
// dropped, and none of them is kept from now on.
func (w *Worker) FunctionChanged(name string, version int) {
	w.fnVersions.set(name, version)
	w.dropKept("the function was deployed or deleted", w.grains.takeKept(func(g *grainWorker) bool {
		return g.spec.Function == name && g.spec.Version != version
	})...)
}

// makeRoom drops the oldest kept grain workers until the instances'
// reserved memory and the other keeps fit the worker's capacity; the
// keep of key (the start's own version) is spared.
func (w *Worker) makeRoom(key string) {
	if w.opts.ZygoteKeep <= 0 {
		return
	}
	reserved, _ := w.instances.reserved()
	for {
		g := w.grains.takeOldestOver(key, w.capacity.MemoryMB-reserved.MemoryMB)
		if g == nil {
			return
		}
		w.dropKept("memory: the node's capacity is needed for instances", g)
	}
}

// keeper ends keeps whose window passed or whose zygote died.
func (w *Worker) keeper() {
	tick := min(max(w.opts.ZygoteKeep/4, 50*time.Millisecond), time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case now := <-t.C:
			w.dropKept("the keep window ended or the zygote died", w.grains.takeKept(func(g *grainWorker) bool {
				return !now.Before(g.keptUntil) || isDone(g.z)
			})...)
			w.reclaim(now)
		}
	}
}

// Zygotes reports the kept grain workers.
func (w *Worker) Zygotes() ZygoteStats {
	st := ZygoteStats{Kept: w.zygotes.kept.Load(), Revived: w.zygotes.revived.Load(), Dropped: w.zygotes.dropped.Load()}
	st.Now, st.MemoryMB = w.grains.keptUsage()
	return st
}

// reclaimDue returns the kept grain workers whose page cache is due to be
// reclaimed, marking it done.
func (t *grainTable) reclaimDue(now time.Time) []*grainWorker {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*grainWorker
	for _, g := range t.grains {
		if g.kept && !g.reclaimAt.IsZero() && !now.Before(g.reclaimAt) {
			g.reclaimAt = time.Time{}
			out = append(out, g)
		}
	}
	return out
}

// isKept tells whether g is kept now.
func (t *grainTable) isKept(g *grainWorker) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return g.kept && t.grains[g.key] == g
}

// takeKept takes the kept grain workers that match out of the table.
func (t *grainTable) takeKept(match func(*grainWorker) bool) []*grainWorker {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*grainWorker
	for key, g := range t.grains {
		if g.kept && match(g) {
			g.kept = false
			delete(t.grains, key)
			out = append(out, g)
		}
	}
	return out
}

// takeOldestOver takes the oldest kept grain worker other than key's out
// of the table when the memory of those keeps exceeds budgetMB.
func (t *grainTable) takeOldestOver(key string, budgetMB int) *grainWorker {
	t.mu.Lock()
	defer t.mu.Unlock()
	var keeps []*grainWorker
	total := 0
	for k, g := range t.grains {
		if g.kept && k != key {
			keeps = append(keeps, g)
			total += g.spec.Spec.MemoryMB
		}
	}
	if len(keeps) == 0 || total <= budgetMB {
		return nil
	}
	sort.Slice(keeps, func(i, j int) bool { return keeps[i].keptUntil.Before(keeps[j].keptUntil) })
	g := keeps[0]
	g.kept = false
	delete(t.grains, g.key)
	return g
}

// keptUsage is how many grain workers are kept and their memory.
func (t *grainTable) keptUsage() (n, memoryMB int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, g := range t.grains {
		if g.kept {
			n++
			memoryMB += g.spec.Spec.MemoryMB
		}
	}
	return n, memoryMB
}
