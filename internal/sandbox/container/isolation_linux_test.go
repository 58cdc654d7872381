//go:build linux && cgo

package container

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/sandbox"
)

// Each test here fails when the isolation it names breaks.

func TestCannotSeeHostProcesses(t *testing.T) {
	r := newRuntime(t)
	sb := create(t, r, testSpec(t, "procs"))
	host := exec.Command("sleep", "313.25")
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = host.Process.Kill(); _ = host.Wait() }()

	out := mustRun(t, sb, `for f in /proc/[0-9]*/cmdline; do tr '\0' ' ' < $f; echo; done`)
	if strings.Contains(out, "313.25") {
		t.Fatalf("a host process is visible in the sandbox:\n%s", out)
	}
	pids := mustRun(t, sb, `ls -d /proc/[0-9]* | wc -l`)
	if n, _ := strconv.Atoi(strings.TrimSpace(pids)); n == 0 || n > 4 {
		t.Fatalf("the sandbox sees %d processes, want its reaper and the command only", n)
	}
	if init := mustRun(t, sb, `tr '\0' ' ' < /proc/1/cmdline`); !strings.Contains(init, reaperArg) {
		t.Fatalf("PID 1 is %q, want the sandbox reaper", init)
	}
}

func TestCannotReadHostFiles(t *testing.T) {
	r := newRuntime(t)
	secretDir := t.TempDir()
	secret := filepath.Join(secretDir, "secret.txt")
	if err := os.WriteFile(secret, []byte("TOPSECRET"), 0o644); err != nil {
		t.Fatal(err)
	}
	sb := create(t, r, testSpec(t, "files"))
	cwd, err := os.Getwd() // the package's source directory, on the host
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{secret, secretDir, r.opts.StateDir, sb.dir, cwd, "/opt"} {
		out, st := run(t, sb, "cat "+p+" || ls "+p)
		if st.Code == 0 || strings.Contains(out, "TOPSECRET") {
			t.Errorf("host path %s is readable in the sandbox: %s", p, out)
		}
	}
}

func TestReadOnlyRootWritableTmp(t *testing.T) {
	r := newRuntime(t)
	spec := testSpec(t, "rofs")
	spec.TmpMB = 8
	sb := create(t, r, spec)
	for _, p := range []string{"/x", "/etc/x", "/usr/x", "/.baton/x", "/dev/shm/../x"} {
		if out, st := run(t, sb, "touch "+p); st.Code == 0 {
			t.Errorf("touch %s succeeded: %s", p, out)
		}
	}
	if out, st := run(t, sb, "echo > /.baton/baton"); st.Code == 0 {
		t.Errorf("the baton binary is writable: %s", out)
	}
	if got := mustRun(t, sb, "echo hello > /tmp/x && cat /tmp/x"); got != "hello\n" {
		t.Fatalf("/tmp: got %q", got)
	}
	out, st := run(t, sb, "dd if=/dev/zero of=/tmp/big bs=1M count=16")
	if st.Code == 0 || !strings.Contains(out, "No space left") {
		t.Fatalf("writing 16 MB to an 8 MB /tmp: exit %d: %s", st.Code, out)
	}
	if size := mustRun(t, sb, "df -m /tmp | tail -1 | tr -s ' ' | cut -d' ' -f2"); strings.TrimSpace(size) != "8" {
		t.Fatalf("/tmp is %s MB, want 8", size)
	}
	// Only the default devices exist, and no new one can be made.
	devs := mustRun(t, sb, "ls /dev")
	for _, d := range strings.Fields(devs) {
		switch d {
		case "null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "mqueue", "console", "fd", "stdin", "stdout", "stderr", "core":
		default:
			t.Errorf("unexpected device /dev/%s", d)
		}
	}
	if out, st := run(t, sb, "mknod /tmp/sda b 8 0"); st.Code == 0 {
		t.Errorf("mknod succeeded: %s", out)
	}
}

func TestCannotMountOrUnshare(t *testing.T) {
	r := newRuntime(t)
	sb := create(t, r, testSpec(t, "mount"))
	if out, st := run(t, sb, "mount -t tmpfs none /mnt"); st.Code == 0 {
		t.Fatalf("mount succeeded: %s", out)
	}
	if out, st := run(t, sb, "unshare -Ur true"); st.Code == 0 {
		t.Fatalf("unshare of a user namespace succeeded: %s", out)
	}
	out, _ := python(t, sb, pyLibc+`
print(errno_of(libc.mount(b"none", b"/mnt", b"tmpfs", 0, None)),
      errno_of(libc.unshare(0x10000000)),  # CLONE_NEWUSER
      errno_of(libc.unshare(0x00020000)),  # CLONE_NEWNS
      errno_of(libc.umount2(b"/proc", 2)),
      errno_of(libc.chroot(b"/tmp")),
      errno_of(libc.syscall(155, b"/tmp", b"/tmp")))  # pivot_root
`)
	if strings.TrimSpace(out) != "1 1 1 1 1 1" {
		t.Fatalf("mount/unshare/umount/chroot/pivot_root errnos: %q, want EPERM (1) each", out)
	}
}

