package cli

import (
	"github.com/spf13/pflag"

	"github.com/baton-faas/baton/internal/transfer"
)

// transferFlags registers direct transfers' settings, the same on `baton
// server` and `baton worker`; check reports values that cannot work.
func transferFlags(f *pflag.FlagSet, cfg *transfer.Config) (check func() error) {
	f.Int64Var(&cfg.Threshold, "transfer-threshold", transfer.DefaultThreshold, "a workflow step's output larger than this many bytes stays on its worker and the next step pulls it directly (0: always inline)")
	f.Int64Var(&cfg.MemoryBytes, "transfer-memory", transfer.DefaultMemoryBytes, "memory this worker may use for outputs kept for direct transfers, in bytes (beyond: spilled to files)")
	f.StringVar(&cfg.SpillDir, "transfer-spill-dir", "", "directory for kept outputs that do not fit in --transfer-memory (default <data-dir>/transfers)")
	f.Int64Var(&cfg.SpillBytes, "transfer-spill-bytes", transfer.DefaultSpillBytes, "disk kept outputs may use in --transfer-spill-dir, in bytes (0: no spilling; beyond: outputs pass inline)")
	f.DurationVar(&cfg.TTL, "transfer-ttl", transfer.DefaultTTL, "how long a kept output waits for the steps that pull it")
	return cfg.Check
}
