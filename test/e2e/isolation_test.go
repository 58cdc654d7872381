package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/test/harness"
)

// Isolation tests: a server with --sandbox container runs Python functions
// (testdata/isolation) that attempt, from inside their sandbox, what
// isolation must forbid, and report what happened. Each test fails when the
// isolation it names breaks; each has a positive control (something that
// must work, or the same attempt where it is allowed) so that it cannot pass
// because the attempt itself is broken.

const isoDir = "testdata/isolation"

// reaperArg is the argument the sandbox's PID 1 (Baton's reaper) runs with
// (internal/sandbox/container).
const reaperArg = "__baton_sandbox_reaper"

// unavailableMsg is what the server says (container.ErrUnavailable) when
// this host cannot run container sandboxes.
const unavailableMsg = "container sandboxes unavailable"

// skipUnavailable turns harness.Start's failure into a skip when, and
// only when, the server refused --sandbox container because this host cannot
// run containers.
type skipUnavailable struct{ testing.TB }

func (s skipUnavailable) Fatalf(format string, args ...any) {
	s.TB.Helper()
	msg := fmt.Sprintf(format, args...)
	if strings.Contains(msg, unavailableMsg) {
		s.TB.Skipf("this host cannot run container sandboxes: %s", lastLines(msg, 5))
	}
	s.TB.Fatal(msg)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// startContainerServer starts a server whose sandboxes are containers, or
// skips the test when this host cannot run them (not root, kernel features
// missing).
func startContainerServer(t *testing.T, extra ...string) *harness.Server {
	t.Helper()
	requirePython(t)
	if os.Geteuid() != 0 {
		t.Skipf("container sandboxes need root (euid %d): skipping an isolation test", os.Geteuid())
	}
	srv := harness.Start(skipUnavailable{t}, harness.Options{Args: append([]string{"--sandbox", "container"}, extra...)})
	res := do(t, http.MethodGet, srv.URL+"/healthz", nil, nil)
	var health struct{ Isolation string }
	if err := json.Unmarshal(res.Body, &health); err != nil || res.Status != http.StatusOK {
		t.Fatalf("/healthz: HTTP %d %s (%v)", res.Status, res.Body, err)
	}
	if !strings.HasPrefix(health.Isolation, "container (") {
		t.Fatalf("/healthz isolation is %q, want container sandboxes", health.Isolation)
	}
	return srv
}

// TestDefaultSandboxIsAuto starts a server without --sandbox: it runs
// functions in containers when this host can run them (as a server with
// --sandbox container shows), and otherwise with process isolation, saying
// so loudly in its log and in `baton get`.
func TestDefaultSandboxIsAuto(t *testing.T) {
	requirePython(t)
	t.Parallel()
	srv := harness.Start(t, harness.Options{DefaultSandbox: true})
	deploy(t, srv, "auto-echo", pySpec("echo"), pyDir)
	mustInvoke(t, srv, "auto-echo", `{"n": 1}`, nil)
	_, getErr, rc := cli(t, srv, "get", "auto-echo", "--server="+srv.URL)
	if rc != 0 {
		t.Fatalf("get: exit %d: %s", rc, getErr)
	}
	warned := strings.Contains(getErr, "SANDBOX ISOLATION IS OFF")

	// Whether containers work here: ask a server that must use them (the
	// subtest skips when this host cannot run them).
	available := false
	t.Run("container-probe", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skipf("container sandboxes need root (euid %d)", os.Geteuid())
		}
		harness.Start(skipUnavailable{t}, harness.Options{Args: []string{"--sandbox", "container"}})
		available = true
	})
	if containerSandboxes(t, srv) {
		if !available || warned || !strings.Contains(srv.Logs(), "sandbox isolation: container") {
			t.Errorf("default server uses containers (available: %v), get warned %v (%q); log:\n%s", available, warned, getErr, srv.Logs())
		}
		return
	}
	if available {
		t.Errorf("this host runs container sandboxes, but a server without --sandbox does not use them; log:\n%s", srv.Logs())
	}
	if !warned || !strings.Contains(srv.Logs(), "SANDBOX ISOLATION IS OFF: containers are unavailable here (") {
		t.Errorf("process isolation by default without a loud warning: get stderr %q; log:\n%s", getErr, srv.Logs())
	}
}

// Results of the handlers of testdata/isolation/app.py.

type procEntry struct {
	Pid          int
	Cmdline      string
	CmdlineError string
	Function     string
	EnvironError string
}

type procsResult struct {
	Function                          string
	Pid, Ppid                         int
	Hostname                          string
	Pidns, Mntns, Netns, Utsns, Ipcns string
	Procs                             []procEntry
	Left, Found                       map[string]string
}

func (r procsResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "function %s pid %d hostname %q %s %s:", r.Function, r.Pid, r.Hostname, r.Pidns, r.Netns)
	for _, p := range r.Procs {
		fmt.Fprintf(&b, "\n  %d fn=%q %q%s%s", p.Pid, p.Function, p.Cmdline, p.CmdlineError, p.EnvironError)
	}
	return b.String()
}

func (r procsResult) find(pid int) (procEntry, bool) {
	for _, p := range r.Procs {
		if p.Pid == pid {
			return p, true
		}
	}
	return procEntry{}, false
}

func (r procsResult) ofFunction(name string) []procEntry {
	var out []procEntry
	for _, p := range r.Procs {
		if p.Function == name {
			out = append(out, p)
		}
	}
	return out
}

type fileResult struct {
	Path    string // the path tried, with $NAME expanded
	Exists  bool
	Stat    string
	List    string
	Entries int
	Read    string
	Content string
}

