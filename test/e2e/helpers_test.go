package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	apiv1 "github.com/baton-faas/baton/api/v1"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/test/harness"
)

// Code directories of the test functions.
const (
	pyDir       = "testdata/python"
	pyBrokenDir = "testdata/pybroken"
	nodeDir     = "testdata/node"
	goEchoPkg   = "./test/e2e/testdata/goecho"
	helloGoPkg  = "./examples/hello-go"
	// failBootDir is a shell bootstrap (runtime provided) that exits
	// before it polls the Runtime API; see its header for the variables
	// that make it leave traces.
	failBootDir = "testdata/failboot"
	// goEscapePkg moves itself out of its instance's process group.
	goEscapePkg = "./test/e2e/testdata/goescape"
)

func requireLinux(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("end-to-end tests need Linux (/proc, process groups)")
	}
}

func requirePython(t *testing.T) {
	t.Helper()
	requireLinux(t)
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed: skipping a test that runs Python functions (install python3, e.g. scripts/setup.sh)")
	}
}

func requireNode(t *testing.T) {
	t.Helper()
	requireLinux(t)
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed: skipping a test that runs Node functions (install nodejs, e.g. scripts/setup.sh)")
	}
}

// ctx is a context bounded by the test's deadline.
func ctx(t *testing.T) context.Context { return harness.Context(t) }

// startServer starts a fresh server with extra flags.
func startServer(t *testing.T, args ...string) *harness.Server {
	t.Helper()
	return harness.Start(t, harness.Options{Args: args})
}

// zipDir zips a code directory with Baton's own archiver, as the CLI does.
func zipDir(t *testing.T, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := archive.ZipDir(dir, &buf); err != nil {
		t.Fatalf("zip %s: %v", dir, err)
	}
	return buf.Bytes()
}

