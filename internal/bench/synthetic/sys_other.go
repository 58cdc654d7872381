//go:build !unix

package synthetic

import (
	"runtime"
	"time"
)

// Without getrusage the process's CPU time and peak RSS are unknown.
func processCPU() time.Duration { return 0 }

func maxRSSMB() float64 { return 0 }

// touch writes one byte per page of a fresh slice; the garbage collector
// frees it later.
func touch(mb int) error {
	mem := make([]byte, mb<<20)
	for i := 0; i < len(mem); i += pageSize {
		mem[i] = 1
	}
	runtime.KeepAlive(mem)
	return nil
}
