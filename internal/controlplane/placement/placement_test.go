package placement

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/workerapi"
)

func worker(id string, capacityMB, reservedMB int, apps map[string]int) Candidate {
	return Candidate{
		Info: workerapi.Info{ID: id, Capacity: workerapi.Resources{MemoryMB: capacityMB}, Reserved: workerapi.Resources{MemoryMB: reservedMB}},
		Apps: apps,
	}
}

func TestDefault(t *testing.T) {
	req := Request{Function: "f", App: "shop", MemoryMB: 128}
	cases := []struct {
		name    string
		workers []Candidate
		want    string
	}{
		{"least reserved memory", []Candidate{worker("a", 1024, 512, nil), worker("b", 1024, 128, nil), worker("c", 1024, 256, nil)}, "b"},
		{"share of capacity, not megabytes", []Candidate{worker("a", 1024, 512, nil), worker("b", 4096, 1024, nil)}, "b"},
		{"app's worker although busier", []Candidate{worker("a", 1024, 0, nil), worker("b", 1024, 768, map[string]int{"shop": 2})}, "b"},
		{"other apps do not attract", []Candidate{worker("a", 1024, 0, nil), worker("b", 1024, 128, map[string]int{"blog": 2})}, "a"},
		{"app's worker without room is skipped", []Candidate{worker("a", 1024, 512, nil), worker("b", 1024, 1000, map[string]int{"shop": 7})}, "a"},
		{"least loaded among the app's workers", []Candidate{worker("a", 1024, 900, map[string]int{"shop": 1}), worker("b", 1024, 300, map[string]int{"shop": 1}), worker("c", 1024, 0, nil)}, "b"},
		{"exactly full still fits", []Candidate{worker("a", 1024, 896, nil)}, "a"},
		{"unbounded worker fits", []Candidate{worker("a", 0, 1<<20, nil)}, "a"},
		{"tie goes to the lower id", []Candidate{worker("b", 1024, 0, nil), worker("a", 1024, 0, nil)}, "a"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Default{}.Place(req, c.workers)
			if err != nil || got != c.want {
				t.Fatalf("Place = %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

func TestNoRoom(t *testing.T) {
	req := Request{Function: "f", App: "f", MemoryMB: 256}
	full := []Candidate{worker("a", 1024, 800, map[string]int{"f": 3}), worker("b", 512, 512, nil)}
	for _, name := range Names() {
		p, err := New(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, workers := range [][]Candidate{nil, full} {
			id, err := p.Place(req, workers)
			if !errors.Is(err, ErrNoCapacity) || id != "" {
				t.Errorf("%s with %d workers: Place = %q, %v; want ErrNoCapacity", name, len(workers), id, err)
			}
			if c, _ := errdefs.Classify(err); c != errdefs.Unavailable {
				t.Errorf("%s: class %q, want unavailable", name, c)
			}
		}
	}
}

func TestRoundRobin(t *testing.T) {
	req := Request{Function: "f", MemoryMB: 128}
	p := &RoundRobin{}
	ws := []Candidate{worker("c", 1024, 0, nil), worker("a", 1024, 0, nil), worker("b", 1024, 1000, nil)}
	var got []string
	for range 4 {
		id, err := p.Place(req, ws)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, id)
	}
	// b has no room; a and c alternate whatever the order given.
	if want := "a c a c"; strings.Join(got, " ") != want {
		t.Fatalf("placements %v, want %s", got, want)
	}
	// A worker added between the last and the next one is next.
	ws = append(ws, worker("d", 1024, 0, nil))
	id, _ := p.Place(req, ws)
	if id != "d" {
		t.Fatalf("after adding d behind c: %q, want d", id)
	}
}

func TestRandomUsesEveryWorkerWithRoomOnly(t *testing.T) {
	req := Request{Function: "f", MemoryMB: 128}
	p := NewRandom(rand.NewPCG(1, 2))
	ws := []Candidate{worker("a", 1024, 0, nil), worker("b", 1024, 1000, nil), worker("c", 1024, 0, nil)}
	seen := map[string]int{}
	for range 200 {
		id, err := p.Place(req, ws)
		if err != nil {
			t.Fatal(err)
		}
		seen[id]++
	}
	if seen["b"] != 0 || seen["a"] == 0 || seen["c"] == 0 {
		t.Fatalf("placements %v: want a and c, never the full b", seen)
	}
}

func TestNewUnknown(t *testing.T) {
	if _, err := New("best-fit"); !errors.Is(err, ErrUnknownPolicy) {
		t.Fatalf("err = %v, want ErrUnknownPolicy", err)
	}
}
