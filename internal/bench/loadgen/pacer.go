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
	// spinBudget is the share of wall time the pacer may spend spinning.
	// A spinning scheduler holds one of GOMAXPROCS processors; at high
	// rates the senders need it more than the schedule needs precision,
	// so beyond the budget the pacer only sleeps (and requests that fall
	// due meanwhile go out together, late, which their lag records).
	spinBudget = 0.25
)

// pacer waits until due times for the open-loop scheduler. The runtime's
// timers can wake a goroutine up to a millisecond late on Linux (the
// network poller sleeps in whole milliseconds), so the pacer sleeps until
// margin before the due time and yields the processor in a loop for the
// rest. The margin follows the worst recent oversleep (it decays slowly),
// so a quiet host spins less than a busy one; and it spins at most
// spinBudget of the time. One goroutine uses a pacer.
type pacer struct {
	margin time.Duration
	timer  *time.Timer
	start  time.Time
	spun   time.Duration
}

func newPacer() *pacer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &pacer{margin: time.Millisecond, timer: t, start: time.Now()}
}

// mayUse is the spin margin for the next wait: none while the time spun
// so far exceeds the budget.
func (p *pacer) mayUse(now time.Time) time.Duration {
	if float64(p.spun) > spinBudget*float64(now.Sub(p.start)) {
		return 0
	}
	return p.margin
}

// wait returns at due or just after it, or false once ctx is done.
func (p *pacer) wait(ctx context.Context, due time.Time) bool {
	now := time.Now()
	margin := p.mayUse(now)
	if sleep := due.Sub(now) - margin; sleep > 0 {
		wake := now.Add(sleep)
		p.timer.Reset(sleep)
		select {
		case <-ctx.Done():
			p.timer.Stop()
			return false
		case <-p.timer.C:
		}
		now = time.Now()
		p.learn(now.Sub(wake))
	}
	if margin == 0 {
		return ctx.Err() == nil
	}
	spinFrom := now
	for n := 0; now.Before(due); n++ {
		if n%64 == 63 && ctx.Err() != nil {
			return false
		}
		// Gosched, not a busy loop: senders readied by the last hand-off
		// run on this processor meanwhile.
		runtime.Gosched()
		now = time.Now()
	}
	p.spun += now.Sub(spinFrom)
	return ctx.Err() == nil
}

// learn adapts the margin to an observed oversleep: it jumps up to cover
// the worst case at once and decays by 1/64 per sleep otherwise.
func (p *pacer) learn(over time.Duration) {
	want := over + spinGuard
	decayed := p.margin - p.margin/64
	p.margin = min(max(want, decayed, minSpinMargin), maxSpinMargin)
}
