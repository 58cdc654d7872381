package baseimage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/baton-faas/baton/internal/image"
)

// ErrClosed is returned by a Cache after Close.
var ErrClosed = errors.New("base image cache closed")

// Cache builds each runtime's base image into a store at most once per
// process (again after Forget, or after a build failed), when a start
// first needs it or ahead of time (Prepare). Builds are per runtime: one
// runtime's never waits for another's, and concurrent callers of one
// runtime share a single build. A build nobody waits for pauses while
// foreground work holds the cache (Hold): ahead-of-time builds do not
// take the processors from the starts they are meant to speed up. Builds
// run on goroutines the cache owns: a caller that stops waiting leaves
// its build running for the next one, and Close stops them all and waits
// for them.
type Cache struct {
	store *image.Store
	log   *slog.Logger
	build buildFunc // build; tests stand in for it

	ctx    context.Context // ends with Close, stopping the builds in flight
	cancel context.CancelFunc
	wg     sync.WaitGroup // builds and Prepare's goroutines

	mu      sync.Mutex
	closed  bool
	builds  map[Runtime]*cacheBuild // done, or under way
	started []Runtime
	holds   int           // foreground work under way (Hold)
	changed chan struct{} // closed and replaced when holds or a build's waiters change
}

// cacheBuild is one runtime's build; img and err are set before done closes.
type cacheBuild struct {
	done    chan struct{}
	img     image.Image
	err     error
	waiters int // callers of Get waiting for it (guarded by Cache.mu)
}

// NewCache returns a cache that builds into store.
func NewCache(store *image.Store, log *slog.Logger) *Cache {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Cache{store: store, log: log.With("component", "baseimage"), build: build,
		ctx: ctx, cancel: cancel, builds: map[Runtime]*cacheBuild{}, changed: make(chan struct{})}
}

// Get returns the base image of rt, building it if this process has not
// yet. Waiting ends with ctx; the build does not.
func (c *Cache) Get(ctx context.Context, rt Runtime) (image.Image, error) {
	imgs, errs := c.GetAll(ctx, rt)
	return imgs[0], errs[0]
}

// GetAll is Get for several runtimes, whose builds run side by side: the
// caller waits for the slowest, not for their sum.
func (c *Cache) GetAll(ctx context.Context, rts ...Runtime) ([]image.Image, []error) {
	imgs, errs := make([]image.Image, len(rts)), make([]error, len(rts))
	builds := make([]*cacheBuild, len(rts))
	for i, rt := range rts {
		if builds[i], errs[i] = c.start(rt); errs[i] == nil {
			c.wait(builds[i], 1)
			defer c.wait(builds[i], -1)
		}
	}
	for i, e := range builds {
		if e == nil {
			continue
		}
		select {
		case <-e.done:
			imgs[i], errs[i] = e.img, e.err
		case <-ctx.Done():
			errs[i] = fmt.Errorf("base image %s: %w", rts[i], ctx.Err())
		}
	}
	return imgs, errs
}

// Hold pauses the builds nobody waits for (Prepare's, or one whose caller
// stopped waiting) until release is called, for as long as any hold is
// held: the caller is doing work the processors are better spent on (an
// instance start). Builds someone waits for go on.
func (c *Cache) Hold() (release func()) {
	c.mu.Lock()
	c.holds++
	c.changedLocked()
	c.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			c.holds--
			c.changedLocked()
			c.mu.Unlock()
		})
	}
}

// wait counts a caller of Get in or out of e's waiters.
func (c *Cache) wait(e *cacheBuild, delta int) {
	c.mu.Lock()
	e.waiters += delta
	c.changedLocked()
	c.mu.Unlock()
}

// changedLocked wakes whoever waits for holds or waiters to change (paused
// builds, Prepare); c.mu is held.
func (c *Cache) changedLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// paused returns once e may go on: nothing holds the cache, or someone
// waits for e (or the cache closed: the build then fails). With e nil it
// waits until nothing holds the cache.
func (c *Cache) paused(e *cacheBuild) error {
	for {
		c.mu.Lock()
		if c.holds == 0 || (e != nil && e.waiters > 0) {
			c.mu.Unlock()
			return nil
		}
		changed := c.changed
		c.mu.Unlock()
		select {
		case <-changed:
		case <-c.ctx.Done():
			return c.ctx.Err()
		}
	}
}

