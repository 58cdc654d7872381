//go:build linux && cgo

package container

import (
	"fmt"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
)

// Host-default CPU weights: what every process and group of the host has
// unless someone changed it.
const (
	hostCPUShares = 1024 // cgroup v1 cpu.shares
	hostCPUWeight = 100  // cgroup v2 cpu.weight
)

// setupParent creates the parent group of all sandboxes (Options.
// CgroupParent) and gives it the host-default CPU weight, whatever it had:
// Baton as a whole competes with the host's other processes and groups as
// one of them, and the sandboxes' weights (proportional to their memory)
// divide Baton's share among themselves only. Without an explicit weight
// the parent's is whatever created it left, and sandboxes weighted for
// each other could end up measured against the host's processes.
func (r *Runtime) setupParent() error {
	m, err := manager.New(&cgroups.Cgroup{Path: r.opts.CgroupParent, Resources: &cgroups.Resources{}})
	if err != nil {
		return fmt.Errorf("parent cgroup %s: %w", r.opts.CgroupParent, err)
	}
	if err := m.Apply(-1); err != nil {
		return fmt.Errorf("create parent cgroup %s: %w", r.opts.CgroupParent, err)
	}
	res := &cgroups.Resources{SkipDevices: true}
	if r.v2 {
		res.CpuWeight = hostCPUWeight
	} else {
		res.CpuShares = hostCPUShares
	}
	if err := m.Set(res); err != nil {
		return fmt.Errorf("set the CPU weight of parent cgroup %s: %w", r.opts.CgroupParent, err)
	}
	return nil
}
