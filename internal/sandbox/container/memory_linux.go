//go:build linux && cgo

package container

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Memory reclaim. A sandbox's memory limit follows its instances (the node
// resizes it as they come and go). Growing is applied at once, in Resize.
// Shrinking is not: the page cache the departed instances charged to the
// sandbox (files they read, what they wrote to the upper) stays charged
// until something reclaims it, and lowering a cgroup v1 limit below usage
// makes the writer reclaim synchronously, or fail with EBUSY. So Resize
// only records the lower target and the sandbox's reclaimer, a goroutine
// of its own, brings the limit down to it in steps, the kernel reclaiming
// the excess of each step (v1: writing memory.limit_in_bytes; v2: writing
// memory.reclaim, then memory.max, which is never set below usage there
// because v2 would OOM-kill rather than fail). What cannot be reclaimed
// (anonymous memory of live processes, tmpfs without swap) leaves the
// limit above the target: logged and counted, never an error.
//
// An instance's own group is drained before it is removed (v1
// memory.force_empty, v2 memory.reclaim of all it holds), so its page
// cache goes with it rather than lingering, charged to the sandbox, until
// the next shrink.

const (
	// reclaimStep bounds what one limit write reclaims, and so how long a
	// concurrent grow waits for the write in progress.
	reclaimStep = 256 << 20
	// reclaimTimeout bounds one shrink; a later Resize starts a new one.
	reclaimTimeout = 10 * time.Second
	// keepSlack is what the limit keeps above usage where it cannot reach
	// its target without reclaim (reclaim off, or on cgroup v2 after
	// reclaim fell short), so that the remaining processes are not pushed
	// into reclaim by the limit itself.
	keepSlack = 32 << 20
	unlimited = -1
)

// ReclaimStats count what a runtime's sandboxes reclaimed.
type ReclaimStats struct {
	// Shrinks counts shrinks of a sandbox's limit that needed reclaim,
	// Shortfalls those that could not reach their target.
	Shrinks, Shortfalls int64
	// ReclaimedBytes is what those shrinks took back (usage before
	// minus usage after), ReclaimTime the time they took.
	ReclaimedBytes int64
	ReclaimTime    time.Duration
	// Drains counts instance groups drained before removal, DrainedBytes
	// what they still held when drained minus what was left.
	Drains, DrainedBytes int64
}

// reclaimCounters are the atomic form of ReclaimStats.
type reclaimCounters struct {
	shrinks, shortfalls, reclaimed, nanos, drains, drained atomic.Int64
}

func (c *reclaimCounters) stats() ReclaimStats {
	return ReclaimStats{
		Shrinks: c.shrinks.Load(), Shortfalls: c.shortfalls.Load(),
		ReclaimedBytes: c.reclaimed.Load(), ReclaimTime: time.Duration(c.nanos.Load()),
		Drains: c.drains.Load(), DrainedBytes: c.drained.Load(),
	}
}

// memFiles names a memory cgroup's control files.
type memFiles struct {
	v2   bool
	swap bool // v1: memory.memsw.limit_in_bytes exists; v2: memory.swap.max is kept at 0
}

func (f memFiles) usage() string {
	if f.v2 {
		return "memory.current"
	}
	return "memory.usage_in_bytes"
}

