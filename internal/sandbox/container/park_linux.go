//go:build linux && cgo

package container

import (
	"fmt"

	"github.com/opencontainers/cgroups"
)

// Park pauses the process and everything in its cgroup (the cgroup
// freezer): a kept zygote then costs no CPU, and background threads of the
// function's code stay still. Unpark before Kill where the freezer is
// cgroup v1's, which keeps even a killed task until thawed.
func (p *process) Park() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return fmt.Errorf("park process %d: it has exited", p.pid)
	}
	if err := p.cg.Freeze(cgroups.Frozen); err != nil {
		return fmt.Errorf("park process %d: freeze: %w", p.pid, err)
	}
	return nil
}

// Reclaim reclaims the page cache charged to the process's cgroup (unless
// memory reclaim is off) and returns how much; anonymous memory stays
// (there is no swap). It takes no lock of the process's, so that Unpark
// does not wait for the kernel's reclaim.
func (p *process) Reclaim() (int64, error) {
	if p.s.r.opts.NoMemoryReclaim {
		return 0, nil
	}
	n, err := p.s.r.memFiles().drain(p.s.r.memoryDir(p.cg))
	if err != nil {
		return 0, fmt.Errorf("reclaim the memory of process %d: %w", p.pid, err)
	}
	return n, nil
}

// Unpark lets a parked process run again.
func (p *process) Unpark() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return nil
	}
	if err := p.cg.Freeze(cgroups.Thawed); err != nil {
		return fmt.Errorf("unpark process %d: %w", p.pid, err)
	}
	return nil
}