type sysResult struct {
	Ret   int64
	Errno string
}

func (r sysResult) String() string { return fmt.Sprintf("ret %d errno %q", r.Ret, r.Errno) }

type netResult struct {
	Netns           string
	Interfaces      []string
	InterfacesError string
	SysClassNet     any
	Connected       bool
	Error           string
	Data            string
}

type runtimeAPIResult struct {
	RuntimeAPI string `json:"runtimeApi"`
	Netns      string
	Own        string
	Probe      string
}

// hostNS names a namespace of the test process, as the sandbox's names read.
func hostNS(t *testing.T, kind string) string {
	t.Helper()
	ns, err := os.Readlink("/proc/self/ns/" + kind)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// TestIsolationHostProcesses: a function sees only its own sandbox's
// processes (its PID 1 is the sandbox's reaper), never the host's.
func TestIsolationHostProcesses(t *testing.T) {
	t.Parallel()
	srv := startContainerServer(t)
	marker := "3131." + strconv.Itoa(os.Getpid())
	host := exec.Command("sleep", marker)
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = host.Process.Kill(); _ = host.Wait() })

	deploy(t, srv, "iso-procs", pySpec("procs"), isoDir)
	var r procsResult
	mustInvoke(t, srv, "iso-procs", nil, &r)
	t.Logf("the function sees %d processes", len(r.Procs))

	if r.Pidns == hostNS(t, "pid") {
		t.Errorf("the function runs in the host's PID namespace %s", r.Pidns)
	}
	if len(r.Procs) < 2 || len(r.Procs) > 6 {
		t.Errorf("the function sees %d processes, want its sandbox's few (reaper, grain worker, instance):\n%s", len(r.Procs), r)
	}
	if self, ok := r.find(r.Pid); !ok || self.Function != "iso-procs" {
		t.Errorf("the function does not see itself (pid %d) in /proc:\n%s", r.Pid, r)
	}
	if init, ok := r.find(1); !ok || !strings.Contains(init.Cmdline, reaperArg) {
		t.Errorf("PID 1 is not the sandbox's reaper:\n%s", r)
	}
	testBin := filepath.Base(os.Args[0])
	forbidden := []string{marker, srv.DataDir, "--data-dir", testBin}
	var hostSeen, foreign []string
	for _, p := range r.Procs {
		for _, f := range forbidden {
			if strings.Contains(p.Cmdline, f) {
				hostSeen = append(hostSeen, fmt.Sprintf("%d %q", p.Pid, p.Cmdline))
				break
			}
		}
		if p.Pid != 1 && p.Function != "iso-procs" {
			foreign = append(foreign, fmt.Sprintf("%d %q", p.Pid, p.Cmdline))
		}
	}
	if len(hostSeen) > 0 {
		t.Errorf("host processes (the test, the server, a marker process) are visible in the sandbox:\n%s", strings.Join(hostSeen, "\n"))
	}
	if len(foreign) > 0 {
		t.Errorf("%d processes are neither the sandbox's reaper nor the function's, e.g. %s", len(foreign), strings.Join(foreign[:min(5, len(foreign))], ", "))
	}
	// The control: the host does see the marker and the function.
	if len(withArgs(allProcs(), "sleep", marker)) != 1 {
		t.Fatalf("the host process marker %q is not running", marker)
	}
	if len(withEnv(allProcs(), "AWS_LAMBDA_FUNCTION_NAME=iso-procs")) < 2 {
		t.Errorf("the host does not see the function's processes (grain worker and instance)")
	}
}

// TestIsolationHostFiles: the server's data directory, a file the test
// writes on the host, the source tree and the binaries do not exist inside
// a function's sandbox; nor does the host's /etc/shadow.
func TestIsolationHostFiles(t *testing.T) {
	t.Parallel()
	srv := startContainerServer(t)
	secretDir := t.TempDir()
	secretText := "TOPSECRET-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	secret := filepath.Join(secretDir, "secret.txt")
	if err := os.WriteFile(secret, []byte(secretText), 0o644); err != nil {
		t.Fatal(err)
	}
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	spec := pySpec("files")
	spec.Env = map[string]string{"HOST_DATA_DIR": srv.DataDir}
	deploy(t, srv, "iso-files", spec, isoDir)

	hidden := []string{"$HOST_DATA_DIR", "$HOST_DATA_DIR/worker", "$HOST_DATA_DIR/sandboxes-state", "$HOST_DATA_DIR/images",
		secret, secretDir, cwd, filepath.Join(cwd, isoDir, "app.py"), exe, harness.Binary(t), "/etc/shadow"}
	visible := []string{"$LAMBDA_TASK_ROOT/app.py", "/etc/passwd", "/proc/self/status"}
	// Kernel files Docker masks: they read empty (or are empty directories)
	// inside; checked where the host's own copy has content.
	masked := []string{"/proc/keys", "/proc/timer_list", "/proc/kcore", "/proc/sched_debug", "/proc/acpi", "/sys/firmware"}
	var got map[string]fileResult
	paths := append(append(slices.Clone(hidden), visible...), masked...)
	mustInvoke(t, srv, "iso-files", map[string]any{"paths": paths}, &got)

	for _, p := range hidden {
		r, ok := got[p]
		if !ok {
			t.Fatalf("no result for %s: %v", p, got)
		}
		if want := strings.ReplaceAll(p, "$HOST_DATA_DIR", srv.DataDir); r.Path != want {
			t.Errorf("the handler tried %q for %s, want %q", r.Path, p, want)
		}
		if r.Exists || r.Read == "ok" || r.List == "ok" || strings.Contains(r.Content, secretText) {
			t.Errorf("host path %s is visible in the sandbox: %+v", p, r)
		}
	}
	for _, p := range visible {
		if r := got[p]; !r.Exists || r.Read != "ok" {
			t.Errorf("%s should be readable in the sandbox (the handler's control): %+v", p, r)
		}
	}
	checked := 0
	for _, p := range masked {
		if !hostHasContent(p) {
			continue
		}
		checked++
		if r := got[p]; r.Content != "" || r.Entries > 0 {
			t.Errorf("%s is not masked in the sandbox: %+v", p, r)
		}
	}
	t.Logf("%d masked kernel files checked", checked)
	// The control: the secret is readable on the host.
	if data, err := os.ReadFile(secret); err != nil || string(data) != secretText {
		t.Fatalf("the secret is not readable on the host: %v", err)
	}
}

