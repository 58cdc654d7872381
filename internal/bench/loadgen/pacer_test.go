package loadgen

import (
	"context"
	"testing"
	"time"
)

// The pacer never returns before the due time, whatever its margin.
func TestPacerNeverEarly(t *testing.T) {
	p := newPacer()
	for i := range 50 {
		due := time.Now().Add(time.Duration(i%5) * 300 * time.Microsecond)
		if !p.wait(context.Background(), due) {
			t.Fatal("wait gave up without a cancelled context")
		}
		if now := time.Now(); now.Before(due) {
			t.Fatalf("returned %v before the due time", due.Sub(now))
		}
	}
}

func TestPacerStopsOnCancel(t *testing.T) {
	p := newPacer()
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan bool, 1)
	go func() { res <- p.wait(ctx, time.Now().Add(time.Hour)) }()
	cancel()
	if <-res {
		t.Fatal("wait reported the due time reached after its context was cancelled")
	}
}

// The margin covers the worst recent oversleep at once, decays slowly
// after, and stays within its bounds.
func TestPacerMarginFollowsOversleep(t *testing.T) {
	p := &pacer{margin: minSpinMargin}
	p.learn(700 * time.Microsecond)
	if want := 700*time.Microsecond + spinGuard; p.margin != want {
		t.Fatalf("margin %v after a 700µs oversleep, want %v", p.margin, want)
	}
	before := p.margin
	p.learn(0)
	if p.margin >= before || p.margin < before-before/32 {
		t.Fatalf("margin went from %v to %v after an on-time wake; want a slow decay", before, p.margin)
	}
	for range 2000 {
		p.learn(0)
	}
	if p.margin != minSpinMargin {
		t.Fatalf("margin %v after many on-time wakes, want the floor %v", p.margin, minSpinMargin)
	}
	p.learn(time.Second)
	if p.margin != maxSpinMargin {
		t.Fatalf("margin %v after a 1 s oversleep, want the ceiling %v", p.margin, maxSpinMargin)
	}
}

// Beyond its spin budget the pacer only sleeps: a spinning scheduler
// would hold a processor the senders need.
func TestPacerSpinBudget(t *testing.T) {
	start := time.Unix(1000, 0)
	p := &pacer{margin: time.Millisecond, start: start}
	if m := p.mayUse(start.Add(time.Second)); m != time.Millisecond {
		t.Fatalf("nothing spun yet: margin %v, want 1ms", m)
	}
	p.spun = 200 * time.Millisecond // 20 % of the first second
	if m := p.mayUse(start.Add(time.Second)); m != time.Millisecond {
		t.Fatalf("within the budget: margin %v, want 1ms", m)
	}
	p.spun = 300 * time.Millisecond // 30 %
	if m := p.mayUse(start.Add(time.Second)); m != 0 {
		t.Fatalf("beyond the budget: margin %v, want none", m)
	}
	// Spinning pays off as time passes without it.
	if m := p.mayUse(start.Add(2 * time.Second)); m != time.Millisecond {
		t.Fatalf("back within the budget: margin %v, want 1ms", m)
	}
}