func TestCannotLoadModules(t *testing.T) {
	r := newRuntime(t)
	sb := create(t, r, testSpec(t, "modules"))
	out, _ := python(t, sb, pyLibc+`
fd = os.open("/usr/bin/true", os.O_RDONLY)
print(errno_of(libc.syscall(313, fd, b"", 0)),      # finit_module
      errno_of(libc.syscall(175, None, 0, b"")),    # init_module
      errno_of(libc.syscall(176, b"ext4", 0)),      # delete_module
      errno_of(libc.syscall(246, 0, 0, None, 0)))   # kexec_load
`)
	if strings.TrimSpace(out) != "1 1 1 1" {
		t.Fatalf("module/kexec errnos: %q, want EPERM (1) each", out)
	}
}

func TestCannotPtrace(t *testing.T) {
	r := newRuntime(t)
	sb := create(t, r, testSpec(t, "ptrace"))
	// Without the seccomp filter a process may trace a sibling of the same
	// uid (no capability needed), so this checks the filter.
	out, _ := run(t, sb, `sleep 60 & pid=$!
python3 -c '`+pyLibc+`
import sys
pid = int(sys.argv[1])
buf = ctypes.create_string_buffer(8)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
local = iovec(ctypes.addressof(buf), 8)
remote = iovec(0x400000, 8)
print(errno_of(libc.ptrace(16, pid, None, None)),   # PTRACE_ATTACH
      errno_of(libc.ptrace(0, 0, None, None)),       # PTRACE_TRACEME
      errno_of(libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)))
' $pid
kill $pid`)
	if strings.TrimSpace(out) != "1 1 1" {
		t.Fatalf("ptrace/process_vm_readv errnos: %q, want EPERM (1) each", out)
	}
	if out, _ := run(t, sb, "sleep 60 & strace -p $! -e trace=none 2>&1; kill $!"); !strings.Contains(out, "attach: ptrace(PTRACE_ATTACH") || !strings.Contains(out, "Operation not permitted") {
		t.Fatalf("strace attached: %s", out)
	}
}

func TestNetworkIsolation(t *testing.T) {
	r := newRuntime(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go serve(ln, "host-loopback")
	connect := fmt.Sprintf(`
import socket
try:
    s = socket.create_connection(("127.0.0.1", %d), timeout=2)
    print("connected", s.recv(100).decode())
except OSError as e:
    print("refused", e.errno)
print(sorted(n for _, n in socket.if_nameindex()))
`, ln.Addr().(*net.TCPAddr).Port)

	isolated := create(t, r, testSpec(t, "net-isolated"))
	out, _ := python(t, isolated, connect)
	if !strings.Contains(out, "refused 111") || !strings.Contains(out, "['lo']") {
		t.Fatalf("isolated sandbox reached the host's loopback or has other interfaces: %s", out)
	}

	spec := testSpec(t, "net-host")
	spec.Network = sandbox.NetworkHost
	hostNet := create(t, r, spec)
	if out, _ := python(t, hostNet, connect); !strings.Contains(out, "connected host-loopback") {
		t.Fatalf("host-network sandbox cannot reach the host's loopback: %s", out)
	}
}

func TestListenInsideIsolatedSandbox(t *testing.T) {
	r := newRuntime(t)
	sb := create(t, r, testSpec(t, "listen"))
	ln, err := sb.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go serve(ln, "runtime-api")
	port := ln.Addr().(*net.TCPAddr).Port
	out, _ := python(t, sb, fmt.Sprintf(`
import socket
s = socket.create_connection(("127.0.0.1", %d), timeout=5)
print(s.recv(100).decode())
`, port))
	if strings.TrimSpace(out) != "runtime-api" {
		t.Fatalf("a process in the sandbox cannot reach the listener: %q", out)
	}
	// The listener lives in the sandbox's namespace, not on the host.
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatalf("the sandbox's listener is reachable on the host's loopback")
	}
	// The calling goroutine's thread is back in the host namespace.
	for range 20 {
		l2, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.DialTimeout("tcp", l2.Addr().String(), time.Second)
		if err != nil {
			t.Fatalf("a listener created after Listen is not on the host: %v", err)
		}
		c.Close()
		l2.Close()
	}
}

