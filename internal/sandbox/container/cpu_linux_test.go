//go:build linux && cgo

package container

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/cgroups"

	"github.com/baton-faas/baton/internal/sandbox"
)

// All sandboxes sit in one parent group that has the host's default CPU
// weight, whatever it had before, so that their own weights only divide
// Baton's share among themselves; a process's CPU quota is set.
func TestCPUParentGroupAndQuota(t *testing.T) {
	requireContainers(t)
	parent := "/baton-cputest-" + strconv.Itoa(os.Getpid())
	probe := &Runtime{v2: cgroups.IsCgroup2UnifiedMode()}
	weightFile, want := "cpu.shares", strconv.Itoa(hostCPUShares)
	if probe.v2 {
		weightFile, want = "cpu.weight", strconv.Itoa(hostCPUWeight)
	}
	cpuDir := func(cgPath string) string {
		if probe.v2 {
			return filepath.Join("/sys/fs/cgroup", cgPath)
		}
		mnt, err := cgroups.FindCgroupMountpoint("", "cpu")
		if err != nil {
			t.Fatal(err)
		}
		return filepath.Join(mnt, cgPath)
	}
	// A parent left with a starving weight (as if the host's processes
	// had been its siblings' measure) must be set back.
	if err := os.MkdirAll(cpuDir(parent), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := destroyCgroup(parent); err != nil {
			t.Errorf("remove test parent cgroup: %v", err)
		}
	})
	if err := cgroups.WriteFile(cpuDir(parent), weightFile, "2"); err != nil {
		t.Fatal(err)
	}

	r, err := New(Options{StateDir: filepath.Join(t.TempDir(), "state"), ReaperPath: reaperPath, CgroupParent: parent})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if got, err := cgroups.ReadFile(cpuDir(parent), weightFile); err != nil || strings.TrimSpace(got) != want {
		t.Errorf("parent group %s: %s %q (%v), want the host default %s", parent, weightFile, got, err, want)
	}

	spec := testSpec(t, "cpuquota")
	spec.CPUShares = 2048
	sb := create(t, r, spec)
	m, err := sb.cgroupManager()
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Path("cpu"); filepath.Dir(got) != cpuDir(parent) {
		t.Errorf("sandbox cgroup %s is not directly below the parent group %s", got, cpuDir(parent))
	}
	p, err := sb.Start(context.Background(), sandbox.ProcessSpec{
		Args:   []string{"/usr/bin/sleep", "60"},
		Limits: sandbox.Limits{CPUShares: 512, CPUMillis: 1500},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Kill(); _, _ = p.Wait() }()
	procDir := p.(*process).cg.Path("cpu")
	if filepath.Dir(procDir) != m.Path("cpu") {
		t.Errorf("process cgroup %s is not below its sandbox's %s", procDir, m.Path("cpu"))
	}
	if probe.v2 {
		got, err := cgroups.ReadFile(procDir, "cpu.max")
		if err != nil || strings.TrimSpace(got) != "150000 100000" {
			t.Errorf("process cpu.max %q (%v), want 150000 100000", got, err)
		}
		return
	}
	if got, err := cgroups.ReadFile(procDir, "cpu.cfs_quota_us"); err != nil || strings.TrimSpace(got) != "150000" {
		t.Errorf("process cpu.cfs_quota_us %q (%v), want 150000", got, err)
	}
	if got, err := cgroups.ReadFile(procDir, "cpu.cfs_period_us"); err != nil || strings.TrimSpace(got) != "100000" {
		t.Errorf("process cpu.cfs_period_us %q (%v), want 100000", got, err)
	}
}
