// Package harness runs a real `baton server` process for end-to-end
// tests and benchmarks: it builds the binary once, starts it on a free port
// with its own data directory, and stops it with SIGTERM.
package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-faas/baton/client"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// moduleRoot finds the repository root from this source file.
func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Binary builds cmd/baton (and cmd/baton-reaper next to it) once per test
// process and returns the path of baton.
func Binary(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "baton-bin-")
		if buildErr != nil {
			return
		}
		// baton-reaper goes next to baton, where the server finds it.
		cmd := exec.Command("go", "build", "-o", buildDir+string(filepath.Separator), "./cmd/baton", "./cmd/baton-reaper")
		cmd.Dir = moduleRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build baton: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "baton")
}

// RemoveBinary deletes the built binary; call it from TestMain after
// m.Run so test runs do not leave binaries behind.
func RemoveBinary() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// BuildGo builds a Go program (a package path relative to the repository
// root, e.g. ./examples/hello-go) as an executable named bootstrap in a new
// temporary directory and returns that directory.
func BuildGo(tb testing.TB, pkg string) string {
	tb.Helper()
	dir := tb.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "bootstrap"), pkg)
	cmd.Dir = moduleRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return dir
}

// Server is a running baton server.
type Server struct {
	URL     string
	DataDir string
	Client  *client.Client
	// Token is the server's API token (from its data directory).
	Token   string
	cmd     *exec.Cmd
	log     *os.File
	logPath string
	done    chan struct{}
	waitErr error
}

// Options for Start.
type Options struct {
	// DataDir to reuse (restart tests); empty means a fresh temp dir.
	DataDir string
	// Args are extra server flags.
	Args []string
	// DefaultSandbox leaves out the --sandbox flag that BATON_TEST_SANDBOX
	// asks for, so that the server picks its default.
	DefaultSandbox bool
}

// Start runs a server and waits until /healthz answers. It is stopped at
// the end of the test unless stopped before.
func Start(tb testing.TB, o Options) *Server {
	tb.Helper()
	if o.DataDir == "" {
		o.DataDir = tb.TempDir()
	}
	addr := freeAddr(tb)
	logPath := filepath.Join(tb.TempDir(), "server.log")
	logf, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	args := []string{"server", "--listen", addr, "--data-dir", o.DataDir}
	// BATON_TEST_SANDBOX runs the suites against another sandbox runtime
	// than the server's default, auto (e.g. "process"), without changing
	// the tests.
	if sb := os.Getenv("BATON_TEST_SANDBOX"); sb != "" && !o.DefaultSandbox {
		args = append(args, "--sandbox", sb)
	}
	args = append(args, o.Args...)
	cmd := exec.Command(Binary(tb), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	s := &Server{URL: "http://" + addr, DataDir: o.DataDir, cmd: cmd, log: logf, logPath: logPath, done: make(chan struct{})}
	go func() { s.waitErr = cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-s.done:
			tb.Fatalf("baton server exited during start: %v\n%s", s.waitErr, s.Logs())
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			tb.Fatalf("baton server did not become healthy\n%s", s.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The server writes its token before it listens; a server started
	// with --no-auth or --token-file elsewhere has none here.
	if tok, err := os.ReadFile(filepath.Join(o.DataDir, "api-token")); err == nil {
		s.Token = strings.TrimSpace(string(tok))
	}
	s.Client, err = client.New(s.URL, &http.Client{Timeout: 5 * time.Minute}, client.WithToken(s.Token))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Stop(); err != nil {
			tb.Errorf("stop server: %v", err)
		}
		if left := MountsUnder(s.DataDir); len(left) > 0 {
			tb.Errorf("mounts left under the data directory after the server exited: %v", left)
		}
		if tb.Failed() {
			tb.Logf("server log:\n%s", s.Logs())
		}
	})
	return s
}

// AuthHeader is the header that carries the API token, for raw requests.
func (s *Server) AuthHeader() map[string]string {
	return map[string]string{"Authorization": "Bearer " + s.Token}
}

// Pid is the server's process id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Logs returns the server's output so far.
func (s *Server) Logs() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// Stop sends SIGTERM and waits for the server to exit (killing it after
// 60 s). Stopping twice is fine.
func (s *Server) Stop() error {
	select {
	case <-s.done:
		return nil
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(60 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		return errors.New("server did not exit within 60s of SIGTERM")
	}
	s.log.Close()
	var exitErr *exec.ExitError
	if s.waitErr != nil && !errors.As(s.waitErr, &exitErr) {
		return s.waitErr
	}
	if s.waitErr != nil {
		return fmt.Errorf("server exited with %v", s.waitErr)
	}
	return nil
}

// Kill ends the server with SIGKILL (a crash) and waits for it.
func (s *Server) Kill() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.log.Close()
}

// Descendants lists the pids of processes whose parent chain leads to pid,
// read from /proc; tests use it to prove nothing is left behind.
func Descendants(pid int) []int {
	parents := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var p int
		if _, err := fmt.Sscanf(e.Name(), "%d", &p); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// The command name may hold spaces: fields start after the last ')'.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		var state string
		var ppid int
		if _, err := fmt.Sscanf(string(stat[i+2:]), "%s %d", &state, &ppid); err != nil {
			continue
		}
		parents[ppid] = append(parents[ppid], p)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range parents[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// MountsUnder lists the mount points at or below dir (from
// /proc/self/mountinfo): a stopped server must leave none of its sandbox
// roots or image layers mounted.
func MountsUnder(dir string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		// Field 5 is the mount point, with spaces escaped as \040.
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		if mp := f[4]; mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	return out
}

func freeAddr(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Context returns a context bounded by the test's deadline, if any.
func Context(tb testing.TB) context.Context {
	ctx := context.Background()
	if t, ok := tb.(interface{ Deadline() (time.Time, bool) }); ok {
		if d, ok := t.Deadline(); ok {
			c, cancel := context.WithDeadline(ctx, d.Add(-5*time.Second))
			tb.Cleanup(cancel)
			return c
		}
	}
	return ctx
}

// FreeAddr returns a loopback address with a port that was free a moment
// ago.
func FreeAddr(tb testing.TB) string { return freeAddr(tb) }

// Proc is a baton process other than a server (a cluster role), its
// output in a log file.
type Proc struct {
	Name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
}

// StartProc runs the baton binary with args; it is killed at the end of
// the test unless it ended before.
func StartProc(tb testing.TB, name string, args ...string) *Proc {
	tb.Helper()
	return startProc(tb, name, exec.Command(Binary(tb), args...))
}

// startProc runs cmd as a Proc: StartProc's baton, or one wrapped in a
// command that execs it (Host.Start's ip netns exec).
func startProc(tb testing.TB, name string, cmd *exec.Cmd) *Proc {
	tb.Helper()
	logPath := filepath.Join(tb.TempDir(), name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		tb.Fatal(err)
	}
	p := &Proc{Name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() { p.waitErr = cmd.Wait(); logf.Close(); close(p.done) }()
	tb.Cleanup(func() {
		p.Kill()
		if tb.Failed() {
			tb.Logf("%s log:\n%s", name, p.Logs())
		}
	})
	return p
}

// Pid is the process's id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Kill sends SIGKILL and waits for the process to end.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Exited reports whether the process ended, and how.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// Logs returns what the process printed.
func (p *Proc) Logs() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}
