package ownership_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/baton-faas/baton/internal/cluster/ownership"
)

// Every controller of a cluster, whatever its version, must map functions
// to shards and shards to controllers alike: these values are a contract.
func TestShardOfIsPinned(t *testing.T) {
	for _, tc := range []struct {
		function string
		shards   int
		want     int
	}{
		{"hello", 64, 15}, {"hello", 7, 0},
		{"hello2", 64, 31}, {"hello2", 7, 4},
		{"resize-image", 64, 52}, {"resize-image", 7, 3},
		{"a", 64, 56}, {"a", 7, 3},
		{"fn-0", 64, 40}, {"fn-1", 64, 41},
		{"anything", 1, 0},
	} {
		if got := ownership.ShardOf(tc.function, tc.shards); got != tc.want {
			t.Errorf("ShardOf(%q, %d) = %d, want %d", tc.function, tc.shards, got, tc.want)
		}
	}
}

func TestAssign(t *testing.T) {
	three := []string{"c1", "c2", "c3"}
	for _, tc := range []struct {
		name        string
		shard       int
		controllers []string
		want        string
	}{
		{"no controller", 0, nil, ""},
		{"one controller takes everything", 5, []string{"c1"}, "c1"},
		{"pinned 0", 0, three, "c2"},
		{"pinned 3", 3, three, "c1"},
		{"pinned 6", 6, three, "c3"},
		{"order does not matter", 6, []string{"c3", "c1", "c2"}, "c3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ownership.Assign(tc.shard, tc.controllers)
			if got != tc.want {
				t.Fatalf("Assign(%d, %v) = %q, want %q", tc.shard, tc.controllers, got, tc.want)
			}
			if len(tc.controllers) > 0 && !slices.Contains(tc.controllers, got) {
				t.Fatalf("Assign chose %q, not among %v", got, tc.controllers)
			}
		})
	}
}

func assignAll(shards int, controllers []string) []string {
	out := make([]string, shards)
	for s := range shards {
		out[s] = ownership.Assign(s, controllers)
	}
	return out
}

func controllers(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("ctl-%d", i))
	}
	return out
}

// Shards spread over the controllers, and a join or a leave moves only the
// shards that the change concerns.
func TestAssignSpreadsAndMovesLittle(t *testing.T) {
	const shards = ownership.DefaultShards
	for _, n := range []int{2, 3, 5, 8} {
		t.Run(fmt.Sprint(n, " controllers"), func(t *testing.T) {
			ctls := controllers(n)
			before := assignAll(shards, ctls)
			count := map[string]int{}
			for _, c := range before {
				count[c]++
			}
			fair := shards / n
			for _, c := range ctls {
				if count[c] < fair/3 || count[c] > fair*3 {
					t.Errorf("%s has %d of %d shards (fair share %d)", c, count[c], shards, fair)
				}
			}
			gone := ctls[n/2]
			after := assignAll(shards, slices.DeleteFunc(slices.Clone(ctls), func(c string) bool { return c == gone }))
			for s := range shards {
				if before[s] != gone && after[s] != before[s] {
					t.Errorf("shard %d moved from %s to %s when %s left", s, before[s], after[s], gone)
				}
			}
			joined := assignAll(shards, append(slices.Clone(ctls), "newcomer"))
			for s := range shards {
				if joined[s] != before[s] && joined[s] != "newcomer" {
					t.Errorf("shard %d moved from %s to %s when newcomer joined", s, before[s], joined[s])
				}
			}
		})
	}
}