// hostHasContent says whether a file of the host reads non-empty, or a
// directory has entries.
func hostHasContent(p string) bool {
	if entries, err := os.ReadDir(p); err == nil {
		return len(entries) > 0
	}
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	n, _ := f.Read(make([]byte, 16))
	return n > 0
}

// TestIsolationReadOnlyRoot: a function cannot write its root file system
// nor its code; it can write /tmp (a tmpfs).
func TestIsolationReadOnlyRoot(t *testing.T) {
	t.Parallel()
	srv := startContainerServer(t)
	deploy(t, srv, "iso-write", pySpec("write"), isoDir)
	denied := []string{"/evil", "/etc/evil", "/usr/evil", "/var/task/evil", "$TASK/evil", "$TASK/app.py", "/.baton/evil"}
	var r struct {
		TaskRoot string
		UID, GID int
		Results  map[string]string
		Mounts   map[string]*struct{ Fstype, Options string }
	}
	mustInvoke(t, srv, "iso-write", map[string]any{"paths": append(slices.Clone(denied), "/tmp/allowed")}, &r)
	t.Logf("uid %d gid %d, results %v", r.UID, r.GID, r.Results)

	for _, p := range denied {
		switch res := r.Results[p]; res {
		case "EROFS", "EACCES", "EPERM":
		case "ENOENT":
			// /.baton exists only where the server has no baton-reaper
			// and bind-mounts itself there; a missing directory on the
			// read-only root cannot be created either.
			if !strings.HasPrefix(p, "/.baton/") {
				t.Errorf("writing %s: %q, want a read-only or permission error", p, res)
			}
		default:
			t.Errorf("writing %s: %q, want a read-only or permission error", p, res)
		}
	}
	if res := r.Results["/tmp/allowed"]; res != "ok" {
		t.Errorf("writing /tmp/allowed: %q, want ok", res)
	}
	if r.UID != 1000 || r.GID != 1000 {
		t.Errorf("the function runs as %d:%d, want 1000:1000", r.UID, r.GID)
	}
	if !strings.HasPrefix(r.TaskRoot, "/var/task/") {
		t.Errorf("LAMBDA_TASK_ROOT is %q, want a directory of /var/task", r.TaskRoot)
	}
	opts := func(mp string) []string {
		m := r.Mounts[mp]
		if m == nil {
			t.Errorf("%s is not a mount point in the sandbox: %v", mp, r.Mounts)
			return nil
		}
		return strings.Split(m.Options, ",")
	}
	if o := opts("/"); o != nil && !slices.Contains(o, "ro") {
		t.Errorf("the sandbox's root is mounted %v, want ro", o)
	}
	if o := opts("/var/task"); o != nil && !slices.Contains(o, "ro") {
		t.Errorf("/var/task is mounted %v, want ro", o)
	}
	if o := opts("/tmp"); o != nil && (!slices.Contains(o, "rw") || r.Mounts["/tmp"].Fstype != "tmpfs") {
		t.Errorf("/tmp is %+v, want a writable tmpfs", r.Mounts["/tmp"])
	}
}

// TestIsolationPrivilegedSyscalls: mount, module loading, kexec, keyctl,
// bpf, unshare, setns and ptrace fail with EPERM inside a function, which
// runs without capabilities, with no_new_privs and a seccomp filter.
func TestIsolationPrivilegedSyscalls(t *testing.T) {
	t.Parallel()
	srv := startContainerServer(t)
	deploy(t, srv, "iso-syscalls", pySpec("syscalls"), isoDir)
	var r map[string]json.RawMessage
	mustInvoke(t, srv, "iso-syscalls", nil, &r)

	call := func(name string) sysResult {
		var s sysResult
		if err := json.Unmarshal(r[name], &s); err != nil {
			t.Fatalf("%s: result %s: %v", name, r[name], err)
		}
		return s
	}
	// The control: a system call made the same way works.
	if g := call("getpid"); g.Ret <= 0 || g.Errno != "" {
		t.Fatalf("getpid through syscall(2) failed (%s): the handler cannot make system calls; results %s", g, mapString(r))
	}
	for _, name := range []string{"mount", "umount", "init_module", "finit_module", "kexec_load", "keyctl", "bpf",
		"unshare_user", "unshare_net", "unshare_mnt", "setns", "ptrace_attach"} {
		if s := call(name); s.Ret != -1 || s.Errno != "EPERM" {
			t.Errorf("%s inside the sandbox: %s, want -1 EPERM", name, s)
		}
	}
	var killPid1 string
	_ = json.Unmarshal(r["kill_pid1"], &killPid1)
	if killPid1 != "EPERM" {
		t.Errorf("signalling the sandbox's reaper (pid 1): %q, want EPERM", killPid1)
	}
	var st map[string]string
	if err := json.Unmarshal(r["status"], &st); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		if st[k] != "0000000000000000" {
			t.Errorf("%s is %q, want no capabilities", k, st[k])
		}
	}
	if st["NoNewPrivs"] != "1" || st["Seccomp"] != "2" {
		t.Errorf("NoNewPrivs %q Seccomp %q, want 1 and 2 (filter)", st["NoNewPrivs"], st["Seccomp"])
	}
	if uid := strings.Fields(st["Uid"]); len(uid) != 4 || slices.ContainsFunc(uid, func(s string) bool { return s != "1000" }) {
		t.Errorf("Uid %q, want 1000 throughout", st["Uid"])
	}
}