// pausable is a build's output: each write first waits while the build is
// paused, which stalls the build and the store's conversion reading it.
type pausable struct {
	c *Cache
	e *cacheBuild
	w io.Writer
}

func (p pausable) Write(b []byte) (int, error) {
	if err := p.c.paused(p.e); err != nil {
		return 0, err
	}
	return p.w.Write(b)
}

// Prepare builds the base images of rts in the background, one after the
// other (on a small host, side by side would delay each), ahead of the
// starts that will need them. A runtime asked for meanwhile (Get) is
// built at once beside these, not after them; none is built twice.
// Runtimes whose interpreter this host lacks are skipped (the build says
// so at debug level).
func (c *Cache) Prepare(rts ...Runtime) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for _, rt := range rts {
			// Not even the part of a build before its first write (a
			// walk of the interpreter's files) starts while the cache
			// is held.
			if err := c.paused(nil); err != nil {
				return
			}
			e, err := c.start(rt)
			if err != nil {
				return
			}
			select {
			case <-e.done:
			case <-c.ctx.Done():
				return
			}
		}
	}()
}

// Started lists the runtimes whose base image this cache set out to build
// (or to check against the store), in the order it did: what first starts
// cost this host.
func (c *Cache) Started() []Runtime {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Runtime(nil), c.started...)
}

// Forget drops a built image (after it was removed from the store), so
// that the next Get builds it again.
func (c *Cache) Forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for rt, e := range c.builds {
		select {
		case <-e.done:
			if e.img.Name == name {
				delete(c.builds, rt)
			}
		default: // under way: it stores the image again anyway
		}
	}
}

// Close stops the builds under way and waits for them. A build stopped
// midway leaves no image: the image record is written last, and the
// store removes a half-converted layer (see ensure).
func (c *Cache) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}

// start returns rt's build, starting it if there is none.
func (c *Cache) start(rt Runtime) (*cacheBuild, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("base image %s: %w", rt, ErrClosed)
	}
	if e, ok := c.builds[rt]; ok {
		return e, nil
	}
	e := &cacheBuild{done: make(chan struct{})}
	c.builds[rt] = e
	c.started = append(c.started, rt)
	c.wg.Add(1)
	go c.run(rt, e)
	return e, nil
}

func (c *Cache) run(rt Runtime, e *cacheBuild) {
	defer c.wg.Done()
	begin := time.Now()
	// Paused between its steps and at each write while the cache is
	// held and nobody waits for it.
	build := func(ctx context.Context, rt Runtime, w io.Writer, o buildOptions) (Info, error) {
		return c.build(ctx, rt, pausable{c, e, w}, o)
	}
	img, stored, err := ensure(c.ctx, c.store, rt, build, func() error { return c.paused(e) })
	e.img, e.err = img, err
	if err != nil {
		// Not kept: the next caller tries again (the build was stopped,
		// the disk was full, an interpreter was installed since).
		c.mu.Lock()
		if c.builds[rt] == e {
			delete(c.builds, rt)
		}
		c.mu.Unlock()
	}
	close(e.done)
	took := time.Since(begin)
	switch {
	case err == nil && stored:
		c.log.Info("base image built", "runtime", rt, "image", img.Name, "size", img.Size, "took", took)
	case err == nil:
		c.log.Debug("base image unchanged", "runtime", rt, "image", img.Name, "took", took)
	case errors.Is(err, ErrNoInterpreter):
		c.log.Debug("no base image: interpreter not installed on this host", "runtime", rt)
	case c.ctx.Err() != nil:
		c.log.Debug("base image build stopped", "runtime", rt, "after", took)
	default:
		c.log.Warn("base image not built", "runtime", rt, "err", err)
	}
}
