//go:build linux && cgo

package container

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/sandbox"
)

// instanceMB is what each test instance charges to its sandbox: anonymous
// memory, page cache of a file it reads and a file it writes to /tmp.
const (
	instAnonMB  = 40
	instCacheMB = 48
	instTmpMB   = 6
	instLimitMB = 160
)

// uncachedFiles writes n files of mb MiB each into a new directory and
// drops them from the page cache (only them), so that whoever reads them
// next is charged for their pages.
func uncachedFiles(t *testing.T, n, mb int) string {
	t.Helper()
	dir := t.TempDir()
	buf := []byte(strings.Repeat("baton-reclaim-16", 1<<16)) // 1 MiB
	for i := range n {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("data-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		for range mb {
			if _, err := f.Write(buf); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	return dir
}

// startInstance starts a process confined like an instance that holds
// instAnonMB of anonymous memory, reads /data/data-i whole and writes
// instTmpMB to /tmp, then waits to be killed. It returns once all of that
// is charged.
func startInstance(t *testing.T, sb *Sandbox, i int) sandbox.Process {
	t.Helper()
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	program := fmt.Sprintf(`
import time
anon = bytearray(b"\x01") * (%d << 20)
with open("/data/data-%d", "rb") as f:
    while f.read(1 << 20):
        pass
with open("/tmp/inst-%d", "wb") as f:
    f.write(b"\x02" * (%d << 20))
print("ready", flush=True)
time.sleep(600)
`, instAnonMB, i, i, instTmpMB)
	p, err := sb.Start(context.Background(), sandbox.ProcessSpec{
		Args:   []string{"python3", "-c", program},
		Env:    []string{"PATH=/usr/bin:/bin"},
		Stdout: out, Stderr: out,
		Limits: sandbox.Limits{MemoryMB: instLimitMB},
	})
	if err != nil {
		t.Fatalf("start instance %d: %v", i, err)
	}
	t.Cleanup(func() { _ = p.Kill(); _, _ = p.Wait() })
	waitFor(t, waitTimeout, fmt.Sprintf("instance %d to charge its memory", i), func() bool {
		b, _ := os.ReadFile(out.Name())
		return strings.Contains(string(b), "ready")
	})
	return p
}

func readMemFile(t *testing.T, sb *Sandbox, name string) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(sb.mem.dir, name))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &n); err != nil {
		if strings.TrimSpace(string(b)) == "max" {
			return unlimited
		}
		t.Fatalf("%s: %q: %v", name, b, err)
	}
	return n
}

func (r *Runtime) limitFile() string {
	if r.v2 {
		return "memory.max"
	}
	return "memory.limit_in_bytes"
}