func mapString(m map[string]json.RawMessage) string {
	b, _ := json.Marshal(m)
	return string(b)
}

// TestIsolationNetwork: an isolated function (the default) has only a
// loopback interface and cannot reach a listener on the host's 127.0.0.1;
// with network "host" the same listener answers.
func TestIsolationNetwork(t *testing.T) {
	t.Parallel()
	srv := startContainerServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	greeting := "host-loopback-" + strconv.Itoa(os.Getpid())
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(greeting))
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	_, sp, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	serverPort, err := strconv.Atoi(sp)
	if err != nil {
		t.Fatalf("server URL %s: %v", srv.URL, err)
	}

	deploy(t, srv, "iso-net-default", pySpec("net"), isoDir)
	explicit := pySpec("net")
	explicit.Network = function.NetworkIsolated
	deploy(t, srv, "iso-net-isolated", explicit, isoDir)
	hostNet := pySpec("net")
	hostNet.Network = function.NetworkHost
	deploy(t, srv, "iso-net-host", hostNet, isoDir)

	event := map[string]any{"host": "127.0.0.1", "port": port, "timeout": 3}
	for _, name := range []string{"iso-net-default", "iso-net-isolated"} {
		var r netResult
		mustInvoke(t, srv, name, event, &r)
		if r.Connected || strings.Contains(r.Data, greeting) {
			t.Errorf("%s reached the host's 127.0.0.1:%d: %+v", name, port, r)
		}
		if r.Error == "" {
			t.Errorf("%s: no connection error reported: %+v", name, r)
		}
		if !slices.Equal(r.Interfaces, []string{"lo"}) {
			t.Errorf("%s sees interfaces %v (%s), want only lo", name, r.Interfaces, r.InterfacesError)
		}
		if l, ok := r.SysClassNet.([]any); ok && (len(l) != 1 || l[0] != "lo") {
			t.Errorf("%s sees /sys/class/net %v, want only lo", name, l)
		}
		if r.Netns == hostNS(t, "net") {
			t.Errorf("%s runs in the host's network namespace", name)
		}
		// Nor can it call Baton's own API.
		var api netResult
		mustInvoke(t, srv, name, map[string]any{"host": "127.0.0.1", "port": serverPort, "read": false}, &api)
		if api.Connected {
			t.Errorf("%s connected to the Baton server at 127.0.0.1:%d", name, serverPort)
		}
	}

	// The control: the host network reaches the listener.
	var r netResult
	mustInvoke(t, srv, "iso-net-host", event, &r)
	if !r.Connected || r.Data != greeting {
		t.Errorf("with network host the function did not reach the host's 127.0.0.1:%d: %+v", port, r)
	}
	if r.Netns != hostNS(t, "net") {
		t.Errorf("with network host the function runs in network namespace %s, want the host's %s", r.Netns, hostNS(t, "net"))
	}
	var api netResult
	mustInvoke(t, srv, "iso-net-host", map[string]any{"host": "127.0.0.1", "port": serverPort, "read": false}, &api)
	if !api.Connected {
		t.Errorf("with network host the function did not reach the Baton server at 127.0.0.1:%d: %+v", serverPort, api)
	}
	if ifs, err := net.Interfaces(); err == nil && len(ifs) > 1 && len(r.Interfaces) != len(ifs) {
		t.Errorf("with network host the function sees interfaces %v, the host has %d", r.Interfaces, len(ifs))
	}
}

