//go:build linux && cgo

package container

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/sandbox"
)

// With baton-reaper, processes are started by the sandbox's PID 1 (no
// re-exec of this program) and are in their own cgroup before any of
// their code runs; the exec stage leaves nothing behind.
func TestProcessesStartThroughTheReaper(t *testing.T) {
	if reaperPath == "" {
		t.Skip("baton-reaper could not be built")
	}
	r := newRuntime(t)
	sb := create(t, r, testSpec(t, "spawned"))
	if sb.sp == nil {
		t.Fatal("a sandbox with baton-reaper starts processes through libcontainer")
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer outR.Close()
	// The shell's first command reads its own cgroup and parent.
	p, err := sb.Start(context.Background(), sandbox.ProcessSpec{
		Args:   []string{"/bin/sh", "-c", `grep -E '^PPid' /proc/$$/status; grep -E 'pids' /proc/$$/cgroup; tr '\0' ' ' < /proc/$$/cmdline; echo; exec sleep 600`},
		Env:    []string{"PATH=/usr/bin:/bin"},
		Stdout: outW, Stderr: outW,
	})
	outW.Close()
	if err != nil {
		t.Fatal(err)
	}
	group := filepath.Base(p.(*process).cg.Path("pids"))
	if r.v2 {
		group = filepath.Base(p.(*process).cg.Path(""))
	}
	rd := bufio.NewReader(outR)
	var lines []string
	for range 3 {
		l, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("output so far %q: %v", lines, err)
		}
		lines = append(lines, strings.TrimSpace(l))
	}
	if lines[0] != "PPid:\t1" {
		t.Errorf("the process's parent: %q, want the reaper (1)", lines[0])
	}
	if !strings.HasSuffix(lines[1], "/"+group) {
		t.Errorf("the process's first command ran in cgroup %q, want its own (%s)", lines[1], group)
	}
	if strings.Contains(lines[2], "__baton") {
		t.Errorf("the exec stage is still what runs: %q", lines[2])
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if st, err := p.Wait(); err != nil || st.Signal != 9 {
		t.Fatalf("Wait: %+v %v", st, err)
	}
	waitFor(t, waitTimeout, "only the reaper to be left", func() bool { return len(sandboxPids(t, sb)) == 1 })
}

// Park freezes a process's group, Reclaim reclaims the page cache charged
// to it; Unpark lets it run again, and it can then be killed.
func TestParkFreezesAndReclaims(t *testing.T) {
	r := newRuntime(t)
	// A file on disk, evicted from the page cache, so that the process's
	// read charges it to its group.
	data := t.TempDir()
	big := filepath.Join(data, "big")
	if err := os.WriteFile(big, make([]byte, 32<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(big)
	if err != nil {
		t.Fatal(err)
	}
	_ = unix.Fsync(int(f.Fd()))
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	f.Close()
	spec := testSpec(t, "park")
	spec.Mounts = append(spec.Mounts, sandbox.Mount{Source: data, Target: "/data"})
	sb := create(t, r, spec)
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer outR.Close()
	p, err := sb.Start(context.Background(), sandbox.ProcessSpec{
		Args:   []string{"/bin/sh", "-c", "cat /data/big > /dev/null; echo read; exec sleep 600"},
		Env:    []string{"PATH=/usr/bin:/bin"},
		Stdout: outW,
	})
	outW.Close()
	if err != nil {
		t.Fatal(err)
	}
	if l, err := bufio.NewReader(outR).ReadString('\n'); err != nil || l != "read\n" {
		t.Fatalf("output %q %v", l, err)
	}
	proc := p.(*process)
	if err := proc.Park(); err != nil {
		t.Fatal(err)
	}
	if st, err := proc.cg.GetFreezerState(); err != nil || st != cgroups.Frozen {
		t.Fatalf("freezer state after Park: %v %v", st, err)
	}
	reclaimed, err := proc.Reclaim()
	if err != nil {
		t.Fatal(err)
	}
	if reclaimed < 16<<20 {
		t.Errorf("Park reclaimed %d bytes, want most of the 32 MiB read", reclaimed)
	}
	if err := proc.Unpark(); err != nil {
		t.Fatal(err)
	}
	if st, err := proc.cg.GetFreezerState(); err != nil || st != cgroups.Thawed {
		t.Fatalf("freezer state after Unpark: %v %v", st, err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if st, err := p.Wait(); err != nil || st.Signal != 9 {
		t.Fatalf("Wait: %+v %v", st, err)
	}
	if err := proc.Park(); err == nil {
		t.Error("Park of an exited process succeeded")
	}
}

// Unset streams are /dev/null opened for writing too (a process whose
// stdout could not be written failed at its first print).
func TestUnsetStreamsAreWritable(t *testing.T) {
	r := newRuntime(t)
	sb := create(t, r, testSpec(t, "devnull"))
	p, err := sb.Start(context.Background(), sandbox.ProcessSpec{
		Args: []string{"python3", "-c", "import sys; print('out', flush=True); print('err', file=sys.stderr, flush=True)"},
		Env:  []string{"PATH=/usr/bin"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := p.Wait(); err != nil || st.Code != 0 {
		t.Fatalf("writing to unset stdout and stderr: %+v %v", st, err)
	}
}