// The sandbox's limit and what is charged to it follow its instances: four
// instances grow it, and once three have gone and the node shrank it for
// one, its limit reaches the new size and the page cache the three
// charged is given back, while the fourth runs on undisturbed.
func TestMemoryFollowsInstances(t *testing.T) {
	r := newRuntime(t)
	const n = 4
	data := uncachedFiles(t, n, instCacheMB)
	spec := testSpec(t, "reclaim-follow")
	spec.Mounts = append(spec.Mounts, sandbox.Mount{Source: data, Target: "/data"})
	size := func(instances int) int { return 64 + instances*instLimitMB }
	spec.MemoryMB = size(1)
	sb := create(t, r, spec)

	var procs []sandbox.Process
	for i := range n {
		if err := sb.Resize(context.Background(), sandbox.Resources{MemoryMB: size(i + 1)}); err != nil {
			t.Fatalf("grow for instance %d: %v", i, err)
		}
		if got, want := readMemFile(t, sb, r.limitFile()), int64(size(i+1))<<20; got != want {
			t.Fatalf("limit after growing for %d instances: %d, want %d (a grow must hold when Resize returns)", i+1, got, want)
		}
		procs = append(procs, startInstance(t, sb, i))
	}
	grown := r.memFiles()
	usage, err := grown.readUsage(sb.mem.dir)
	if err != nil {
		t.Fatal(err)
	}
	perInstance := int64(instAnonMB+instCacheMB+instTmpMB) << 20
	if usage < n*perInstance {
		t.Fatalf("4 instances charged %d bytes, want at least %d", usage, n*perInstance)
	}

	for _, p := range procs[1:] {
		if err := p.Kill(); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	target := int64(size(1)) << 20
	if err := sb.Resize(context.Background(), sandbox.Resources{MemoryMB: size(1)}); err != nil {
		t.Fatalf("shrink to one instance: %v", err)
	}
	// What stays: the survivor's share and the departed ones' /tmp files
	// (tmpfs without swap cannot be reclaimed, only deleted).
	want := perInstance + int64((n-1)*instTmpMB)<<20 + 24<<20
	var last int64
	waitFor(t, waitTimeout, "the limit and the charged memory to follow the instances down", func() bool {
		last, _ = grown.readUsage(sb.mem.dir)
		return readMemFile(t, sb, r.limitFile()) == target && last <= want
	})
	t.Logf("charged: %d MiB with 4 instances, %d MiB with one; limit %d MiB; %+v", usage>>20, last>>20, target>>20, sb.ReclaimStats())
	if st := r.ReclaimStats(); st.Drains+st.Shrinks == 0 || st.DrainedBytes+st.ReclaimedBytes < int64((n-1)*instCacheMB)<<20/2 {
		t.Errorf("reclaim stats %+v: want the departed instances' page cache (%d MiB) counted", st, (n-1)*instCacheMB)
	}
	// The survivor was not touched.
	if _, err := unix.Getpgid(procs[0].Pid()); err != nil {
		t.Errorf("the remaining instance is gone: %v", err)
	}
}

// A shrink the kernel cannot reach (anonymous memory of a live process and
// tmpfs, no swap) neither fails the resize nor kills anything: the limit
// stays above what is in use, and the shortfall is counted. Once the
// memory is freed, the next shrink reaches its target.
func TestReclaimShortfallDoesNotFailResize(t *testing.T) {
	r := newRuntime(t)
	spec := testSpec(t, "reclaim-short")
	spec.MemoryMB = 400
	sb := create(t, r, spec)
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	p, err := sb.Start(context.Background(), sandbox.ProcessSpec{
		Args: []string{"python3", "-c", `
import time
anon = bytearray(b"\x01") * (120 << 20)
with open("/tmp/held", "wb") as f:
    f.write(b"\x02" * (40 << 20))
print("ready", flush=True)
time.sleep(600)
`},
		Env:    []string{"PATH=/usr/bin:/bin"},
		Stdout: out, Stderr: out,
		Limits: sandbox.Limits{MemoryMB: 300},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Kill(); _, _ = p.Wait() }()
	waitFor(t, waitTimeout, "the allocation", func() bool {
		b, _ := os.ReadFile(out.Name())
		return strings.Contains(string(b), "ready")
	})
	const small = 64
	if err := sb.Resize(context.Background(), sandbox.Resources{MemoryMB: small}); err != nil {
		t.Fatalf("a shrink below what is in use failed the resize: %v", err)
	}
	waitFor(t, waitTimeout, "the shortfall to be reported", func() bool { return r.ReclaimStats().Shortfalls > 0 })
	limit, target := sb.MemoryLimit()
	usage, err := r.memFiles().readUsage(sb.mem.dir)
	if err != nil {
		t.Fatal(err)
	}
	if target != small<<20 || limit <= target || limit < usage || readMemFile(t, sb, r.limitFile()) != limit {
		t.Errorf("after a shortfall: limit %d (file %d), target %d, usage %d: want target %d < limit, limit >= usage",
			limit, readMemFile(t, sb, r.limitFile()), target, usage, int64(small)<<20)
	}
	if _, err := unix.Getpgid(p.Pid()); err != nil {
		t.Fatalf("the process died of the shrink: %v", err)
	}
	// Growing again works at once.
	if err := sb.Resize(context.Background(), sandbox.Resources{MemoryMB: 400}); err != nil {
		t.Fatal(err)
	}
	if got := readMemFile(t, sb, r.limitFile()); got != 400<<20 {
		t.Fatalf("limit after growing back: %d", got)
	}
	// Freed, the memory no longer stands in the way.
	_ = p.Kill()
	if st, _ := p.Wait(); st.OOMKilled {
		t.Errorf("the process was OOM-killed: %+v", st)
	}
	mustRun(t, sb, "rm /tmp/held")
	if err := sb.Resize(context.Background(), sandbox.Resources{MemoryMB: small}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitTimeout, "the limit to reach its target once the memory is free", func() bool {
		return readMemFile(t, sb, r.limitFile()) == small<<20
	})
}

// With reclaim off, a shrink lowers the limit only as far as what is
// charged allows, and reclaims nothing.
func TestNoMemoryReclaim(t *testing.T) {
	requireContainers(t)
	r, err := New(Options{StateDir: filepath.Join(t.TempDir(), "state"), ReaperPath: reaperPath, NoMemoryReclaim: true})
	if err != nil {
		t.Fatal(err)
	}
	data := uncachedFiles(t, 1, instCacheMB)
	spec := testSpec(t, "reclaim-off")
	spec.Mounts = append(spec.Mounts, sandbox.Mount{Source: data, Target: "/data"})
	spec.MemoryMB = 1024
	sb := create(t, r, spec)
	p := startInstance(t, sb, 0)
	_ = p.Kill()
	_, _ = p.Wait()
	if err := sb.Resize(context.Background(), sandbox.Resources{MemoryMB: 64}); err != nil {
		t.Fatal(err)
	}
	limit, _ := sb.MemoryLimit()
	if limit == 1024<<20 || limit < 64<<20 {
		t.Errorf("limit %d after a shrink without reclaim: want it lowered towards what is charged", limit)
	}
	if st := r.ReclaimStats(); st != (ReclaimStats{}) {
		t.Errorf("reclaim off, yet %+v", st)
	}
}

// A shrink below usage reclaims the sandbox's page cache in the
// background (here the cache of a file a live process read) until the
// limit is at its target; the process keeps running.
func TestShrinkReclaimsPageCache(t *testing.T) {
	r := newRuntime(t)
	data := uncachedFiles(t, 1, 96)
	spec := testSpec(t, "reclaim-shrink")
	spec.Mounts = append(spec.Mounts, sandbox.Mount{Source: data, Target: "/data"})
	spec.MemoryMB = 512
	sb := create(t, r, spec)
	startInstance(t, sb, 0)
	before, err := r.memFiles().readUsage(sb.mem.dir)
	if err != nil {
		t.Fatal(err)
	}
	const target = 80
	if before < (96+instAnonMB)<<20 {
		t.Fatalf("the process charged %d bytes, want its file's 96 MiB and %d MiB more at least", before, instAnonMB)
	}
	if err := sb.Resize(context.Background(), sandbox.Resources{MemoryMB: target}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitTimeout, "the limit to reach its target", func() bool {
		return readMemFile(t, sb, r.limitFile()) == target<<20
	})
	after, err := r.memFiles().readUsage(sb.mem.dir)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitTimeout, "the shrink to be counted", func() bool { return r.ReclaimStats().Shrinks > 0 })
	st := r.ReclaimStats()
	t.Logf("usage %d MiB -> %d MiB; %+v", before>>20, after>>20, st)
	if after > target<<20 || st.ReclaimedBytes < before-(target<<20) || st.Shortfalls != 0 {
		t.Errorf("usage %d -> %d with target %d; stats %+v", before, after, int64(target)<<20, st)
	}
	mustRun(t, sb, "true")
}
