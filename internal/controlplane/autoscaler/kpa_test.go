package autoscaler

import (
	"fmt"
	"testing"
	"time"
)

// kpaRun feeds a KPA one decision per second of a demand series and
// applies its decisions to a simulated function whose starts are ready by
// the next second.
type kpaRun struct {
	k     *KPA
	now   time.Time
	ready int
	idle  map[string]time.Time
	next  int
}

func newKPARun(cfg KPAConfig) *kpaRun {
	return &kpaRun{k: NewKPA(cfg), now: time.Unix(10_000, 0), idle: map[string]time.Time{}}
}

// step runs one second at demand (events in flight or queued; busy
// instances are the first ones) and returns the instance count after it.
func (r *kpaRun) step(t *testing.T, demand, concurrency, maxScale int) int {
	t.Helper()
	busy := min(r.ready, (demand+concurrency-1)/concurrency)
	var idle []IdleInstance
	for id, since := range r.idle {
		if len(idle) < r.ready-busy {
			idle = append(idle, IdleInstance{ID: id, Since: since})
		}
	}
	d := r.k.Plan(Input{Demand: demand, Concurrency: concurrency, Ready: r.ready, MaxScale: maxScale, Idle: idle, Now: r.now})
	for _, id := range d.Stop {
		if _, ok := r.idle[id]; !ok {
			t.Fatalf("stopped %s, which is not idle", id)
		}
		delete(r.idle, id)
		r.ready--
	}
	for range d.Start {
		r.next++
		r.idle[fmt.Sprint("i", r.next)] = r.now
		r.ready++
	}
	r.now = r.now.Add(time.Second)
	return r.ready
}

func TestKPA(t *testing.T) {
	cases := []struct {
		name        string
		concurrency int
		maxScale    int
		demand      func(sec int) int
		seconds     int
		check       func(t *testing.T, counts []int)
	}{
		{"steady load holds steady", 1, 100, func(int) int { return 10 }, 120, func(t *testing.T, c []int) {
			for s := 5; s < len(c); s++ {
				if c[s] != 10 {
					t.Fatalf("second %d: %d instances for a steady 10, want 10 (%v)", s, c[s], c)
				}
			}
		}},
		{"target utilisation leaves headroom with concurrency", 10, 100, func(int) int { return 70 }, 70, func(t *testing.T, c []int) {
			if got := c[len(c)-1]; got != 10 { // 70 / (10 × 0.7)
				t.Fatalf("%d instances for 70 events at concurrency 10, want 10", got)
			}
		}},
		{"burst panics up within the panic window", 1, 100, func(s int) int {
			if s < 60 {
				return 2
			}
			return 40
		}, 64, func(t *testing.T, c []int) {
			if c[59] != 2 {
				t.Fatalf("before the burst: %d, want 2", c[59])
			}
			if c[63] < 20 {
				t.Fatalf("3 s into a burst to 40: only %d instances (%v)", c[63], c[55:])
			}
		}},
		{"panic never scales down, stable mode does so slowly", 1, 100, func(s int) int {
			if s < 10 {
				return 30
			}
			return 1
		}, 200, func(t *testing.T, c []int) {
			for s := 10; s < 60; s++ { // panic began at second 0 and lasts a stable window
				if c[s] < c[9] {
					t.Fatalf("second %d: %d instances in panic mode after %d (%v)", s, c[s], c[9], c[:70])
				}
			}
			if last := c[len(c)-1]; last != 1 {
				t.Fatalf("long after the burst: %d instances, want 1", last)
			}
		}},
		{"idle to zero only after the window and the grace", 1, 100, func(s int) int {
			if s < 5 {
				return 1
			}
			return 0
		}, 150, func(t *testing.T, c []int) {
			if c[40] == 0 {
				t.Fatalf("scaled to zero 35 s after the last request (%v)", c[:50])
			}
			if c[len(c)-1] != 0 {
				t.Fatalf("never scaled to zero (%v)", c[100:])
			}
		}},
		{"maxScale bounds a panic", 1, 8, func(int) int { return 50 }, 10, func(t *testing.T, c []int) {
			for s, n := range c {
				if n > 8 {
					t.Fatalf("second %d: %d instances over maxScale 8", s, n)
				}
			}
		}},
		{"from zero, queued demand starts at once", 1, 100, func(int) int { return 3 }, 1, func(t *testing.T, c []int) {
			if c[0] < 3 {
				t.Fatalf("first decision with 3 queued at zero: %d instances", c[0])
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newKPARun(KPAConfig{})
			counts := make([]int, tc.seconds)
			for s := range tc.seconds {
				counts[s] = r.step(t, tc.demand(s), tc.concurrency, tc.maxScale)
			}
			tc.check(t, counts)
		})
	}
}

func TestKPAScaleDownRate(t *testing.T) {
	k := NewKPA(KPAConfig{StableWindow: 2 * time.Second, PanicWindow: time.Second, ScaleToZeroGrace: time.Second})
	now := time.Unix(0, 0)
	var idle []IdleInstance
	for i := range 20 {
		idle = append(idle, IdleInstance{ID: fmt.Sprint(i), Since: now})
	}
	// Long after any demand, 20 idle instances may halve, not vanish.
	k.lastDemand = now.Add(-time.Hour)
	d := k.Plan(Input{Concurrency: 1, Ready: 20, MaxScale: 100, Idle: idle, Now: now.Add(time.Hour)})
	if len(d.Stop) != 10 {
		t.Fatalf("stopped %d of 20 idle instances in one decision, want 10 (rate 2)", len(d.Stop))
	}
}

func TestNewPolicy(t *testing.T) {
	for _, name := range []string{"", NameImmediate, NameKPA} {
		if _, err := New(name); err != nil {
			t.Errorf("New(%q): %v", name, err)
		}
	}
	if _, err := New("hpa"); err == nil {
		t.Error("New(hpa) accepted an unknown policy")
	}
}