// readUsage returns the bytes charged to the memory cgroup at dir.
func (f memFiles) readUsage(dir string) (int64, error) {
	b, err := os.ReadFile(filepath.Join(dir, f.usage()))
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// writeFile writes a cgroup control file (without O_CREAT or O_TRUNC,
// which cgroupfs refuses or ignores).
func writeFile(dir, name, value string) error {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func limitValue(n int64, v2 bool) string {
	switch {
	case n != unlimited:
		return strconv.FormatInt(n, 10)
	case v2:
		return "max"
	default:
		return "-1"
	}
}

// setLimit writes the limit of the memory cgroup at dir, from cur to n.
// On v1 the memory+swap limit must never be below the memory limit: it is
// raised first when growing and lowered after when shrinking, so that
// both stay equal (no swap).
func (f memFiles) setLimit(dir string, cur, n int64) error {
	if f.v2 {
		if err := writeFile(dir, "memory.max", limitValue(n, true)); err != nil {
			return fmt.Errorf("write memory.max: %w", err)
		}
		return nil
	}
	grow := n == unlimited || (cur != unlimited && n > cur)
	if f.swap && grow {
		if err := writeFile(dir, "memory.memsw.limit_in_bytes", limitValue(n, false)); err != nil {
			return fmt.Errorf("write memory.memsw.limit_in_bytes: %w", err)
		}
	}
	if err := writeFile(dir, "memory.limit_in_bytes", limitValue(n, false)); err != nil {
		return fmt.Errorf("write memory.limit_in_bytes: %w", err)
	}
	if f.swap && !grow {
		if err := writeFile(dir, "memory.memsw.limit_in_bytes", limitValue(n, false)); err != nil {
			return fmt.Errorf("write memory.memsw.limit_in_bytes: %w", err)
		}
	}
	return nil
}

// reclaimV2 asks the kernel to reclaim n bytes from the v2 cgroup at dir;
// EAGAIN (it reclaimed less) is not an error, the caller reads usage.
func reclaimV2(dir string, n int64) error {
	err := writeFile(dir, "memory.reclaim", strconv.FormatInt(n, 10))
	if errors.Is(err, unix.EAGAIN) {
		return nil
	}
	return err
}

// drain reclaims what the memory cgroup at dir (an instance's group whose
// processes were killed) still holds, before it is removed; it returns
// the bytes released. Unreclaimable pages (tmpfs without swap) stay, and
// the kernel gives up on them after a few fruitless passes.
func (f memFiles) drain(dir string) (int64, error) {
	before, err := f.readUsage(dir)
	if err != nil || before == 0 {
		return 0, err
	}
	if f.v2 {
		err = reclaimV2(dir, before)
	} else {
		err = writeFile(dir, "memory.force_empty", "0")
	}
	if err != nil {
		return 0, fmt.Errorf("drain %s: %w", dir, err)
	}
	after, err := f.readUsage(dir)
	if err != nil {
		return 0, err
	}
	return max(before-after, 0), nil
}

// memLimiter owns a sandbox's memory limit: Resize's grows and its
// reclaimer's shrinks both go through it.
//
// Locks: mu guards target, limit's readers' view and stopped and is never
// held across a cgroup write; writeMu serialises the limit writes and is
// held for one write at a time (a shrink step reclaims at most
// reclaimStep). writeMu is taken before mu where both are held.
type memLimiter struct {
	dir     string // the sandbox's memory cgroup
	files   memFiles
	reclaim bool
	log     *slog.Logger
	id      string
	sum     *reclaimCounters // the runtime's
	own     reclaimCounters

	writeMu sync.Mutex
	limit   int64 // as last written (guarded by writeMu, read under mu too)

	mu      sync.Mutex
	target  int64
	stopped bool

	kick chan struct{}
	stop context.CancelFunc
	done chan struct{}
}

// newMemLimiter starts the limiter of a sandbox whose memory cgroup is dir
// and whose limit is now limit.
func newMemLimiter(dir string, files memFiles, limit int64, reclaim bool, log *slog.Logger, id string, sum *reclaimCounters) *memLimiter {
	ctx, cancel := context.WithCancel(context.Background())
	m := &memLimiter{
		dir: dir, files: files, reclaim: reclaim, log: log, id: id, sum: sum,
		limit: limit, target: limit,
		kick: make(chan struct{}, 1), stop: cancel, done: make(chan struct{}),
	}
	go m.run(ctx)
	return m
}

// close stops the reclaimer and waits for it.
func (m *memLimiter) close() {
	m.mu.Lock()
	m.stopped = true
	m.mu.Unlock()
	m.stop()
	<-m.done
}

// stats are what this sandbox's shrinks and drains reclaimed.
func (m *memLimiter) stats() ReclaimStats { return m.own.stats() }

// current returns the limit as last written and the target.
func (m *memLimiter) current() (limit, target int64) {
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.limit, m.target
}

// below reports whether limit a is lower than limit b.
func below(a, b int64) bool {
	return a != unlimited && (b == unlimited || a < b)
}

// resize sets the target. A higher limit is written at once; a lower one
// is left to the reclaimer, or, with reclaim off, lowered only as far as
// what is charged allows.
func (m *memLimiter) resize(ctx context.Context, target int64) error {
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		return errors.New("destroyed")
	}
	m.target = target
	m.mu.Unlock()

	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	switch {
	case below(m.limit, target):
		if err := m.files.setLimit(m.dir, m.limit, target); err != nil {
			return err
		}
		m.setLimitLocked(target)
	case below(target, m.limit) && m.reclaim:
		select {
		case m.kick <- struct{}{}:
		default: // a shrink is already due; it reads the latest target
		}
	case below(target, m.limit):
		use, err := m.files.readUsage(m.dir)
		if err != nil {
			return fmt.Errorf("read memory usage: %w", err)
		}
		n := max(target, use+keepSlack)
		if !below(n, m.limit) {
			return nil
		}
		if err := m.files.setLimit(m.dir, m.limit, n); err != nil && !errors.Is(err, unix.EBUSY) {
			return err
		} else if err == nil {
			m.setLimitLocked(n)
		}
	}
	return nil
}

// setLimitLocked records a written limit; writeMu is held.
func (m *memLimiter) setLimitLocked(n int64) {
	m.mu.Lock()
	m.limit = n
	m.mu.Unlock()
}

func (m *memLimiter) run(ctx context.Context) {
	defer close(m.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
		}
		m.shrink(ctx)
	}
}

