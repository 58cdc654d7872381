package node

import (
	"testing"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/workerapi"
)

// Every instance's CPU is capped (so that what it leaves running between
// invocations cannot take the host), in proportion to memory with a floor
// of one CPU; weights stay proportional to memory.
func TestInstanceLimitsCapCPU(t *testing.T) {
	for _, c := range []struct{ memoryMB, wantMillis int }{
		{128, 1000}, {1769, 1000}, {3538, 2000}, {10240, 5788},
	} {
		l := instanceLimits(workerapi.InstanceSpec{Spec: function.Spec{MemoryMB: c.memoryMB}})
		if l.CPUMillis != c.wantMillis {
			t.Errorf("%d MB: CPU quota %d millis, want %d", c.memoryMB, l.CPUMillis, c.wantMillis)
		}
		if l.MemoryMB != c.memoryMB {
			t.Errorf("%d MB: memory limit %d", c.memoryMB, l.MemoryMB)
		}
	}
	if a, b := cpuSharesFor(128), cpuSharesFor(256); b != 2*a || a != 1024 {
		t.Errorf("weights 128 MB %d, 256 MB %d: want 1024 and twice that", a, b)
	}
}