// TestIsolationApps: functions of one app share a sandbox (they see each
// other's processes); a function of another app sees neither of them.
func TestIsolationApps(t *testing.T) {
	t.Parallel()
	srv := startContainerServer(t)
	shop := pySpec("procs")
	shop.App = "shop"
	deploy(t, srv, "shop-cart", shop, isoDir)
	deploy(t, srv, "shop-pay", shop, isoDir)
	blog := pySpec("procs")
	blog.App = "blog"
	deploy(t, srv, "blog-post", blog, isoDir)

	// shop-cart leaves files in /tmp and /dev/shm (the sandbox's own
	// tmpfs mounts); its app's other function finds them, another app's
	// function and the host do not.
	marker := "iso-apps-" + strconv.Itoa(os.Getpid())
	traces := []string{"/tmp/" + marker, "/dev/shm/" + marker}
	var cart, pay, cart2, post procsResult
	mustInvoke(t, srv, "shop-cart", map[string]any{"leave": traces}, &cart)
	mustInvoke(t, srv, "shop-pay", map[string]any{"look": traces}, &pay)
	mustInvoke(t, srv, "shop-cart", nil, &cart2)
	mustInvoke(t, srv, "blog-post", map[string]any{"look": traces}, &post)
	for _, p := range traces {
		if cart.Left[p] != "ok" {
			t.Errorf("shop-cart could not write %s: %q", p, cart.Left[p])
		}
		if pay.Found[p] != "shop-cart" {
			t.Errorf("shop-pay (same app) does not find shop-cart's %s: %q", p, pay.Found[p])
		}
		if post.Found[p] != "error ENOENT" {
			t.Errorf("blog-post (another app) reads shop-cart's %s: %q", p, post.Found[p])
		}
		if _, err := os.Stat(p); err == nil {
			t.Errorf("shop-cart's %s is on the host", p)
		}
	}

	// One app, one sandbox.
	if cart.Pidns != pay.Pidns || cart.Mntns != pay.Mntns || cart.Netns != pay.Netns || cart.Utsns != pay.Utsns || cart.Hostname != pay.Hostname {
		t.Errorf("shop-cart and shop-pay (app shop) are in different sandboxes:\n%s\n%s", cart, pay)
	}
	if p, ok := pay.find(cart.Pid); !ok || p.Function != "shop-cart" {
		t.Errorf("shop-pay does not see shop-cart's instance (pid %d):\n%s", cart.Pid, pay)
	}
	if p, ok := cart2.find(pay.Pid); !ok || p.Function != "shop-pay" {
		t.Errorf("shop-cart does not see shop-pay's instance (pid %d):\n%s", pay.Pid, cart2)
	}

	// Another app, another sandbox.
	for kind, pair := range map[string][2]string{
		"pid": {post.Pidns, cart.Pidns}, "mnt": {post.Mntns, cart.Mntns}, "net": {post.Netns, cart.Netns},
		"uts": {post.Utsns, cart.Utsns}, "ipc": {post.Ipcns, cart.Ipcns},
	} {
		if pair[0] == pair[1] {
			t.Errorf("blog-post (app blog) shares the %s namespace %s with app shop", kind, pair[0])
		}
	}
	if len(post.ofFunction("shop-cart"))+len(post.ofFunction("shop-pay")) > 0 {
		t.Errorf("blog-post sees processes of app shop: %v %v", post.ofFunction("shop-cart"), post.ofFunction("shop-pay"))
	}
	for _, p := range post.Procs {
		if p.Pid != 1 && p.Function != "blog-post" {
			t.Errorf("blog-post sees pid %d (%q), which is not of its own sandbox", p.Pid, p.Cmdline)
			break
		}
	}
	// Hostnames are not compared across apps: sandboxes may share one (all
	// are "baton" today); their UTS namespaces, checked above, differ.
	t.Logf("hostnames: shop %q, blog %q", cart.Hostname, post.Hostname)
}

// TestIsolationMemoryLimit: a function that allocates far beyond its
// memoryMB is killed; the caller and the record say out-of-memory, and the
// function works again at once.
func TestIsolationMemoryLimit(t *testing.T) {
	t.Parallel()
	srv := startContainerServer(t)
	spec := pySpec("hog")
	spec.MemoryMB = 128
	spec.TimeoutSeconds = 20
	deploy(t, srv, "iso-hog", spec, isoDir)

	// The control: what fits in memoryMB works.
	var fits struct{ AllocatedMB int }
	mustInvoke(t, srv, "iso-hog", map[string]int{"mb": 64}, &fits)
	if fits.AllocatedMB != 64 {
		t.Fatalf("allocated %d MB, want 64", fits.AllocatedMB)
	}

	// 200 MB is over the instance's memoryMB but under what the sandbox as
	// a whole may use (its limit covers every instance and grain worker):
	// the instance's own limit must stop it.
	began := time.Now()
	resp, _ := invokeWithin(t, srv, "iso-hog", `{"mb": 200}`, 20*time.Second)
	t.Logf("the 200 MB invocation answered %d after %s", resp.Status, time.Since(began).Round(time.Millisecond))
	if resp.Status != http.StatusBadGateway {
		t.Fatalf("allocating 200 MB with memoryMB 128: status %d, want 502: %s", resp.Status, resp.Body)
	}
	eb := errorBody(t, resp.Status, resp.Body)
	if eb.Code != "out-of-memory" || eb.ErrorType != "Baton.out-of-memory" || !strings.Contains(eb.Message, "out of memory") {
		t.Errorf("body does not say out-of-memory: %s", resp.Body)
	}
	rec := record(t, srv, resp.ID)
	checkRecord(t, rec, resp.ID, "iso-hog", "out-of-memory")
	if rec.Error == nil || rec.Error.Type != "Baton.out-of-memory" {
		t.Errorf("record error %+v, want Baton.out-of-memory", rec.Error)
	}

	var after struct{ AllocatedMB int }
	next := mustInvoke(t, srv, "iso-hog", map[string]int{"mb": 8}, &after)
	if after.AllocatedMB != 8 || !next.Cold {
		t.Errorf("after the OOM kill: %s (cold %v), want a new instance that works", next.Body, next.Cold)
	}
}

