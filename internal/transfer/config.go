package transfer

import (
	"errors"
	"fmt"
	"time"
)

// Defaults of a worker's direct transfers.
const (
	DefaultMemoryBytes = 1 << 30
	DefaultSpillBytes  = 8 << 30
	DefaultTTL         = 5 * time.Minute
)

// Config is what a host's flags say about direct transfers.
type Config struct {
	// Threshold: a step's output larger than this many bytes stays on
	// its worker and travels as a reference (0: never).
	Threshold int64
	// MemoryBytes bounds the buffers a worker keeps in memory; beyond,
	// they are spilled to files in SpillDir ("": the data directory's
	// transfers/), up to SpillBytes (0: no spilling).
	MemoryBytes int64
	SpillDir    string
	SpillBytes  int64
	// TTL is how long a buffer waits for its pulls.
	TTL time.Duration
}

// Check refuses a configuration that cannot work, naming the flag.
func (c Config) Check() error {
	switch {
	case c.Threshold < 0:
		return errors.New("--transfer-threshold must not be negative (0 disables direct transfers)")
	case c.MemoryBytes < 0:
		return errors.New("--transfer-memory must not be negative")
	case c.SpillBytes < 0:
		return errors.New("--transfer-spill-bytes must not be negative")
	case c.TTL < 0:
		return errors.New("--transfer-ttl must not be negative")
	case c.Threshold > 0 && c.MemoryBytes == 0 && c.SpillBytes == 0:
		return fmt.Errorf("--transfer-threshold %d with neither --transfer-memory nor --transfer-spill-bytes: no room to keep a result", c.Threshold)
	}
	return nil
}