// shrink brings the limit down to the target, one step at a time.
func (m *memLimiter) shrink(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, reclaimTimeout)
	defer cancel()
	start := time.Now()
	before, err := m.files.readUsage(m.dir)
	if err != nil {
		m.log.Warn("memory reclaim: read usage", "sandbox", m.id, "err", err)
		return
	}
	reclaimed := false
	var stopErr error
	for stopErr == nil {
		var done, did bool
		done, did, stopErr = m.step(ctx)
		reclaimed = reclaimed || did
		if done {
			break
		}
	}
	if !reclaimed && stopErr == nil {
		return // the target was reached without reclaiming anything
	}
	after, err := m.files.readUsage(m.dir)
	if err != nil {
		after = before
	}
	took := time.Since(start)
	got := max(before-after, 0)
	limit, target := m.current()
	for _, c := range []*reclaimCounters{&m.own, m.sum} {
		c.shrinks.Add(1)
		c.reclaimed.Add(got)
		c.nanos.Add(int64(took))
		if stopErr != nil {
			c.shortfalls.Add(1)
		}
	}
	attrs := []any{"sandbox", m.id, "reclaimed-bytes", got, "took", took,
		"usage-bytes", after, "limit-bytes", limit, "target-bytes", target}
	if stopErr != nil && !errors.Is(stopErr, context.Canceled) {
		m.log.Warn("memory reclaim: the limit stays above its target", append(attrs, "err", stopErr)...)
		return
	}
	m.log.Info("memory reclaim", attrs...)
}

// errShortfall says that the kernel found nothing more to reclaim.
var errShortfall = errors.New("nothing more is reclaimable (anonymous memory or tmpfs in use)")

// step lowers the limit by at most reclaimStep below usage. done is set
// once the limit is at (or, after a grow, above) the target; did when the
// step made the kernel reclaim; err stops the shrink.
func (m *memLimiter) step(ctx context.Context) (done, did bool, err error) {
	if err := ctx.Err(); err != nil {
		return true, false, err
	}
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	m.mu.Lock()
	target := m.target
	m.mu.Unlock()
	if !below(target, m.limit) {
		return true, false, nil
	}
	use, err := m.files.readUsage(m.dir)
	if err != nil {
		return true, false, err
	}
	if use <= target {
		err := m.files.setLimit(m.dir, m.limit, target)
		if err == nil {
			m.setLimitLocked(target)
			return true, false, nil
		}
		if !errors.Is(err, unix.EBUSY) {
			return true, false, err
		}
		// Usage rose past the target meanwhile: reclaim it below.
	}
	next := max(target, use-reclaimStep)
	if m.files.v2 {
		if err := reclaimV2(m.dir, use-next); err != nil {
			return true, true, err
		}
		now, err := m.files.readUsage(m.dir)
		if err != nil {
			return true, true, err
		}
		if now > next {
			// Never below usage on v2, which would OOM-kill.
			if n := now + keepSlack; below(n, m.limit) && m.files.setLimit(m.dir, m.limit, n) == nil {
				m.setLimitLocked(n)
			}
			return true, true, errShortfall
		}
		if below(next, m.limit) {
			if err := m.files.setLimit(m.dir, m.limit, next); err != nil {
				return true, true, err
			}
			m.setLimitLocked(next)
		}
		return next == target, true, nil
	}
	if !below(next, m.limit) {
		next = max(target, m.limit-reclaimStep)
	}
	// v1: the write itself reclaims down to next, or fails with EBUSY
	// when a pass of reclaim freed nothing.
	if err := m.files.setLimit(m.dir, m.limit, next); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return true, true, errShortfall
		}
		return true, true, err
	}
	m.setLimitLocked(next)
	return next == target, true, nil
}