// copyDir copies a flat directory of files into a new temp dir, so a test
// can add or change files (a new code version) without touching testdata.
func copyDir(t *testing.T, src string, extra map[string]string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range extra {
		if err := os.WriteFile(filepath.Join(dst, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// deploy deploys dir as name and fails the test on error.
func deploy(t *testing.T, srv *harness.Server, name string, spec function.Spec, dir string) apiv1.Function {
	t.Helper()
	v, err := srv.Client.Deploy(ctx(t), name, client.DeployRequest{FunctionSpec: apiv1.FunctionSpec(spec), Code: zipDir(t, dir)})
	if err != nil {
		t.Fatalf("deploy %s: %v", name, err)
	}
	return v
}

func pySpec(handler string) function.Spec {
	return function.Spec{Runtime: function.RuntimePython, Handler: "app." + handler}
}

// invoke calls a function through the Go client and returns the raw
// outcome; err is the client's error (an *client.Error for non-2xx).
func invoke(t *testing.T, srv *harness.Server, name string, event any) (client.InvokeResponse, error) {
	t.Helper()
	var payload []byte
	switch e := event.(type) {
	case nil:
	case []byte:
		payload = e
	case string:
		payload = []byte(e)
	default:
		var err error
		if payload, err = json.Marshal(e); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := srv.Client.Invoke(ctx(t), name, payload)
	if err != nil && resp.Status == 0 {
		t.Fatalf("invoke %s: %v", name, err)
	}
	return resp, err
}

// invokeWithin invokes with the call bounded by d and says how long the
// answer took; no answer within d fails the test (a hung invocation).
func invokeWithin(t *testing.T, srv *harness.Server, name, payload string, d time.Duration) (client.InvokeResponse, time.Duration) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx(t), d)
	defer cancel()
	began := time.Now()
	resp, err := srv.Client.Invoke(c, name, []byte(payload))
	took := time.Since(began)
	if resp.Status == 0 {
		t.Fatalf("invoke %s: no answer after %s: %v", name, took.Round(time.Millisecond), err)
	}
	return resp, took
}

// mustInvoke invokes and requires a 200; it decodes the result into out
// when out is not nil.
func mustInvoke(t *testing.T, srv *harness.Server, name string, event any, out any) client.InvokeResponse {
	t.Helper()
	resp, err := invoke(t, srv, name, event)
	if err != nil || resp.Status != http.StatusOK {
		t.Fatalf("invoke %s: status %d, err %v, body %s", name, resp.Status, err, resp.Body)
	}
	if out != nil {
		if err := json.Unmarshal(resp.Body, out); err != nil {
			t.Fatalf("invoke %s: result %q is not the expected JSON: %v", name, resp.Body, err)
		}
	}
	return resp
}

// errorBody decodes an API error response and checks that it has a code
// and a message.
func errorBody(t *testing.T, status int, body []byte) apiv1.Error {
	t.Helper()
	var eb apiv1.Error
	if err := json.Unmarshal(body, &eb); err != nil {
		t.Fatalf("HTTP %d: error body %q is not JSON: %v", status, body, err)
	}
	if eb.Code == "" || eb.Message == "" {
		t.Fatalf("HTTP %d: error body %s lacks code or message", status, body)
	}
	return eb
}

// httpResult is a raw HTTP exchange.
type httpResult struct {
	Status int
	Header http.Header
	Body   []byte
}

var rawClient = &http.Client{Timeout: 2 * time.Minute}

// do sends a raw HTTP request to the server.
func do(t *testing.T, method, url string, body []byte, header map[string]string) httpResult {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx(t), method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := rawClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return httpResult{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

var timingRE = regexp.MustCompile(`^([a-z]+);dur=([0-9]+(?:\.[0-9]+)?)$`)

// serverTiming parses "wait;dur=1.0, init;dur=2.0, exec;dur=3.0" and
// requires exactly those three metrics.
func serverTiming(t *testing.T, h http.Header) map[string]float64 {
	t.Helper()
	raw := h.Get("Server-Timing")
	out := map[string]float64{}
	for _, part := range strings.Split(raw, ",") {
		m := timingRE.FindStringSubmatch(strings.TrimSpace(part))
		if m == nil {
			t.Fatalf("Server-Timing %q: cannot parse %q", raw, part)
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatal(err)
		}
		out[m[1]] = v
	}
	for _, k := range []string{"wait", "init", "exec"} {
		if _, ok := out[k]; !ok {
			t.Fatalf("Server-Timing %q lacks %s", raw, k)
		}
	}
	return out
}

// settle is how long a test waits for a condition that a busy host can
// delay: an instance starting (a Python init can take tens of seconds at a
// load of 20), a process dying, a record being written. It is generous on
// purpose: a condition that never holds still fails the test, at this
// deadline.
const settle = 90 * time.Second

// waitFor polls cond until it holds or timeout passes; cond describes the
// current state for the failure message.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s; last state: %s", timeout, what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// status returns a function's live status.
func status(t *testing.T, srv *harness.Server, name string) apiv1.Function {
	t.Helper()
	v, err := srv.Client.Get(ctx(t), name)
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	return v
}

func describeStatus(v apiv1.Function) string {
	b, _ := json.Marshal(v.Status)
	return string(b)
}

// waitInFlight waits until the function has n events in flight.
func waitInFlight(t *testing.T, srv *harness.Server, name string, n int) {
	t.Helper()
	waitFor(t, settle, fmt.Sprintf("%s should have %d invocation(s) in flight", name, n), func() (bool, string) {
		v := status(t, srv, name)
		total := 0
		for _, in := range v.Status.Instances {
			total += in.InFlight
		}
		return total == n, describeStatus(v)
	})
}

// procAlive says whether pid is a live (non-zombie) process.
func procAlive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return false
	}
	state := stat[i+2]
	return state != 'Z' && state != 'X'
}

// functionProcs lists the server's live descendants that run code of the
// named function: every instance process (and a Python function's zygote)
// carries AWS_LAMBDA_FUNCTION_NAME in its environment.
func functionProcs(serverPid int, name string) []int {
	return withEnv(harness.Descendants(serverPid), "AWS_LAMBDA_FUNCTION_NAME="+name)
}

// allProcs lists every process of /proc, for processes that are no
// longer (or never were) descendants of a server.
func allProcs() []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// withEnv returns the live processes of pids whose environment holds kv
// ("NAME=value").
func withEnv(pids []int, kv string) []int {
	want := []byte(kv + "\x00")
	var out []int
	for _, pid := range pids {
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil || !procAlive(pid) {
			continue
		}
		if bytes.HasPrefix(env, want) || bytes.Contains(env, append([]byte{0}, want...)) {
			out = append(out, pid)
		}
	}
	return out
}

// withArgs returns the live processes of pids whose command line is args.
func withArgs(pids []int, args ...string) []int {
	want := []byte(strings.Join(args, "\x00") + "\x00")
	var out []int
	for _, pid := range pids {
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && bytes.Equal(cmd, want) && procAlive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// withArg returns the live processes of pids one of whose arguments is
// arg: tests hand functions a unique marker to put on a command line, which
// the host sees whatever PID namespace the process is in.
func withArg(pids []int, arg string) []int {
	want := []byte(arg)
	var out []int
	for _, pid := range pids {
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !procAlive(pid) {
			continue
		}
		for _, a := range bytes.Split(bytes.TrimSuffix(cmd, []byte{0}), []byte{0}) {
			if bytes.Equal(a, want) {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// hostProc is a process as the host sees it. Functions report their pid
// as their PID namespace counts it (a container sandbox has its own), so
// tests map it to the host's pid while the process is known to run; the
// start time tells a reused pid from the process itself.
type hostProc struct {
	Pid   int
	start string // field 22 of /proc/PID/stat, in clock ticks after boot
}

func (p hostProc) String() string { return procDesc([]int{p.Pid}) }

// alive says whether the process still runs (a zombie does not).
func (p hostProc) alive() bool {
	return procAlive(p.Pid) && procStart(p.Pid) == p.start
}

// kill sends SIGKILL to the process.
func (p hostProc) kill(t *testing.T) {
	t.Helper()
	if !p.alive() {
		t.Fatalf("process %d to kill is not running", p.Pid)
	}
	if err := syscall.Kill(p.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill process %d: %v", p.Pid, err)
	}
}

// procStart returns the start time field of /proc/PID/stat, or "".
func procStart(pid int) string {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return ""
	}
	// After the command name: state is field 3, starttime field 22.
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 20 {
		return ""
	}
	return fields[19]
}

// hostProcOf finds the running process that is nspid in the PID namespace
// pidns (as /proc/self/ns/pid names it inside, e.g. "pid:[4026531836]"):
// the last pid of a process's NSpid line is its pid in its own namespace.
// It fails the test when there is none.
func hostProcOf(t *testing.T, pidns string, nspid int) hostProc {
	t.Helper()
	if pidns == "" || nspid <= 0 {
		t.Fatalf("no process to look for: pid %d in namespace %q", nspid, pidns)
	}
	for _, pid := range allProcs() {
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err != nil || ns != pidns {
			continue
		}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			ids, ok := strings.CutPrefix(line, "NSpid:")
			if !ok {
				continue
			}
			f := strings.Fields(ids)
			if len(f) > 0 && f[len(f)-1] == strconv.Itoa(nspid) && procAlive(pid) {
				return hostProc{Pid: pid, start: procStart(pid)}
			}
		}
	}
	t.Fatalf("no running process is pid %d in PID namespace %s", nspid, pidns)
	return hostProc{}
}

// liveProcs returns the processes of the list that still run.
func liveProcs(procs []hostProc) []hostProc {
	var out []hostProc
	for _, p := range procs {
		if p.alive() {
			out = append(out, p)
		}
	}
	return out
}

// containerSandboxes says whether the server isolates functions in
// containers (its /healthz names the isolation): a few behaviours differ
// there by design, and tests assert the container's version of them.
func containerSandboxes(t *testing.T, srv *harness.Server) bool {
	t.Helper()
	res := do(t, http.MethodGet, srv.URL+"/healthz", nil, nil)
	var health struct{ Isolation string }
	if err := json.Unmarshal(res.Body, &health); err != nil || res.Status != http.StatusOK || health.Isolation == "" {
		t.Fatalf("/healthz: HTTP %d %s (%v)", res.Status, res.Body, err)
	}
	return strings.HasPrefix(health.Isolation, "container (")
}

// killAtCleanup kills, when the test ends, the processes find returns
// then: a process a test lets escape Baton's control must not outlive the
// test, whether or not Baton managed to stop it.
func killAtCleanup(t *testing.T, find func() []int) {
	t.Cleanup(func() {
		for _, pid := range find() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// procDesc describes pids for failure messages.
func procDesc(pids []int) string {
	var parts []string
	for _, p := range pids {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		parts = append(parts, fmt.Sprintf("%d (%s)", p, strings.TrimSpace(string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '})))))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// waitNoFunctionProcs waits until no process runs the function's code.
func waitNoFunctionProcs(t *testing.T, srv *harness.Server, name string, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, "no process of the server should run function "+name, func() (bool, string) {
		pids := functionProcs(srv.Pid(), name)
		return len(pids) == 0, procDesc(pids)
	})
}

// liveOf returns the pids of the list that are still alive.
func liveOf(pids []int) []int {
	var out []int
	for _, p := range pids {
		if procAlive(p) {
			out = append(out, p)
		}
	}
	return out
}

// records lists a function's invocation records, newest first.
func recordsOf(t *testing.T, srv *harness.Server, name string) []apiv1.Invocation {
	t.Helper()
	recs, err := srv.Client.Invocations(ctx(t), name, 1000)
	if err != nil {
		t.Fatalf("records of %s: %v", name, err)
	}
	return recs
}

// record fetches one record; records are written right after the response
// goes out, so it polls briefly.
func record(t *testing.T, srv *harness.Server, id string) apiv1.Invocation {
	t.Helper()
	var rec apiv1.Invocation
	waitFor(t, settle, "invocation record "+id+" should exist", func() (bool, string) {
		var err error
		rec, err = srv.Client.Invocation(ctx(t), id)
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	return rec
}

// checkRecord checks the fields every finished invocation record has.
func checkRecord(t *testing.T, rec apiv1.Invocation, id, name, status string) {
	t.Helper()
	if rec.ID != id || rec.Function != name || rec.Status != status {
		t.Errorf("record %+v: want id %s, function %s, status %s", rec, id, name, status)
	}
	if rec.Start.IsZero() || rec.End.IsZero() || rec.End.Before(rec.Start) {
		t.Errorf("record %s: bad start/end %v / %v", id, rec.Start, rec.End)
	}
	if rec.DurationMs <= 0 || rec.WaitMs < 0 || rec.ExecMs < 0 || rec.DurationMs+1 < rec.WaitMs+rec.ExecMs {
		t.Errorf("record %s: implausible timings duration %.3f wait %.3f exec %.3f", id, rec.DurationMs, rec.WaitMs, rec.ExecMs)
	}
}

// cli runs the baton binary and returns stdout, stderr and the exit code.
// With a server, the command gets its API token as BATON_TOKEN, as a user
// on another host would set it.
func cli(t *testing.T, srv *harness.Server, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.CommandContext(ctx(t), harness.Binary(t), args...)
	cmd.Env = append(os.Environ(), "BATON_SERVER=http://127.0.0.1:1") // --server must win
	if srv != nil {
		cmd.Env = append(cmd.Env, "BATON_TOKEN="+srv.Token)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) {
			t.Fatalf("run baton %v: %v", args, err)
		}
		code = exitErr.ExitCode()
	}
	return stdout.String(), stderr.String(), code
}

// metrics scrapes /metrics into "name{labels}" -> value.
func metrics(t *testing.T, srv *harness.Server) map[string]float64 {
	t.Helper()
	res := do(t, http.MethodGet, srv.URL+"/metrics", nil, srv.AuthHeader())
	if res.Status != http.StatusOK {
		t.Fatalf("/metrics: HTTP %d: %s", res.Status, res.Body)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(res.Body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("/metrics: bad line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics: bad value in %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// parallel runs fn(i) for i in [0, n) at once and waits for all.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(i)
		}()
	}
	wg.Wait()
}