func TestSandboxesCannotSeeEachOther(t *testing.T) {
	r := newRuntime(t)
	a := create(t, r, testSpec(t, "app-a"))
	b := create(t, r, testSpec(t, "app-b"))
	p, err := a.Start(context.Background(), sandbox.ProcessSpec{Args: []string{"/usr/bin/sleep", "271.5"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Kill(); _, _ = p.Wait() }()
	list := `for f in /proc/[0-9]*/cmdline; do tr '\0' ' ' < $f; echo; done`
	if out := mustRun(t, a, list); !strings.Contains(out, "271.5") {
		t.Fatalf("the sandbox does not see its own process:\n%s", out)
	}
	if out := mustRun(t, b, list); strings.Contains(out, "271.5") {
		t.Fatalf("another app's process is visible:\n%s", out)
	}
	// Nor its files in /tmp.
	mustRun(t, a, "echo mine > /tmp/a-file")
	if out, st := run(t, b, "cat /tmp/a-file"); st.Code == 0 {
		t.Fatalf("another app's /tmp is visible: %s", out)
	}
}

func TestMemoryLimitKillsAndReportsOOM(t *testing.T) {
	r := newRuntime(t)
	spec := testSpec(t, "oom")
	spec.MemoryMB = 64
	sb := create(t, r, spec)
	_, st := python(t, sb, `x = bytearray(b"\x01") * (200 << 20); print("allocated")`)
	if st.Signal != 9 || !st.OOMKilled {
		t.Fatalf("allocating 200 MB under a 64 MB limit: %+v, want an OOM kill", st)
	}
	// The sandbox still works, and a small allocation is fine.
	out, st := python(t, sb, `x = bytearray(b"\x01") * (16 << 20); print("ok")`)
	if strings.TrimSpace(out) != "ok" || st.OOMKilled {
		t.Fatalf("after the OOM kill: %q %+v", out, st)
	}
}

// A process's own memory limit kills it, not its neighbours, which may
// use more than it under the sandbox's larger limit.
func TestProcessMemoryLimit(t *testing.T) {
	r := newRuntime(t)
	spec := testSpec(t, "procmem")
	spec.MemoryMB = 512
	sb := create(t, r, spec)
	alloc := `x = bytearray(b"\x01") * (200 << 20); print("ok")`
	if out, st := pythonLimited(t, sb, alloc, sandbox.Limits{MemoryMB: 64}); st.Signal != 9 || !st.OOMKilled {
		t.Fatalf("allocating 200 MB under a 64 MB process limit: %+v, want an OOM kill (%s)", st, out)
	}
	got, st := python(t, sb, alloc)
	if strings.TrimSpace(got) != "ok" || st.OOMKilled {
		t.Fatalf("an unconfined neighbour allocating 200 MB under the 512 MB sandbox: %q %+v", got, st)
	}
}

func TestProcessLimitsAreSet(t *testing.T) {
	r := newRuntime(t)
	sb := create(t, r, testSpec(t, "proclimits"))
	p, err := sb.Start(context.Background(), sandbox.ProcessSpec{
		Args:   []string{"/usr/bin/sleep", "60"},
		Limits: sandbox.Limits{MemoryMB: 96, PIDs: 7, CPUShares: 250},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Kill(); _, _ = p.Wait() }()
	stats, err := p.(*process).cg.GetStats()
	if err != nil {
		t.Fatal(err)
	}
	if got := stats.MemoryStats.Usage.Limit; got != 96<<20 {
		t.Errorf("memory limit %d, want %d", got, 96<<20)
	}
	if got := stats.PidsStats.Limit; got != 7 {
		t.Errorf("pids limit %d, want 7", got)
	}
	if !r.v2 {
		shares, err := cgroups.ReadFile(p.(*process).cg.Path("cpu"), "cpu.shares")
		if err != nil || strings.TrimSpace(shares) != "250" {
			t.Errorf("cpu shares %q (%v), want 250", shares, err)
		}
	}
}

// A fork bomb fills its own process limit; the sandbox's init and other
// processes go on working meanwhile.
func TestForkBombStopsAtPIDLimit(t *testing.T) {
	r := newRuntime(t)
	spec := testSpec(t, "forkbomb")
	spec.PIDs = 256
	sb := create(t, r, spec)
	out, err := os.CreateTemp(t.TempDir(), "bomb")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	// The shell execs its sleep: once the bomb fills the limit, a fork
	// for it would fail and end the shell before the Kill below.
	bomb, err := sb.Start(context.Background(), sandbox.ProcessSpec{
		Args: []string{"/bin/sh", "-c", "f() { f | f & }; f; exec sleep 30"}, Stdout: out, Stderr: out,
		Limits: sandbox.Limits{PIDs: 48},
	})
	if err != nil {
		t.Fatal(err)
	}
	bombGroup := bomb.(*process).cg
	current := func() int64 {
		s, err := bombGroup.GetStats()
		if err != nil {
			t.Fatal(err)
		}
		return int64(s.PidsStats.Current)
	}
	// The bomb reaches its limit and stays there.
	waitFor(t, 3*time.Minute, "the fork bomb to hit its PID limit", func() bool { return current() >= 44 })
	for range 10 {
		if n := current(); n > 48 {
			t.Fatalf("%d tasks in a process limited to 48", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Meanwhile the sandbox is usable: another process starts and forks.
	if got := mustRun(t, sb, "echo alive & wait"); got != "alive\n" {
		t.Fatalf("during the fork bomb: %q", got)
	}
	if err := bomb.Kill(); err != nil {
		t.Fatal(err)
	}
	if st, _ := bomb.Wait(); st.Signal != 9 {
		t.Fatalf("the bomb ended with %+v, want SIGKILL", st)
	}
	// Kill reached every process it forked; only the reaper is left.
	waitFor(t, waitTimeout, "the fork bomb's processes to go", func() bool { return len(sandboxPids(t, sb)) == 1 })
	if got := mustRun(t, sb, "echo alive"); got != "alive\n" {
		t.Fatalf("after the fork bomb: %q", got)
	}
}

// Confine moves a held fork (as a grain worker's instance is) into a group
// with its own limits: what it forks afterwards is in that group too, and
// its memory limit kills it alone and is reported.
func TestConfineForkedChild(t *testing.T) {
	r := newRuntime(t)
	spec := testSpec(t, "confine")
	spec.MemoryMB = 512
	sb := create(t, r, spec)
	dir := t.TempDir()
	out, err := os.Create(filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	// The parent reports its child's pid; the child, held until
	// /tmp/released exists, forks a grandchild and allocates once told to
	// through /tmp/go; the parent reports how the child ended.
	parent, err := sb.Start(context.Background(), sandbox.ProcessSpec{
		Args: []string{"python3", "-u", "-c", `
import os, time
def wait_for(path):
    while not os.path.exists(path):
        time.sleep(0.01)
pid = os.fork()
if pid == 0:
    wait_for("/tmp/released")
    if os.fork() == 0:
        open("/tmp/grandchild", "w").close()
        time.sleep(600)
        os._exit(0)
    wait_for("/tmp/go")
    x = bytearray(b"\x01") * (200 << 20)
    os._exit(0)
print("child", pid)
_, status = os.waitpid(pid, 0)
print("signal", os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0)
`},
		Env: []string{"PATH=/usr/bin:/bin"}, Stdout: out, Stderr: out,
	})
	if err != nil {
		t.Fatal(err)
	}
	var childPid int
	waitFor(t, waitTimeout, "the child's pid", func() bool {
		b, _ := os.ReadFile(out.Name())
		_, err := fmt.Sscanf(string(b), "child %d", &childPid)
		return err == nil
	})
	if _, err := parent.(sandbox.Confiner).Confine(context.Background(), 99999, sandbox.Limits{MemoryMB: 32}); !errors.Is(err, sandbox.ErrProcessGone) {
		t.Fatalf("Confine of a pid that is not in the process's group: %v, want ErrProcessGone", err)
	}
	g, err := parent.(sandbox.Confiner).Confine(context.Background(), childPid, sandbox.Limits{MemoryMB: 64, PIDs: 8})
	if err != nil {
		t.Fatal(err)
	}
	mustRun(t, sb, "touch /tmp/released")
	waitFor(t, waitTimeout, "the grandchild", func() bool {
		return mustRun(t, sb, "if test -e /tmp/grandchild; then echo yes; fi") == "yes\n"
	})
	if pids, err := g.(*group).cg.GetPids(); err != nil || len(pids) != 2 {
		t.Fatalf("the confined group holds %v (%v), want the child and its grandchild", pids, err)
	}
	mustRun(t, sb, "touch /tmp/go")
	st, err := parent.Wait()
	if err != nil || st.Code != 0 {
		t.Fatalf("parent: %+v %v", st, err)
	}
	if b, _ := os.ReadFile(out.Name()); !strings.Contains(string(b), "signal 9") {
		t.Fatalf("the confined child was not killed: %s", b)
	}
	if st.OOMKilled {
		t.Fatal("the parent's own group reports the child's OOM kill")
	}
	if !g.Close() {
		t.Fatal("the child's group does not report its OOM kill")
	}
}

func TestKillReachesEverythingTheProcessStarted(t *testing.T) {
	r := newRuntime(t)
	sb := create(t, r, testSpec(t, "kill"))
	// Children in another session, a double-forked orphan (re-parented
	// to the reaper) and an ordinary child.
	p, err := sb.Start(context.Background(), sandbox.ProcessSpec{
		Args: []string{"/bin/sh", "-c", "setsid sleep 1001 & (sleep 1002 &) ; sleep 1003 & wait"},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitTimeout, "the children to start", func() bool { return len(sandboxPids(t, sb)) == 5 })
	other, err := sb.Start(context.Background(), sandbox.ProcessSpec{Args: []string{"/usr/bin/sleep", "1004"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if st, err := p.Wait(); err != nil || st.Signal != 9 {
		t.Fatalf("Wait: %+v %v", st, err)
	}
	// The reaper and the other process remain.
	waitFor(t, waitTimeout, "the killed process's descendants to go", func() bool { return len(sandboxPids(t, sb)) == 2 })
	if err := other.Kill(); err != nil {
		t.Fatal(err)
	}
	if st, _ := other.Wait(); st.Signal != 9 {
		t.Fatalf("other: %+v", st)
	}
	if err := other.Kill(); err != nil {
		t.Fatalf("Kill after Wait: %v", err)
	}
}

func TestWaitKillsLeftovers(t *testing.T) {
	r := newRuntime(t)
	sb := create(t, r, testSpec(t, "leftovers"))
	// The shell exits at once, leaving a daemonised child.
	if out := mustRun(t, sb, "(setsid sleep 1000 &); echo started"); out != "started\n" {
		t.Fatalf("got %q", out)
	}
	waitFor(t, waitTimeout, "the leftover to be killed", func() bool { return len(sandboxPids(t, sb)) == 1 })
}

func TestResize(t *testing.T) {
	r := newRuntime(t)
	spec := testSpec(t, "resize")
	spec.MemoryMB = 64
	spec.PIDs = 100
	sb := create(t, r, spec)
	alloc := `x = bytearray(b"\x01") * (100 << 20); print("ok")`
	if _, st := python(t, sb, alloc); st.Signal != 9 {
		t.Fatalf("100 MB under 64 MB: %+v", st)
	}
	if err := sb.Resize(context.Background(), sandbox.Resources{MemoryMB: 256, CPUMillis: 500, PIDs: 200, CPUShares: 300}); err != nil {
		t.Fatal(err)
	}
	if out, st := python(t, sb, alloc); st.Code != 0 || strings.TrimSpace(out) != "ok" {
		t.Fatalf("100 MB under 256 MB: %+v %s", st, out)
	}
	m, err := sb.cgroupManager()
	if err != nil {
		t.Fatal(err)
	}
	stats, err := m.GetStats()
	if err != nil {
		t.Fatal(err)
	}
	if got := stats.MemoryStats.Usage.Limit; got != 256<<20 {
		t.Errorf("memory limit %d, want %d", got, 256<<20)
	}
	if got := stats.PidsStats.Limit; got != 200 {
		t.Errorf("pids limit %d, want 200", got)
	}
	if !r.v2 {
		quota, err := cgroups.ReadFile(m.Path("cpu"), "cpu.cfs_quota_us")
		if err != nil || strings.TrimSpace(quota) != "50000" {
			t.Errorf("cpu quota %q (%v), want 50000", quota, err)
		}
		shares, err := cgroups.ReadFile(m.Path("cpu"), "cpu.shares")
		if err != nil || strings.TrimSpace(shares) != "300" {
			t.Errorf("cpu shares %q (%v), want 300", shares, err)
		}
	}
	// Shrinking below what is in use does not fail (nor kill): the limit
	// stays above usage (see TestReclaimShortfallDoesNotFailResize).
	p, err := sb.Start(context.Background(), sandbox.ProcessSpec{
		Args: []string{"python3", "-c", `import time; x = bytearray(b"\x01") * (100 << 20); print("ready", flush=True); time.sleep(60)`},
		Env:  []string{"PATH=/usr/bin"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Kill(); _, _ = p.Wait() }()
	waitFor(t, waitTimeout, "the allocation", func() bool {
		s, err := m.GetStats()
		return err == nil && s.MemoryStats.Usage.Usage > 100<<20
	})
	if err := sb.Resize(context.Background(), sandbox.Resources{MemoryMB: 32}); err != nil {
		t.Fatalf("shrinking memory below usage: %v", err)
	}
	waitFor(t, waitTimeout, "the shrink to give up above usage", func() bool { return r.ReclaimStats().Shortfalls > 0 })
	if s, err := m.GetStats(); err != nil || s.MemoryStats.Usage.Limit < s.MemoryStats.Usage.Usage {
		t.Fatalf("after a shrink below usage: %+v, %v", s.MemoryStats.Usage, err)
	}
	// Back to unlimited.
	if err := sb.Resize(context.Background(), sandbox.Resources{}); err != nil {
		t.Fatal(err)
	}
}

func TestDestroyLeavesNothing(t *testing.T) {
	r := newRuntime(t)
	sb, err := r.Create(context.Background(), testSpec(t, "destroy"))
	if err != nil {
		t.Fatal(err)
	}
	s := sb.(*Sandbox)
	p, err := sb.Start(context.Background(), sandbox.ProcessSpec{Args: []string{"/bin/sh", "-c", "setsid sleep 1000 & sleep 1000 & wait"}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitTimeout, "the processes", func() bool { return len(sandboxPids(t, s)) == 4 })
	pids := sandboxPids(t, s)
	m, err := s.cgroupManager()
	if err != nil {
		t.Fatal(err)
	}
	paths := m.GetPaths()
	waited := make(chan sandbox.ExitStatus, 1)
	go func() { st, _ := p.Wait(); waited <- st }()

	if err := sb.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := <-waited; st.Signal != 9 {
		t.Fatalf("the process ended with %+v", st)
	}
	for _, pid := range pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			if stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !strings.Contains(string(stat), ") Z ") {
				t.Errorf("process %d survived: %s", pid, stat)
			}
		}
	}
	if len(paths) == 0 {
		t.Fatal("no cgroup paths")
	}
	for name, path := range paths {
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("cgroup %s (%s) left behind", path, name)
		}
	}
	if ms := mountsUnder(t, r.opts.StateDir); len(ms) > 0 {
		t.Errorf("mounts left behind: %v", ms)
	}
	for _, d := range []string{s.dir, filepath.Join(r.lcRoot, s.id)} {
		if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left behind", d)
		}
	}
	// Destroy is idempotent, and a destroyed sandbox runs nothing.
	if err := sb.Destroy(context.Background()); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
	if _, err := sb.Start(context.Background(), sandbox.ProcessSpec{Args: []string{"/bin/true"}}); err == nil {
		t.Error("Start after Destroy succeeded")
	}
}

func TestNewCleansUpAfterACrash(t *testing.T) {
	requireContainers(t)
	state := filepath.Join(t.TempDir(), "state")
	r1, err := New(Options{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := r1.Create(context.Background(), testSpec(t, "crashed"))
	if err != nil {
		t.Fatal(err)
	}
	s := sb.(*Sandbox)
	p, err := sb.Start(context.Background(), sandbox.ProcessSpec{Args: []string{"/usr/bin/sleep", "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.cgroupManager()
	if err != nil {
		t.Fatal(err)
	}
	paths := m.GetPaths()
	// A second runtime cannot take the state directory of a live one.
	if _, err := New(Options{StateDir: state}); err == nil || errors.Is(err, ErrUnavailable) {
		t.Fatalf("a second runtime on the same state directory: %v", err)
	}
	// The server "crashes": nothing is destroyed and its lock goes with
	// the process. Its children would be re-parented and reaped by the
	// host; here the test reaps them.
	r1.lock.Close()
	go func() { _, _ = p.Wait() }()
	go func() { _, _ = s.init.Wait() }()

	if _, err := New(Options{StateDir: state}); err != nil {
		t.Fatal(err)
	}
	for name, path := range paths {
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("cgroup %s (%s) left behind", path, name)
		}
	}
	if ms := mountsUnder(t, state); len(ms) > 0 {
		t.Errorf("mounts left behind: %v", ms)
	}
	if entries, _ := os.ReadDir(filepath.Join(state, "sandboxes")); len(entries) > 0 {
		t.Errorf("sandbox directories left behind: %v", entries)
	}
}

func TestProcessSpecIsHonoured(t *testing.T) {
	r := newRuntime(t)
	spec := testSpec(t, "spec")
	code := t.TempDir()
	if err := os.WriteFile(filepath.Join(code, "handler.txt"), []byte("code"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec.Mounts = append(spec.Mounts, sandbox.Mount{Source: code, Target: "/var/task"})
	sb := create(t, r, spec)
	if got := sb.Path("/var/task"); got != "/var/task" {
		t.Fatalf("Path = %q", got)
	}
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	extraR, extraW, _ := os.Pipe()
	p, err := sb.Start(context.Background(), sandbox.ProcessSpec{
		Args: []string{"/bin/sh", "-c", `echo "$GREETING $(pwd) $(cat handler.txt) $0 $1"; echo oops >&2; echo extra >&3; touch handler.txt; exit 7`, "arg0", "arg1"},
		Env:  []string{"GREETING=hi", "PATH=/usr/bin"},
		Dir:  "/var/task", Stdout: outW, Stderr: errW, ExtraFiles: []*os.File{extraW},
	})
	outW.Close()
	errW.Close()
	extraW.Close()
	if err != nil {
		t.Fatal(err)
	}
	read := func(f *os.File) string {
		b, _ := bufio.NewReader(f).ReadString('\n')
		return b
	}
	if got := read(outR); got != "hi /var/task code arg0 arg1\n" {
		t.Errorf("stdout %q", got)
	}
	if got := read(errR); !strings.HasPrefix(got, "oops") {
		t.Errorf("stderr %q", got)
	}
	if got := read(extraR); got != "extra\n" {
		t.Errorf("fd 3 %q", got)
	}
	st, err := p.Wait()
	if err != nil || st.Code != 7 || st.Signal != 0 {
		t.Fatalf("Wait: %+v %v", st, err)
	}
	if p.Pid() <= 0 {
		t.Fatalf("Pid %d", p.Pid())
	}
}

func TestStartErrorsAreRecognisable(t *testing.T) {
	r := newRuntime(t)
	sb := create(t, r, testSpec(t, "errors"))
	_, err := sb.Start(context.Background(), sandbox.ProcessSpec{Args: []string{"/var/task/bootstrap"}})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing executable: %v", err)
	}
	_, err = sb.Start(context.Background(), sandbox.ProcessSpec{Args: []string{"/etc/passwd"}})
	if !errors.Is(err, fs.ErrPermission) {
		t.Errorf("non-executable file: %v", err)
	}
	// The sandbox still works.
	mustRun(t, sb, "true")
}

func serve(ln net.Listener, msg string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = c.Write([]byte(msg))
		c.Close()
	}
}

func TestProcAndSysMasked(t *testing.T) {
	r := newRuntime(t)
	sb := create(t, r, testSpec(t, "masked"))
	for _, p := range []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug"} {
		if out := mustRun(t, sb, "cat "+p+" 2>/dev/null | wc -c"); strings.TrimSpace(out) != "0" {
			t.Errorf("%s is not masked: %s bytes", p, strings.TrimSpace(out))
		}
	}
	for _, p := range []string{"/sys/firmware", "/proc/scsi", "/proc/acpi"} {
		if out := mustRun(t, sb, "ls -A "+p+" 2>/dev/null | wc -l"); strings.TrimSpace(out) != "0" {
			t.Errorf("%s is not masked: %s entries", p, strings.TrimSpace(out))
		}
	}
	for _, p := range []string{"/proc/sys/vm/drop_caches", "/proc/sysrq-trigger", "/sys/kernel/mm/transparent_hugepage/enabled"} {
		if out, st := run(t, sb, "echo 1 > "+p); st.Code == 0 {
			t.Errorf("%s is writable: %s", p, out)
		}
	}
	// The cgroup filesystem is there for runtimes that read their limits,
	// read-only.
	if out, st := run(t, sb, "mkdir /sys/fs/cgroup/memory/x || mkdir /sys/fs/cgroup/x"); st.Code == 0 {
		t.Errorf("the cgroup filesystem is writable: %s", out)
	}
}

func TestReaperCannotBeSignalledFromInside(t *testing.T) {
	r := newRuntime(t)
	sb := create(t, r, testSpec(t, "reaper"))
	for _, sig := range []string{"TERM", "KILL", "STOP"} {
		if out, st := run(t, sb, "kill -"+sig+" 1"); st.Code == 0 {
			t.Errorf("kill -%s 1 succeeded inside the sandbox: %s", sig, out)
		}
	}
	mustRun(t, sb, "true")
	// From the host, SIGTERM stops it, and with it the sandbox.
	if err := sb.c.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitTimeout, "the reaper to exit", func() bool {
		st, err := sb.c.Status()
		return err == nil && st == libcontainer.Stopped
	})
	if _, err := sb.Start(context.Background(), sandbox.ProcessSpec{Args: []string{"/usr/bin/true"}}); err == nil {
		t.Error("Start in a stopped sandbox succeeded")
	}
}

func TestThreadsAndForkWork(t *testing.T) {
	r := newRuntime(t)
	sb := create(t, r, testSpec(t, "threads"))
	// glibc creates threads with clone3, which the filter answers with
	// ENOSYS; glibc then falls back to clone.
	out, st := python(t, sb, `
import os, threading
r = []
ts = [threading.Thread(target=r.append, args=(i,)) for i in range(4)]
for t in ts: t.start()
for t in ts: t.join()
pid = os.fork()
if pid == 0:
    os._exit(3)
_, status = os.waitpid(pid, 0)
print(len(r), os.waitstatus_to_exitcode(status))
`)
	if st.Code != 0 || strings.TrimSpace(out) != "4 3" {
		t.Fatalf("threads and fork: %+v %q", st, out)
	}
}

func TestNewExplainsWhyContainersAreUnavailable(t *testing.T) {
	requireContainers(t)
	reexecCalled.Store(false)
	defer reexecCalled.Store(true)
	_, err := New(Options{StateDir: t.TempDir()})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "Reexec") {
		t.Fatalf("New without Reexec: %v", err)
	}
}

// moveToLeaf is how cgroup v2 sandboxes get their init out of the way; on
// a v1 host it is exercised on the pids hierarchy.
func TestMoveToLeaf(t *testing.T) {
	newRuntime(t) // skips where containers cannot run
	dir := "/sys/fs/cgroup/pids/baton-test-leaf-" + randomID()
	if cgroups.IsCgroup2UnifiedMode() {
		dir = "/sys/fs/cgroup/baton-test-leaf-" + randomID()
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot create a test cgroup: %v", err)
	}
	cmd := exec.Command("/usr/bin/sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = os.Remove(filepath.Join(dir, "init"))
		_ = os.Remove(dir)
	})
	if err := cgroups.WriteCgroupProc(dir, cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if err := moveToLeaf(dir, "init", cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	procs, err := cgroups.ReadFile(filepath.Join(dir, "init"), "cgroup.procs")
	if err != nil || strings.TrimSpace(procs) != strconv.Itoa(cmd.Process.Pid) {
		t.Fatalf("the leaf holds %q (%v), want %d", procs, err, cmd.Process.Pid)
	}
	if left, _ := cgroups.ReadFile(dir, "cgroup.procs"); strings.TrimSpace(left) != "" {
		t.Fatalf("the parent still holds %q", left)
	}
}

// TestReaperRoles checks both ways of running the sandbox's PID 1: the
// static baton-reaper, exec'd from a sealed memfd without any mount, and
// the fallback, this binary bind-mounted at /.baton/baton.
func TestReaperRoles(t *testing.T) {
	if reaperPath == "" {
		t.Skip("baton-reaper could not be built")
	}
	for _, tc := range []struct {
		name, reaper string
		helper       bool
	}{{"baton-reaper", reaperPath, true}, {"self", "", false}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRuntimeWith(t, tc.reaper)
			if got := r.launcher.helper != nil; got != tc.helper {
				t.Fatalf("runtime uses baton-reaper: %v, want %v", got, tc.helper)
			}
			sb := create(t, r, testSpec(t, "reaper-"+tc.name))
			init := mustRun(t, sb, `tr '\0' ' ' < /proc/1/cmdline`)
			if !strings.Contains(init, reaperArg) {
				t.Fatalf("PID 1 is %q, want the sandbox reaper", init)
			}
			if _, st := run(t, sb, "test -e /.baton"); (st.Code == 0) == tc.helper {
				t.Errorf("/.baton exists: %v, want %v", st.Code == 0, !tc.helper)
			}
			// PID 1 runs as root: nothing in the sandbox may read or write
			// its executable or descriptors.
			for _, cmd := range []string{"cat /proc/1/exe > /dev/null", "ls /proc/1/fd", "echo x >> /proc/1/exe"} {
				if out, st := run(t, sb, cmd); st.Code == 0 {
					t.Errorf("%q succeeded in the sandbox: %s", cmd, out)
				}
			}
			if tc.helper {
				// The reaper installs its filter and closes the memfd
				// right after it starts.
				pid := mustPid(t, sb)
				waitFor(t, waitTimeout, "the reaper to install its filter and close its executable's descriptor", func() bool {
					st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
					fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
					for _, fd := range fds {
						if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); strings.Contains(l, ReaperName) {
							return false
						}
					}
					return strings.Contains(string(st), "Seccomp:\t2\n")
				})
			}
		})
	}
}

func mustPid(t *testing.T, sb *Sandbox) int {
	t.Helper()
	pid, err := sb.init.Pid()
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// Destroy reaps the processes their owner never waited for: the sandbox's
// PID 1 only finishes dying once every process of its namespace is
// reaped, and those started in the sandbox are children of this process.
func TestDestroyReapsUnwaitedProcesses(t *testing.T) {
	r := newRuntime(t)
	sb := create(t, r, testSpec(t, "unwaited"))
	exited, err := sb.Start(context.Background(), sandbox.ProcessSpec{Args: []string{"/bin/sh", "-c", "exit 3"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Start(context.Background(), sandbox.ProcessSpec{Args: []string{"/usr/bin/sleep", "600"}}); err != nil {
		t.Fatal(err)
	}
	// The first one is a zombie by now, or soon.
	waitFor(t, waitTimeout, "the first process to exit", func() bool {
		st, ok := readStatus(exited.(*process).pid)
		return !ok || st.zombie
	})
	destroyed := make(chan error, 1)
	go func() { destroyed <- sb.Destroy(context.Background()) }()
	select {
	case err := <-destroyed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Destroy hangs on processes nobody waited for")
	}
	// Their owner may still wait, and learns how they ended.
	if st, err := exited.Wait(); err != nil || st.Code != 3 {
		t.Fatalf("Wait after Destroy: %+v %v, want exit code 3", st, err)
	}
}
