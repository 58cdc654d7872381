//go:build linux && cgo

package container

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/sandbox"
	"github.com/baton-faas/baton/internal/sandbox/container/reaperbuild"
)

func TestMain(m *testing.M) {
	Reexec()
	os.Exit(runTests(m))
}

// reaperPath is the baton-reaper built for this test run: the tests run
// sandboxes the way a server does, with the static reaper. "" where it
// could not be built (the tests then use this binary as the reaper).
var reaperPath string

func runTests(m *testing.M) int {
	if os.Geteuid() == 0 {
		dir, err := os.MkdirTemp("", "baton-reaper-")
		if err == nil {
			defer os.RemoveAll(dir)
			reaperPath, err = reaperbuild.Build(dir)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "tests use the test binary as the sandboxes' reaper:", err)
		}
	}
	return m.Run()
}

// requireContainers skips the test where container sandboxes cannot work
// (not root, missing kernel features); where they can, New must succeed.
func requireContainers(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("container sandboxes need root; run the tests as root to exercise them")
	}
	probe := &Runtime{opts: Options{StateDir: t.TempDir(), UID: defaultUID, GID: defaultUID}}
	if err := probe.check(); err != nil {
		t.Skipf("this host cannot run container sandboxes: %v", err)
	}
}

func newRuntime(t testing.TB) *Runtime {
	t.Helper()
	requireContainers(t)
	return newRuntimeWith(t, reaperPath)
}

// newRuntimeWith makes a runtime whose sandboxes run reaper as PID 1; ""
// means the default: baton-reaper next to the test binary, which a test
// binary in Go's build cache does not have, so the test binary itself.
func newRuntimeWith(t testing.TB, reaper string) *Runtime {
	t.Helper()
	requireContainers(t)
	opts := Options{StateDir: filepath.Join(t.TempDir(), "state"), ReaperPath: reaper}
	r, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return r
}

// baseLayer is a root filesystem layer for tests: the skeleton of a Debian
// root whose /usr is the host's, bind-mounted read-only (Spec.Mounts).
func baseLayer(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"usr", "etc", "tmp", "proc", "sys", "dev", "root", "home", "mnt"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []string{"bin", "lib", "lib64", "sbin"} {
		if err := os.Symlink("usr/"+l, filepath.Join(dir, l)); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nbaton:x:1000:1000::/tmp:/bin/sh\n",
		"etc/group":  "root:x:0:\nbaton:x:1000:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func testSpec(t testing.TB, id string) sandbox.Spec {
	return sandbox.Spec{
		ID:            id,
		App:           id,
		RootLowerDirs: []string{baseLayer(t)},
		Mounts:        []sandbox.Mount{{Source: "/usr", Target: "/usr"}},
	}
}

func create(t testing.TB, r *Runtime, spec sandbox.Spec) *Sandbox {
	t.Helper()
	sb, err := r.Create(context.Background(), spec)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() {
		if err := sb.Destroy(context.Background()); err != nil {
			t.Errorf("Destroy: %v", err)
		}
	})
	return sb.(*Sandbox)
}

// run runs a shell command in the sandbox and returns its output and exit
// status.
func run(t testing.TB, sb sandbox.Sandbox, script string) (string, sandbox.ExitStatus) {
	t.Helper()
	return runLimited(t, sb, script, sandbox.Limits{})
}

// runLimited is run with the process confined to limits.
func runLimited(t testing.TB, sb sandbox.Sandbox, script string, limits sandbox.Limits) (string, sandbox.ExitStatus) {
	t.Helper()
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := sb.Start(ctx, sandbox.ProcessSpec{
		Args:   []string{"/bin/sh", "-c", script},
		Env:    []string{"PATH=/usr/bin:/bin", "HOME=/tmp"},
		Stdout: out, Stderr: out,
		Limits: limits,
	})
	if err != nil {
		t.Fatalf("Start %q: %v", script, err)
	}
	st, err := p.Wait()
	if err != nil {
		t.Fatalf("Wait %q: %v", script, err)
	}
	b, _ := os.ReadFile(out.Name())
	return string(b), st
}

// mustRun runs a command that must succeed.
func mustRun(t testing.TB, sb sandbox.Sandbox, script string) string {
	t.Helper()
	out, st := run(t, sb, script)
	if st.Code != 0 {
		t.Fatalf("%q: exit %d signal %d: %s", script, st.Code, st.Signal, out)
	}
	return out
}

// python runs a Python program in the sandbox (the host's python3, from
// the bind-mounted /usr).
func python(t testing.TB, sb sandbox.Sandbox, program string) (string, sandbox.ExitStatus) {
	t.Helper()
	return pythonLimited(t, sb, program, sandbox.Limits{})
}

// pythonLimited is python with the process confined to limits.
func pythonLimited(t testing.TB, sb sandbox.Sandbox, program string, limits sandbox.Limits) (string, sandbox.ExitStatus) {
	t.Helper()
	return runLimited(t, sb, "exec python3 -c '"+strings.ReplaceAll(program, "'", `'"'"'`)+"'", limits)
}

// pyLibc gives Python programs libc and errno_of(result) (0 on success).
const pyLibc = `
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def errno_of(r):
    return 0 if r != -1 else ctypes.get_errno()
`

// sandboxPids lists the host pids in the sandbox's cgroup.
func sandboxPids(t testing.TB, sb *Sandbox) []int {
	t.Helper()
	m, err := sb.cgroupManager()
	if err != nil {
		t.Fatal(err)
	}
	pids, err := m.GetAllPids()
	if err != nil {
		t.Fatal(err)
	}
	return pids
}

// waitTimeout bounds waits for what a busy host can delay (processes
// starting or dying): generous, because a condition that never holds still
// fails the test at this deadline.
const waitTimeout = time.Minute

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mountsUnder(t testing.TB, dir string) []string {
	t.Helper()
	// The calling thread's view: libcontainer can leave the process's main
	// thread (what /proc/self shows) in a container's mount namespace.
	b, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			found = append(found, f[4])
		}
	}
	return found
}
