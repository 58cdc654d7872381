package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestIsolationCPUParentAndQuota: a function's processes (its zygote and
// its instance) sit in groups of their own below their sandbox's, below
// Baton's one parent group, which has the host's default CPU weight (so
// that busy host processes cannot starve functions weighted only among
// themselves); every instance group has a CPU quota (one CPU at 128 MB)
// that bounds whatever it leaves running between invocations.
func TestIsolationCPUParentAndQuota(t *testing.T) {
	requirePython(t)
	srv := startServer(t)
	if !containerSandboxes(t, srv) {
		t.Skip("CPU groups exist with container sandboxes only (root, a kernel with namespaces and cgroups)")
	}
	spec := pySpec("echo")
	spec.MemoryMB = 128
	deploy(t, srv, "cpuquota", spec, pyDir)
	mustInvoke(t, srv, "cpuquota", map[string]string{"x": "y"}, nil)

	procs := withEnv(allProcs(), "AWS_LAMBDA_FUNCTION_NAME=cpuquota")
	if len(procs) == 0 {
		t.Fatal("no process of the function found on the host")
	}
	v2 := cpuCgroupV2()
	for _, pid := range procs {
		rel, err := cpuCgroup(pid)
		if err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(strings.Trim(rel, "/"), "/")
		if len(parts) < 3 || parts[0] != "baton" {
			t.Errorf("process %d is in CPU group %s, want /baton/<sandbox>/<its own>", pid, rel)
			continue
		}
		dir := cpuDir(v2, rel)
		if v2 {
			if got := readTrim(t, dir, "cpu.max"); !strings.HasPrefix(got, "100000 ") {
				t.Errorf("process %d: cpu.max %q, want a quota of one CPU (100000 per period)", pid, got)
			}
			if got := readTrim(t, cpuDir(v2, "/baton"), "cpu.weight"); got != "100" {
				t.Errorf("Baton's parent group: cpu.weight %q, want the host default 100", got)
			}
			continue
		}
		if got := readTrim(t, dir, "cpu.cfs_quota_us"); got != "100000" {
			t.Errorf("process %d (group %s): cpu.cfs_quota_us %q, want one CPU (100000)", pid, rel, got)
		}
		if got := readTrim(t, dir, "cpu.shares"); got != "1024" {
			t.Errorf("process %d (group %s): cpu.shares %q, want 1024 for 128 MB", pid, rel, got)
		}
		if got := readTrim(t, cpuDir(v2, "/baton"), "cpu.shares"); got != "1024" {
			t.Errorf("Baton's parent group: cpu.shares %q, want the host default 1024", got)
		}
	}
}

// cpuCgroupV2 tells whether the cpu controller is on the unified hierarchy.
func cpuCgroupV2() bool {
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	b, _ := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
	return err == nil && slices.Contains(strings.Fields(string(b)), "cpu")
}

// cpuCgroup is pid's group in the cpu hierarchy (v1) or the unified one.
func cpuCgroup(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	unified := ""
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if slices.Contains(strings.Split(parts[1], ","), "cpu") {
			return parts[2], nil
		}
		if parts[0] == "0" {
			unified = parts[2]
		}
	}
	if cpuCgroupV2() && unified != "" {
		return unified, nil
	}
	return "", fmt.Errorf("process %d is in no cpu cgroup", pid)
}

func cpuDir(v2 bool, rel string) string {
	if v2 {
		return filepath.Join("/sys/fs/cgroup", rel)
	}
	return filepath.Join("/sys/fs/cgroup/cpu", rel)
}

func readTrim(t *testing.T, dir, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Errorf("read %s: %v", file, err)
	}
	return strings.TrimSpace(string(b))
}
