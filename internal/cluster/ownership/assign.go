package ownership

import (
	"encoding/binary"
	"hash/fnv"
)

// ShardOf is the shard of a function among shards. Every controller must
// compute the same value: it is a contract between versions (a test pins
// it), so change it only with the bucket's name.
func ShardOf(function string, shards int) int {
	h := fnv.New64a()
	h.Write([]byte(function))
	return int(mix(h.Sum64()) % uint64(shards))
}

// Assign picks the controller for a shard by rendezvous hashing: every
// controller gets a score for the shard and the highest wins (ties, which
// need a 64-bit collision, go to the smaller id). When a controller joins
// or leaves, only the shards it wins or held move; the others stay put.
// Empty controllers give "".
func Assign(shard int, controllers []string) string {
	var best string
	var bestScore uint64
	for _, c := range controllers {
		s := score(shard, c)
		if best == "" || s > bestScore || s == bestScore && c < best {
			best, bestScore = c, s
		}
	}
	return best
}

func score(shard int, controller string) uint64 {
	h := fnv.New64a()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(shard))
	h.Write(b[:])
	h.Write([]byte(controller))
	return mix(h.Sum64())
}

// mix is splitmix64's finaliser: FNV's low bits are poorly spread for
// short inputs that differ in one byte, which modulo and comparisons see.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
