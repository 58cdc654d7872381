// Package sandboxtest is the conformance suite of sandbox runtimes: every
// driver (process, container, fake) runs it from its own tests, so that
// the host agent can rely on one contract whichever isolates its
// functions. What a driver cannot do (run real programs, enforce limits,
// isolate the network) it says through sandbox.Capabilities, and the suite
// skips those checks naming the capability, never silently.
package sandboxtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/sandbox"
)

// Option adjusts the suite to a driver.
type Option func(*config)

type config struct {
	spec func(t *testing.T, spec *sandbox.Spec)
}

// WithSpec completes each sandbox spec with what the driver needs (for
// containers: root layers holding a shell and python3).
func WithSpec(f func(t *testing.T, spec *sandbox.Spec)) Option {
	return func(c *config) { c.spec = f }
}

// patience bounds every wait of the suite: generous, for a busy host.
const patience = time.Minute

var seq atomic.Int64

// Run runs the suite against the runtimes newRuntime makes (one per
// subtest). Programs the suite runs in the sandbox use /bin/sh and
// python3 from the sandbox's PATH (/usr/bin:/bin).
func Run(t *testing.T, newRuntime func(t *testing.T) sandbox.Runtime, opts ...Option) {
	var c config
	for _, o := range opts {
		o(&c)
	}
	s := &suite{cfg: c, newRuntime: newRuntime}
	t.Run("CreateDestroy", s.createDestroy)
	t.Run("RuntimeAPIThroughListen", s.runtimeAPI)
	t.Run("ArgsEnvAndExitStatus", s.argsEnvExit)
	t.Run("KillReachesForks", s.killReachesForks)
	t.Run("DestroyWithLiveProcesses", s.destroyLive)
	t.Run("Resize", s.resize)
	t.Run("IsolatedNetwork", s.isolatedNetwork)
	t.Run("MemoryLimitAndOOM", s.memoryLimit)
	t.Run("PIDLimit", s.pidLimit)
}

type suite struct {
	cfg        config
	newRuntime func(t *testing.T) sandbox.Runtime
}

// create makes a sandbox that is destroyed when the test ends.
func (s *suite) create(t *testing.T, r sandbox.Runtime, edit func(*sandbox.Spec)) sandbox.Sandbox {
	t.Helper()
	spec := sandbox.Spec{ID: fmt.Sprintf("sbt%d-%d", os.Getpid(), seq.Add(1))}
	spec.App = spec.ID
	if s.cfg.spec != nil {
		s.cfg.spec(t, &spec)
	}
	if edit != nil {
		edit(&spec)
	}
	sb, err := r.Create(ctx(t), spec)
	if err != nil {
		t.Fatalf("Create %s: %v", spec.ID, err)
	}
	if sb.ID() != spec.ID {
		t.Errorf("sandbox ID %q, want %q", sb.ID(), spec.ID)
	}
	t.Cleanup(func() {
		if err := sb.Destroy(context.Background()); err != nil {
			t.Errorf("Destroy %s: %v", spec.ID, err)
		}
	})
	return sb
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	return c
}

// needPrograms skips a check that needs real programs, saying so.
func needPrograms(t *testing.T, r sandbox.Runtime) {
	t.Helper()
	if !r.Capabilities().Programs {
		t.Skipf("the driver runs no programs (Capabilities.Programs is false): %s", r.Isolation())
	}
}

// needPython skips where the host has no python3 to run in sandboxes.
func needPython(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed: the suite's runtime client and memory hog are Python programs")
	}
}

var programEnv = []string{"PATH=/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8"}

// waitExit waits, bounded, for p to end.
func waitExit(t *testing.T, p sandbox.Process) sandbox.ExitStatus {
	t.Helper()
	type result struct {
		st  sandbox.ExitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := p.Wait()
		done <- result{st, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("Wait: %v", r.err)
		}
		return r.st
	case <-time.After(patience):
		t.Fatalf("process %d did not end within %s", p.Pid(), patience)
		return sandbox.ExitStatus{}
	}
}

func wantKilled(t *testing.T, st sandbox.ExitStatus) {
	t.Helper()
	if st.Signal != int(syscall.SIGKILL) || st.Code != -1 {
		t.Errorf("exit status %+v, want killed by SIGKILL (code -1, signal 9)", st)
	}
}

