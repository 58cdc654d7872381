//go:build linux && cgo

package container

import (
	"fmt"

	"github.com/opencontainers/cgroups"
)

// Park pauses the process and everything in its cgroup (the cgroup
// freezer) and reclaims the page cache charged to the group, unless memory
// reclaim is off; what it reclaimed is returned. Anonymous memory stays
// (there is no swap). A parked process runs nothing until Unpark: a kept
// zygote costs no CPU, and background threads of the function's code stay
// still. Unpark before Kill where the freezer is cgroup v1's, which keeps
// even a killed task until thawed.
func (p *process) Park() (reclaimed int64, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return 0, fmt.Errorf("park process %d: it has exited", p.pid)
	}
	if err := p.cg.Freeze(cgroups.Frozen); err != nil {
		return 0, fmt.Errorf("park process %d: freeze: %w", p.pid, err)
	}
	if p.s.r.opts.NoMemoryReclaim {
		return 0, nil
	}
	n, err := p.s.r.memFiles().drain(p.s.r.memoryDir(p.cg))
	if err != nil {
		// Frozen but not drained: still parked.
		p.s.r.log.Debug("memory reclaim: drain a parked process's group", "sandbox", p.s.id, "err", err)
		return 0, nil
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
