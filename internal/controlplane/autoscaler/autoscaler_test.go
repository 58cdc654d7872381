package autoscaler

import (
	"testing"
	"time"
)

func TestPlan(t *testing.T) {
	now := time.Unix(1000, 0)
	old := now.Add(-2 * time.Minute)
	fresh := now.Add(-time.Second)
	cases := []struct {
		name      string
		in        Input
		wantStart int
		wantStop  []string
	}{
		{"idle at zero stays at zero", Input{Concurrency: 1, MaxScale: 10, Now: now}, 0, nil},
		{"first request starts one", Input{Demand: 1, Concurrency: 1, MaxScale: 10, Now: now}, 1, nil},
		{"burst capped by maxScale", Input{Demand: 200, Concurrency: 1, MaxScale: 20, Now: now}, 20, nil},
		{"starting instances count", Input{Demand: 5, Concurrency: 1, Starting: 3, Ready: 1, MaxScale: 10, Now: now}, 1, nil},
		{"concurrency packs requests", Input{Demand: 9, Concurrency: 4, MaxScale: 10, Now: now}, 3, nil},
		{"minScale keeps warm", Input{Concurrency: 1, MinScale: 2, MaxScale: 10, Now: now}, 2, nil},
		{"expired idle removed", Input{Concurrency: 1, Ready: 2, MaxScale: 10, IdleTimeout: time.Minute, Now: now,
			Idle: []IdleInstance{{"a", old}, {"b", fresh}}}, 0, []string{"a"}},
		{"never below minScale", Input{Concurrency: 1, Ready: 2, MinScale: 1, MaxScale: 10, IdleTimeout: time.Minute, Now: now,
			Idle: []IdleInstance{{"a", old}, {"b", old.Add(time.Second)}}}, 0, []string{"a"}},
		{"never below demand", Input{Demand: 2, Concurrency: 1, Ready: 3, MaxScale: 10, IdleTimeout: time.Minute, Now: now,
			Idle: []IdleInstance{{"a", old}}}, 0, []string{"a"}},
		{"demand keeps idle-expired ones needed", Input{Demand: 3, Concurrency: 1, Ready: 3, MaxScale: 10, IdleTimeout: time.Minute, Now: now,
			Idle: []IdleInstance{{"a", old}}}, 0, nil},
		{"oldest idle goes first", Input{Concurrency: 1, Ready: 3, MaxScale: 10, IdleTimeout: time.Minute, Now: now,
			Idle: []IdleInstance{{"b", old.Add(time.Second)}, {"a", old}, {"c", old.Add(2 * time.Second)}}}, 0, []string{"a", "b", "c"}},
		{"scale down to zero", Input{Concurrency: 1, Ready: 1, MaxScale: 10, IdleTimeout: time.Second, Now: now,
			Idle: []IdleInstance{{"a", fresh}}}, 0, []string{"a"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := Plan(c.in)
			if d.Start != c.wantStart {
				t.Errorf("Start = %d, want %d", d.Start, c.wantStart)
			}
			if len(d.Stop) != len(c.wantStop) {
				t.Fatalf("Stop = %v, want %v", d.Stop, c.wantStop)
			}
			for i := range d.Stop {
				if d.Stop[i] != c.wantStop[i] {
					t.Errorf("Stop = %v, want %v", d.Stop, c.wantStop)
				}
			}
		})
	}
}