// idle starts a process that runs until killed.
func idle(t *testing.T, sb sandbox.Sandbox, stdout *os.File) sandbox.Process {
	t.Helper()
	p, err := sb.Start(ctx(t), sandbox.ProcessSpec{
		Args: []string{"/bin/sh", "-c", "echo started; sleep 600 & sleep 600"}, Env: programEnv, Stdout: stdout,
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return p
}

func (s *suite) createDestroy(t *testing.T) {
	r := s.newRuntime(t)
	if r.Isolation() == "" {
		t.Error("Isolation is empty: operators are told nothing")
	}
	sb := s.create(t, r, nil)
	if err := sb.Destroy(ctx(t)); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if _, err := sb.Start(ctx(t), sandbox.ProcessSpec{Args: []string{"/bin/true"}, Env: programEnv}); err == nil {
		t.Error("Start in a destroyed sandbox succeeded")
	}
	if _, err := s.create(t, r, nil).Start(ctx(t), sandbox.ProcessSpec{}); err == nil {
		t.Error("Start without a command succeeded")
	}
}

// echoClient is a Lambda runtime client whose handler returns the event.
const echoClient = `
import os, urllib.request
base = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"
while True:
    r = urllib.request.urlopen(base + "next")
    rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
    body = r.read()
    urllib.request.urlopen(urllib.request.Request(base + rid + "/response", data=body, method="POST"))
`

// runtimeAPI serves a one-event Runtime API on a listener of the sandbox
// and checks that a process started with its address in the environment
// polls it and posts the event back: the process ran with its
// environment, and reached the sandbox's listener.
func (s *suite) runtimeAPI(t *testing.T) {
	r := s.newRuntime(t)
	if r.Capabilities().Programs {
		needPython(t)
	}
	sb := s.create(t, r, nil)
	ln, err := sb.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	const event = `{"conformance":"echo"}`
	responses := make(chan string, 1)
	var served atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("GET /2018-06-01/runtime/invocation/next", func(w http.ResponseWriter, req *http.Request) {
		if served.Swap(true) {
			<-req.Context().Done() // one event only: later polls wait
			return
		}
		w.Header().Set("Lambda-Runtime-Aws-Request-Id", "req-1")
		_, _ = io.WriteString(w, event)
	})
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/response", func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		select {
		case responses <- req.PathValue("id") + " " + string(b):
		default:
		}
		w.WriteHeader(http.StatusAccepted)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: patience}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	p, err := sb.Start(ctx(t), sandbox.ProcessSpec{
		Args: []string{"python3", "-c", echoClient},
		Env:  append([]string{"AWS_LAMBDA_RUNTIME_API=" + ln.Addr().String()}, programEnv...),
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	select {
	case got := <-responses:
		if want := "req-1 " + event; got != want {
			t.Errorf("response %q, want %q", got, want)
		}
	case <-time.After(patience):
		t.Fatalf("no response to the event within %s", patience)
	}
	if err := p.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	wantKilled(t, waitExit(t, p))
}

func (s *suite) argsEnvExit(t *testing.T) {
	r := s.newRuntime(t)
	needPrograms(t, r)
	sb := s.create(t, r, nil)
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	p, err := sb.Start(ctx(t), sandbox.ProcessSpec{
		Args: []string{"/bin/sh", "-c", `echo "$1:$CONFORMANCE"; exit 3`, "sh", "arg one"},
		Env:  append([]string{"CONFORMANCE=env"}, programEnv...), Stdout: out,
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	st := waitExit(t, p)
	if st.Code != 3 || st.Signal != 0 {
		t.Errorf("exit status %+v, want code 3", st)
	}
	b, _ := os.ReadFile(out.Name())
	if got := strings.TrimSpace(string(b)); got != "arg one:env" {
		t.Errorf("output %q, want %q", got, "arg one:env")
	}
}

// killReachesForks: killing a process kills what it started. The forks
// hold the output pipe: it reaches EOF only once every one is gone.
func (s *suite) killReachesForks(t *testing.T) {
	r := s.newRuntime(t)
	sb := s.create(t, r, nil)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	p := idle(t, sb, pw)
	pw.Close()
	lines := bufio.NewReader(pr)
	if r.Capabilities().Programs {
		// Killed before it forked, the check would prove nothing.
		if line, err := lines.ReadString('\n'); err != nil || line != "started\n" {
			t.Fatalf("first output %q (%v), want started", line, err)
		}
	}
	if err := p.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	wantKilled(t, waitExit(t, p))
	eof := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, lines); eof <- err }()
	select {
	case <-eof:
	case <-time.After(patience):
		pr.Close()
		t.Fatalf("a process forked by the killed one still holds its output %s later", patience)
	}
}

func (s *suite) destroyLive(t *testing.T) {
	r := s.newRuntime(t)
	sb := s.create(t, r, nil)
	p := idle(t, sb, nil)
	if err := sb.Destroy(ctx(t)); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	wantKilled(t, waitExit(t, p))
}

func (s *suite) resize(t *testing.T) {
	r := s.newRuntime(t)
	sb := s.create(t, r, func(spec *sandbox.Spec) { spec.MemoryMB, spec.PIDs, spec.CPUShares = 128, 64, 1024 })
	for _, res := range []sandbox.Resources{
		{MemoryMB: 256, PIDs: 128, CPUShares: 2048, CPUMillis: 1500},
		{}, // unlimited
	} {
		if err := sb.Resize(ctx(t), res); err != nil {
			t.Errorf("Resize to %+v: %v", res, err)
		}
	}
	if !r.Capabilities().Programs {
		return
	}
	// The sandbox still runs processes after its limits changed.
	p, err := sb.Start(ctx(t), sandbox.ProcessSpec{Args: []string{"/bin/true"}, Env: programEnv})
	if err != nil {
		t.Fatalf("Start after Resize: %v", err)
	}
	if st := waitExit(t, p); st.Code != 0 {
		t.Errorf("/bin/true after Resize: %+v", st)
	}
}

// isolatedNetwork: a listener of the host is unreachable from an isolated
// sandbox.
func (s *suite) isolatedNetwork(t *testing.T) {
	r := s.newRuntime(t)
	if !r.Capabilities().Network {
		t.Skipf("the driver shares the host's network (Capabilities.Network is false): %s", r.Isolation())
	}
	needPrograms(t, r)
	needPython(t)
	host, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	sb := s.create(t, r, func(spec *sandbox.Spec) { spec.Network = sandbox.NetworkIsolated })
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	p, err := sb.Start(ctx(t), sandbox.ProcessSpec{
		Args: []string{"python3", "-c", `
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
    print("reached")
except OSError as e:
    print("unreachable", e)
`, fmt.Sprint(host.Addr().(*net.TCPAddr).Port)},
		Env: programEnv, Stdout: out, Stderr: out,
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	waitExit(t, p)
	b, _ := os.ReadFile(out.Name())
	if !strings.HasPrefix(string(b), "unreachable") {
		t.Errorf("connecting to the host's listener from an isolated sandbox: %q, want unreachable", b)
	}
}

// memoryLimit: a process's own memory limit holds and its OOM kill is
// reported.
func (s *suite) memoryLimit(t *testing.T) {
	r := s.newRuntime(t)
	if !r.Capabilities().Limits {
		t.Skipf("the driver does not enforce limits (Capabilities.Limits is false): %s", r.Isolation())
	}
	needPrograms(t, r)
	needPython(t)
	sb := s.create(t, r, func(spec *sandbox.Spec) { spec.MemoryMB = 512 })
	p, err := sb.Start(ctx(t), sandbox.ProcessSpec{
		Args:   []string{"python3", "-c", `x = bytearray(b"\x01") * (200 << 20)`},
		Env:    programEnv,
		Limits: sandbox.Limits{MemoryMB: 48, PIDs: 16, CPUShares: 512, CPUMillis: 1000},
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if st := waitExit(t, p); !st.OOMKilled || st.Signal != int(syscall.SIGKILL) {
		t.Errorf("allocating 200 MB under a 48 MB limit: %+v, want an OOM kill reported", st)
	}
}

// pidLimit: a process's own PID limit bounds what it can fork.
func (s *suite) pidLimit(t *testing.T) {
	r := s.newRuntime(t)
	if !r.Capabilities().Limits {
		t.Skipf("the driver does not enforce limits (Capabilities.Limits is false): %s", r.Isolation())
	}
	needPrograms(t, r)
	needPython(t)
	sb := s.create(t, r, nil)
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	p, err := sb.Start(ctx(t), sandbox.ProcessSpec{
		Args: []string{"python3", "-c", `
import os, time
forked = 0
for _ in range(30):
    try:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        forked += 1
    except OSError:
        pass
print(forked, flush=True)
`},
		Env: programEnv, Stdout: out, Stderr: out,
		Limits: sandbox.Limits{PIDs: 8},
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	waitExit(t, p)
	b, _ := os.ReadFile(out.Name())
	var forked int
	if _, err := fmt.Sscan(string(b), &forked); err != nil || forked < 1 || forked >= 8 {
		t.Errorf("forks under a limit of 8 PIDs: %q, want between 1 and 7", b)
	}
}
