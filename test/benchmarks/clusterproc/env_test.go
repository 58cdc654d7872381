package clusterproc

import (
	"os"
	"strconv"
	"testing"
	"time"
)

// envInt reads a positive integer knob, or def.
func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// envDuration reads a positive duration knob, or def.
func envDuration(b *testing.B, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		b.Fatalf("%s=%q: want a positive duration such as 10s", name, v)
	}
	return d
}

// Knobs (defaults are what docs/BENCHMARKS.md section 11 reports):
//
//	BATON_FAILOVER_KILLS     kill -9 rounds (10)
//	BATON_FAILOVER_TERMS     SIGTERM rounds (4)
//	BATON_FAILOVER_FUNCTIONS warm functions under load (8)
//	BATON_FAILOVER_RATE      open-loop requests per second (200)
//	BATON_WORKER_KILLS       dead-worker rounds (3)
//	BATON_HOP_REQUESTS       closed-loop requests per path (2000)
//	BATON_HOP_DURATION       open-loop duration per path (15s)
//	BATON_REPLAY_MINUTES     trace minutes replayed (2)
//	BATON_REPLAY_COMPRESS    replay time compression (1)