// TestIsolationPIDLimit: a fork bomb stops at its instance's PID limit
// with EAGAIN, and the sandbox still serves the app's other functions.
func TestIsolationPIDLimit(t *testing.T) {
	t.Parallel()
	srv := startContainerServer(t)
	bomb := pySpec("forkbomb")
	bomb.App = "bombs"
	bomb.MemoryMB = 512 // the limit that must stop the bomb is the PID limit
	bomb.TimeoutSeconds = 30
	deploy(t, srv, "iso-bomb", bomb, isoDir)
	peer := pySpec("procs")
	peer.App = "bombs"
	deploy(t, srv, "iso-bomb-peer", peer, isoDir)

	var r struct {
		Forks int
		Error string
		Pidns string
	}
	began := time.Now()
	mustInvoke(t, srv, "iso-bomb", map[string]any{"max": 400, "seconds": 15}, &r)
	t.Logf("the fork bomb forked %d times in %s, then %q", r.Forks, time.Since(began).Round(time.Millisecond), r.Error)
	if r.Error != "EAGAIN" || r.Forks >= 300 || r.Forks < 10 {
		t.Errorf("fork bomb: %d forks then %q; want fewer than 300 forks stopped by EAGAIN (PID limit 256)", r.Forks, r.Error)
	}

	var p procsResult
	mustInvoke(t, srv, "iso-bomb-peer", nil, &p)
	if p.Pidns != r.Pidns {
		t.Errorf("iso-bomb-peer ran in %s, not in app bombs' sandbox %s", p.Pidns, r.Pidns)
	}
	// The sandbox's PIDs came back: the same function forks again.
	var again struct {
		Forks int
		Error string
	}
	mustInvoke(t, srv, "iso-bomb", map[string]any{"max": 20}, &again)
	if again.Forks != 20 || again.Error != "" {
		t.Errorf("after the fork bomb: %d forks, %q; want 20 forks", again.Forks, again.Error)
	}
}

// TestIsolationEndlessForkBomb: a fork bomb that never stops holds its
// instance at its PID limit until the function's timeout, which kills the
// instance with all its processes. Once the instance is full some bomb
// processes exit, so that the sandbox's PID 1 (its reaper) has orphans to
// reap meanwhile. The sandbox must survive all that: its reaper
// lives on, the app's warm instance answers during and after the bomb, and
// afterwards a new instance starts in the same sandbox. Each round uses a
// new app, so a new sandbox, because how a reaper copes depends on its state
// when the bomb hits: one round could pass by luck where the next fails.
// Not parallel: the other tests' load must not slow the bomb down.
func TestIsolationEndlessForkBomb(t *testing.T) {
	// Without kept zygotes: every process with the bomb's environment,
	// its zygote included, is to be gone once its instance is.
	srv := startContainerServer(t, "--zygote-keep=0")
	for i := range 3 {
		endlessForkBomb(t, srv, fmt.Sprintf("endless%d", i))
	}
}

func endlessForkBomb(t *testing.T, srv *harness.Server, app string) {
	peerName, bombName, lateName := app+"-peer", app+"-bomb", app+"-late"
	peer := pySpec("procs")
	peer.App = app
	deploy(t, srv, peerName, peer, isoDir)
	deploy(t, srv, lateName, peer, isoDir)
	bomb := pySpec("forkforever")
	bomb.App = app
	bomb.MemoryMB = 512
	bomb.TimeoutSeconds = 25 // time to fill its PID limit on a busy machine
	deploy(t, srv, bombName, bomb, isoDir)
	bombProcs := func() []int { return withEnv(allProcs(), "AWS_LAMBDA_FUNCTION_NAME="+bombName) }
	killAtCleanup(t, bombProcs)

	var before procsResult
	mustInvoke(t, srv, peerName, nil, &before)
	reaper := reaperIn(before.Pidns)
	if reaper == 0 {
		t.Fatalf("%s: no reaper found on the host for the sandbox's PID namespace %s", app, before.Pidns)
	}
	threads := taskCount(reaper)
	reaperDied := func(when string) {
		t.Helper()
		if !procAlive(reaper) {
			t.Fatalf("%s: the sandbox's reaper (its PID 1, host pid %d, %d threads before the bomb) died %s: every process of the app's sandbox died with it; server log:\n%s",
				app, reaper, threads, when, reaperLog(srv))
		}
	}

	sandboxGroup, err := pidsCgroupDir(reaper)
	if err != nil {
		t.Fatalf("%s: the sandbox's PID cgroup: %v", app, err)
	}
	if filepath.Base(sandboxGroup) == "init" {
		sandboxGroup = filepath.Dir(sandboxGroup) // cgroup v2: PID 1 is in a leaf
	}

	var bombResp client.InvokeResponse
	bombDone := make(chan struct{})
	began := time.Now()
	go func() {
		defer close(bombDone)
		bombResp, _ = srv.Client.Invoke(ctx(t), bombName, []byte(`{"seconds": 60, "churn": 0.05}`))
	}()
	// Full: the bomb's instance is at its PID limit (a group of its own
	// inside the sandbox, so that the sandbox's init and the app's other
	// instances can still create processes and threads). Read from the
	// instances' cgroups below the sandbox's, not from the processes:
	// reading a bomb process's /proc files waits for its memory map, which
	// a process forking at its memory limit can hold for seconds.
	full := func() (bool, string) {
		state := "no instance group yet"
		entries, _ := os.ReadDir(sandboxGroup)
		most := -1
		for _, e := range entries {
			if !e.IsDir() || !strings.HasPrefix(e.Name(), "p") {
				continue
			}
			cur, limit, err := readPids(filepath.Join(sandboxGroup, e.Name()))
			if err != nil {
				continue // gone meanwhile
			}
			if cur > most {
				most, state = cur, fmt.Sprintf("fullest instance group %d of %d PIDs", cur, limit)
			}
			if cur >= limit {
				return true, state
			}
		}
		return false, state
	}
	// Filling must happen before the bomb's call ends (its timeout): the
	// bombDone case fails the test then. The deadline only guards against
	// a call that never ends, and is generous because a busy host can take
	// long to start the bomb's instance at all.
	filled, state := false, ""
	for !filled && time.Since(began) < settle {
		select {
		case <-bombDone:
			reaperDied("while the fork bomb filled its PID limit")
			t.Fatalf("%s: the endless fork bomb answered %d after %s before it filled its PID limit (%s): %s",
				app, bombResp.Status, time.Since(began).Round(time.Millisecond), state, bombResp.Body)
		default:
		}
		filled, state = full()
		time.Sleep(5 * time.Millisecond)
	}
	if !filled {
		t.Fatalf("%s: the endless fork bomb neither filled its PID limit nor ended in %s (%s)", app, settle, state)
	}
	warm, took := invokeWithin(t, srv, peerName, "null", settle)
	var during procsResult
	_ = json.Unmarshal(warm.Body, &during)
	<-bombDone
	t.Logf("%s: reaper with %d threads; during the bomb the warm function answered %d after %s; the bomb answered %d after %s",
		app, threads, warm.Status, took.Round(time.Millisecond), bombResp.Status, time.Since(began).Round(time.Millisecond))
	reaperDied("during the fork bomb")
	if warm.Status != http.StatusOK || during.Pid != before.Pid {
		t.Errorf("%s: during the fork bomb the app's warm function answered %d from pid %d (before: %d): %.300s", app, warm.Status, during.Pid, before.Pid, warm.Body)
	}
	if bombResp.Status != http.StatusGatewayTimeout {
		t.Errorf("%s: endless fork bomb: status %d, want 504 (timeoutSeconds %d): %s", app, bombResp.Status, bomb.TimeoutSeconds, bombResp.Body)
	}
	waitNoProcs(t, settle, "the endless fork bomb's processes should die with its instance", bombProcs)

	var after, late procsResult
	resp := mustInvoke(t, srv, peerName, nil, &after)
	if resp.Cold || after.Pid != before.Pid {
		t.Errorf("%s: after the fork bomb the app's warm instance (pid %d) is gone: cold %v, pid %d", app, before.Pid, resp.Cold, after.Pid)
	}
	mustInvoke(t, srv, lateName, nil, &late)
	if late.Pidns != before.Pidns {
		t.Errorf("%s: a new instance started in %s, not in its app's sandbox %s", app, late.Pidns, before.Pidns)
	}
	reaperDied("after the fork bomb")
	// The app's sandbox is not needed any more.
	for _, name := range []string{peerName, lateName, bombName} {
		if err := srv.Client.Delete(ctx(t), name); err != nil {
			t.Fatalf("delete %s: %v", name, err)
		}
	}
}

