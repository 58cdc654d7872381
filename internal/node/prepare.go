package node

import (
	"context"
	"sync"

	"github.com/baton-faas/baton/internal/image/baseimage"
	"github.com/baton-faas/baton/internal/runtimes"
)

// Prepare starts, in the background, what the first start of each runtime
// would otherwise wait for, and returns at once. With isolated sandboxes
// that is the runtimes' base images, built one after the other in the
// registry's order (Python's first, the runtime most functions use); a
// start that needs another builds it at once and pauses these while it
// runs (see start). With process sandboxes it is the lookup of the host's
// interpreters (finding python3's real path behind a version manager's
// shim runs it), each begun at a moment when no start runs. Call it once
// the host serves: it must not delay that. The builds belong to the base
// image cache, the lookups to the worker, whose Close waits for them.
func (w *Worker) Prepare() {
	switch w.files.(type) {
	case imageFiles:
		if w.opts.BaseImages != nil {
			w.opts.BaseImages.Prepare(baseimage.Runtimes()...)
		}
	case hostFiles:
		if !w.caps.Programs {
			return
		}
		w.background.Add(1)
		go func() {
			defer w.background.Done()
			for _, drv := range runtimes.All() {
				// A start of drv meanwhile looks its interpreter up
				// itself; this then finds it done.
				if w.busy.waitIdle(w.ctx) != nil {
					return
				}
				_, _ = w.interps.find(drv) // a missing one fails its starts, not this
			}
		}()
	}
}

// busy counts the starts under way, so that background preparation can
// wait for a moment without one: on a small host a lookup that runs a
// program would take the processors from the start it is meant to speed
// up.
type busy struct {
	mu      sync.Mutex
	starts  int
	changed chan struct{} // closed and replaced when starts changes
}

// enter counts a start in until leave is called.
func (b *busy) enter() (leave func()) {
	b.add(1)
	return func() { b.add(-1) }
}

func (b *busy) add(delta int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.starts += delta
	if b.changed != nil {
		close(b.changed)
		b.changed = nil
	}
}

// waitIdle returns once no start runs, or with ctx's error.
func (b *busy) waitIdle(ctx context.Context) error {
	for {
		b.mu.Lock()
		if b.starts == 0 {
			b.mu.Unlock()
			return ctx.Err()
		}
		if b.changed == nil {
			b.changed = make(chan struct{})
		}
		changed := b.changed
		b.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
