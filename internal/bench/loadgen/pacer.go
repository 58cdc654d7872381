package loadgen

import (
	"context"
	"runtime"
	"time"
)

// Bounds of the pacer's spin margin. The ceiling covers the timer's
// granularity; a wake later than that is the host not scheduling us, which
// more spinning does not help (and its CPU time makes the kernel schedule
// us later still).
const (
	minSpinMargin = 200 * time.Microsecond
	maxSpinMargin = 1500 * time.Microsecond
	// spinGuard is added to the worst recent oversleep: the margin must
	// cover the timer's lateness, not just equal it.
	spinGuard = 100 * time.Microsecond
)

// pacer waits until due times for the open-loop scheduler. The runtime's
// timers can wake a goroutine up to a millisecond late on Linux (the
// network poller sleeps in whole milliseconds), so the pacer sleeps until
// margin before the due time and yields the processor in a loop for the
// rest. The margin follows the worst recent oversleep (it decays slowly),
// so a quiet host spins less than a busy one. One goroutine uses a pacer.
type pacer struct {
	margin time.Duration
	timer  *time.Timer
}

func newPacer() *pacer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &pacer{margin: time.Millisecond, timer: t}
}

// wait returns at due or just after it, or false once ctx is done.
func (p *pacer) wait(ctx context.Context, due time.Time) bool {
	if sleep := time.Until(due) - p.margin; sleep > 0 {
		wake := time.Now().Add(sleep)
		p.timer.Reset(sleep)
		select {
		case <-ctx.Done():
			p.timer.Stop()
			return false
		case <-p.timer.C:
		}
		p.learn(time.Since(wake))
	}
	for n := 0; time.Now().Before(due); n++ {
		if n%64 == 63 && ctx.Err() != nil {
			return false
		}
		// Gosched, not a busy loop: senders readied by the last hand-off
		// run on this processor meanwhile.
		runtime.Gosched()
	}
	return ctx.Err() == nil
}

// learn adapts the margin to an observed oversleep: it jumps up to cover
// the worst case at once and decays by 1/64 per sleep otherwise.
func (p *pacer) learn(over time.Duration) {
	want := over + spinGuard
	decayed := p.margin - p.margin/64
	p.margin = min(max(want, decayed, minSpinMargin), maxSpinMargin)
}
