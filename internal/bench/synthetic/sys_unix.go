//go:build unix

package synthetic

import (
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// processCPU is the user+system CPU time of the whole process.
func processCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// maxRSSMB is the process's peak resident set size in MiB.
func maxRSSMB() float64 {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	if runtime.GOOS == "darwin" || runtime.GOOS == "ios" {
		return float64(ru.Maxrss) / (1 << 20) // bytes there, KiB elsewhere
	}
	return float64(ru.Maxrss) / 1024
}

// touch maps mb MiB of fresh anonymous memory, writes one byte per page so
// the kernel has to back each of them, and unmaps it again. A private
// mapping rather than a Go slice makes the free immediate instead of
// waiting for the garbage collector.
func touch(mb int) error {
	size := mb << 20
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return fmt.Errorf("touch %d MiB: %w", mb, err)
	}
	for i := 0; i < size; i += pageSize {
		mem[i] = 1
	}
	if err := unix.Munmap(mem); err != nil {
		return fmt.Errorf("touch %d MiB: unmap: %w", mb, err)
	}
	return nil
}