// reaperIn finds on the host the reaper (PID 1) of the sandbox whose PID
// namespace is pidns.
func reaperIn(pidns string) int {
	for _, pid := range allProcs() {
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(cmd, []byte(reaperArg)) {
			continue
		}
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err == nil && ns == pidns {
			return pid
		}
	}
	return 0
}

// pidsCgroupDir is the directory of the cgroup (v1 pids hierarchy, or v2)
// that holds pid, as the host sees it.
func pidsCgroupDir(pid int) (string, error) {
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	var dir string
	for _, line := range strings.Split(strings.TrimSpace(string(cg)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if slices.Contains(strings.Split(parts[1], ","), "pids") {
			return filepath.Join("/sys/fs/cgroup/pids", parts[2]), nil
		}
		if parts[0] == "0" && parts[1] == "" {
			dir = filepath.Join("/sys/fs/cgroup", parts[2])
		}
	}
	if dir == "" {
		return "", fmt.Errorf("process %d is in no pids cgroup", pid)
	}
	return dir, nil
}

// readPids reads the PID count and limit of the cgroup in dir.
func readPids(dir string) (cur, limit int, err error) {
	read := func(name string) (int, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if cur, err = read("pids.current"); err != nil {
		return 0, 0, err
	}
	if limit, err = read("pids.max"); err != nil {
		return 0, 0, err
	}
	return cur, limit, nil
}

func taskCount(pid int) int {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return len(tasks)
}

// reaperLog returns what the server logged of its sandboxes' reapers.
func reaperLog(srv *harness.Server) string {
	var out []string
	for _, line := range strings.Split(srv.Logs(), "\n") {
		if strings.Contains(line, `msg="sandbox reaper"`) && len(out) < 12 {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// waitNoProcs waits until find returns no process.
func waitNoProcs(t *testing.T, timeout time.Duration, what string, find func() []int) {
	t.Helper()
	waitFor(t, timeout, what, func() (bool, string) {
		pids := find()
		return len(pids) == 0, fmt.Sprintf("%d processes: %.500s", len(pids), procDesc(pids))
	})
}

// TestIsolationRuntimeAPI: an isolated instance finds its Runtime API at
// 127.0.0.1 inside its own network namespace, where neither the host nor
// another app's sandbox can reach it.
func TestIsolationRuntimeAPI(t *testing.T) {
	t.Parallel()
	srv := startContainerServer(t)
	deploy(t, srv, "iso-rapi-a", pySpec("runtimeapi"), isoDir)
	deploy(t, srv, "iso-rapi-b", pySpec("runtimeapi"), isoDir)

	var a runtimeAPIResult
	mustInvoke(t, srv, "iso-rapi-a", nil, &a)
	host, _, err := net.SplitHostPort(a.RuntimeAPI)
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("AWS_LAMBDA_RUNTIME_API is %q, want a 127.0.0.1 address", a.RuntimeAPI)
	}
	if a.Own != "connected" {
		t.Errorf("the instance cannot connect to its own Runtime API %s: %s", a.RuntimeAPI, a.Own)
	}
	if a.Netns == hostNS(t, "net") {
		t.Fatalf("the isolated instance runs in the host's network namespace")
	}

	// Another app's function cannot reach (and so cannot take the events
	// of) iso-rapi-a's Runtime API.
	var b runtimeAPIResult
	mustInvoke(t, srv, "iso-rapi-b", map[string]string{"probe": a.RuntimeAPI}, &b)
	if b.Netns == a.Netns {
		t.Errorf("two apps share the network namespace %s", a.Netns)
	}
	if b.RuntimeAPI == a.RuntimeAPI {
		t.Logf("both sandboxes' Runtime APIs happen to use %s: the cross-app probe proves nothing", a.RuntimeAPI)
	} else if b.Probe == "connected" {
		t.Errorf("iso-rapi-b (another app) connected to iso-rapi-a's Runtime API %s", a.RuntimeAPI)
	}
	// Nor can the host's network namespace.
	if c, err := net.DialTimeout("tcp", a.RuntimeAPI, 2*time.Second); err == nil {
		c.Close()
		t.Errorf("the host reached the isolated sandbox's Runtime API at %s", a.RuntimeAPI)
	}
}

// TestIsolationNothingLeftBehind: once the server has stopped, no process
// of its sandboxes remains (not even one a function left running in its
// own session), nor any cgroup or mount of theirs.
func TestIsolationNothingLeftBehind(t *testing.T) {
	t.Parallel()
	srv := startContainerServer(t)
	deploy(t, srv, "iso-leave-a", pySpec("daemon"), isoDir)
	deploy(t, srv, "iso-leave-b", pySpec("procs"), isoDir)
	var d struct{ Daemon, Pid int }
	mustInvoke(t, srv, "iso-leave-a", nil, &d)
	mustInvoke(t, srv, "iso-leave-b", nil, nil)
	fnProcs := func() []int {
		return append(withEnv(allProcs(), "AWS_LAMBDA_FUNCTION_NAME=iso-leave-a"), withEnv(allProcs(), "AWS_LAMBDA_FUNCTION_NAME=iso-leave-b")...)
	}
	killAtCleanup(t, fnProcs)

	// What the server's sandboxes are while it runs.
	entries, err := os.ReadDir(filepath.Join(srv.DataDir, "sandboxes-state", "sandboxes"))
	if err != nil {
		t.Fatalf("the container runtime's state directory: %v", err)
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.Name())
	}
	if len(ids) < 2 {
		t.Fatalf("sandboxes %v, want one per app (2)", ids)
	}
	inSandbox := func() []int {
		var out []int
		for _, pid := range allProcs() {
			cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
			if err != nil || !procAlive(pid) {
				continue
			}
			for _, id := range ids {
				if bytes.Contains(cg, []byte(id)) {
					out = append(out, pid)
					break
				}
			}
		}
		return out
	}
	killAtCleanup(t, inSandbox)
	before := inSandbox()
	fns := fnProcs()
	for _, pid := range fns {
		if !slices.Contains(before, pid) {
			t.Errorf("process %d of a function is in no sandbox's cgroup: %s", pid, procDesc([]int{pid}))
		}
	}
	var reapers []int
	for _, pid := range before {
		if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && bytes.Contains(cmd, []byte(reaperArg)) {
			reapers = append(reapers, pid)
		}
	}
	t.Logf("sandboxes %v: %d processes (%d of the functions, reapers %v)", ids, len(before), len(fns), reapers)
	if len(reapers) != len(ids) {
		t.Errorf("found reapers %v for sandboxes %v, want one each: the process check would miss them: %s", reapers, ids, procDesc(before))
	}
	if len(fns) < 5 {
		// iso-leave-a: grain worker, instance, daemon; iso-leave-b: grain worker, instance.
		t.Errorf("found %d processes of the functions on the host, want at least 5: %s", len(fns), procDesc(fns))
	}
	mountsBefore := mountsUnder(t, srv.DataDir)
	if len(mountsBefore) == 0 {
		t.Errorf("no mount under the data directory while sandboxes run: the mount check would prove nothing")
	}
	cgroupsBefore := cgroupDirs(ids)
	if len(cgroupsBefore) == 0 {
		t.Errorf("no cgroup directory of the sandboxes %v found: the cgroup check would prove nothing", ids)
	}
	t.Logf("%d mounts under the data directory, %d cgroup directories", len(mountsBefore), len(cgroupsBefore))

	if err := srv.Stop(); err != nil {
		t.Fatalf("stop server: %v", err)
	}
	waitFor(t, settle, "no process of the sandboxes should survive the server", func() (bool, string) {
		left := append(liveOf(before), inSandbox()...)
		left = append(left, fnProcs()...)
		left = append(left, cwdUnder(srv.DataDir)...)
		return len(left) == 0, procDesc(left)
	})
	if m := mountsUnder(t, srv.DataDir); len(m) > 0 {
		t.Errorf("mounts under the data directory outlive the server:\n%s", strings.Join(m, "\n"))
	}
	if c := cgroupDirs(ids); len(c) > 0 {
		t.Errorf("cgroups of the sandboxes outlive the server: %v", c)
	}
}

// mountsUnder lists the mount points (of the test's mount namespace) at or
// below dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := fields[4]
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	return out
}

// cwdUnder lists the processes whose working directory is in dir.
func cwdUnder(dir string) []int {
	var out []int
	for _, pid := range allProcs() {
		cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if err == nil && (cwd == dir || strings.HasPrefix(cwd, dir+"/")) && procAlive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// cgroupDirs lists the cgroup directories (v1 hierarchies or v2) named
// after one of the sandbox ids.
func cgroupDirs(ids []string) []string {
	var out []string
	_ = filepath.WalkDir("/sys/fs/cgroup", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if !d.IsDir() {
			return nil
		}
		for _, id := range ids {
			if strings.Contains(d.Name(), id) {
				out = append(out, path)
				return filepath.SkipDir
			}
		}
		return nil
	})
	return out
}
