package grain

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/runtimes"
	"github.com/baton-faas/baton/internal/runtimes/python"
	"github.com/baton-faas/baton/internal/workerapi"
)

const waitTimeout = time.Minute

// ---------------------------------------------------------------------------
// A minimal Runtime API for one child: hands out queued events and records
// posts.

type post struct {
	Kind string // "response", "error" or "init/error"
	ID   string
	Body []byte
}

type fakeAPI struct {
	srv       *httptest.Server
	queue     chan []byte
	nextCalls chan time.Time
	posts     chan post
	stop      chan struct{}
	seq       int
	mu        sync.Mutex
}

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{
		queue:     make(chan []byte, 16),
		nextCalls: make(chan time.Time, 16),
		posts:     make(chan post, 16),
		stop:      make(chan struct{}),
	}
	const prefix = "/2018-06-01/runtime"
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+prefix+"/invocation/next", func(w http.ResponseWriter, r *http.Request) {
		f.nextCalls <- time.Now()
		select {
		case ev := <-f.queue:
			f.mu.Lock()
			f.seq++
			id := fmt.Sprintf("req-%d", f.seq)
			f.mu.Unlock()
			w.Header().Set("Lambda-Runtime-Aws-Request-Id", id)
			w.Header().Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(time.Minute).UnixMilli(), 10))
			w.Header().Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:local:0:function:fn")
			w.Header().Set("Lambda-Runtime-Trace-Id", "Root=1-test")
			w.Write(ev)
		case <-f.stop:
			http.Error(w, "stopping", http.StatusServiceUnavailable)
		case <-r.Context().Done():
		}
	})
	record := func(kind string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			f.posts <- post{Kind: kind, ID: r.PathValue("id"), Body: body}
			w.WriteHeader(http.StatusAccepted)
		}
	}
	mux.HandleFunc("POST "+prefix+"/invocation/{id}/response", record("response"))
	mux.HandleFunc("POST "+prefix+"/invocation/{id}/error", record("error"))
	mux.HandleFunc("POST "+prefix+"/init/error", record("init/error"))
	f.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		close(f.stop)
		f.srv.CloseClientConnections()
		f.srv.Close()
	})
	return f
}

func (f *fakeAPI) addr() string { return strings.TrimPrefix(f.srv.URL, "http://") }

func (f *fakeAPI) waitNext(t *testing.T) time.Time {
	t.Helper()
	select {
	case at := <-f.nextCalls:
		return at
	case <-time.After(waitTimeout):
		t.Fatal("child never asked for an invocation")
	}
	return time.Time{}
}

func (f *fakeAPI) waitPost(t *testing.T) post {
	t.Helper()
	select {
	case p := <-f.posts:
		return p
	case <-time.After(waitTimeout):
		t.Fatal("child never posted a result")
	}
	return post{}
}

// ---------------------------------------------------------------------------
// Zygote and children.

type testZygote struct {
	*Zygote
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

func startZygote(t *testing.T, handlerDir string, env ...string) *testZygote {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not found in PATH; skipping zygote test")
	}
	paths, err := runtimes.Install(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs(filepath.Join("testdata", handlerDir))
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs, err := SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("python3", "-u", paths.Client(python.Name), "zygote")
	cmd.Dir = root
	cmd.Env = append(os.Environ(),
		"_HANDLER=app.handler",
		"LAMBDA_TASK_ROOT="+root,
		"AWS_LAMBDA_FUNCTION_NAME=fn",
		"AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128",
		// Keep testdata free of __pycache__ directories.
		"PYTHONDONTWRITEBYTECODE=1",
	)
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stdout = testWriter{t}
	cmd.Stderr = testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start zygote: %v", err)
	}
	theirs.Close()
	tz := &testZygote{
		Zygote: New(ours, slog.New(slog.NewTextHandler(testWriter{t}, nil))),
		cmd:    cmd,
		exited: make(chan struct{}),
	}
	go func() {
		tz.err = cmd.Wait()
		close(tz.exited)
	}()
	t.Cleanup(func() {
		tz.Close()
		select {
		case <-tz.exited:
		case <-time.After(waitTimeout):
			cmd.Process.Kill()
			<-tz.exited
			t.Error("zygote did not exit after its control socket was closed")
		}
	})
	return tz
}

// testWriter sends process output to the test log. Output after the test
// ended is dropped: t.Log would panic.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	defer func() { recover() }()
	w.t.Logf("%s", strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

type testChild struct {
	*Child
	api    *fakeAPI
	stdout chan string
}

// spawn starts a child with its own Runtime API and stdout pipe.
func spawn(t *testing.T, z *testZygote) *testChild {
	t.Helper()
	tc, err := trySpawn(t, z)
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

func trySpawn(t *testing.T, z *testZygote) (*testChild, error) {
	api := newFakeAPI(t)
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := z.Spawn(ctx, map[string]string{
		"AWS_LAMBDA_RUNTIME_API":     api.addr(),
		"AWS_LAMBDA_LOG_STREAM_NAME": "stream",
	}, outW, errW)
	// The child holds its own copies now.
	outW.Close()
	errW.Close()
	if err == nil {
		if err = c.Release(); err != nil {
			c.Kill(syscall.SIGKILL)
		}
	}
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, err
	}
	tc := &testChild{Child: c, api: api, stdout: make(chan string, 64)}
	go func() {
		defer outR.Close()
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			tc.stdout <- sc.Text()
		}
	}()
	go func() {
		defer errR.Close()
		io.Copy(testWriter{t}, errR)
	}()
	return tc, nil
}

func ready(t *testing.T, z *testZygote) ReadyInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	info, err := z.Ready(ctx)
	if err != nil {
		t.Fatalf("ready: %v", err)
	}
	return info
}

func waitDone(t *testing.T, c *Child) ExitStatus {
	t.Helper()
	select {
	case <-c.Done():
		return c.Exit()
	case <-time.After(waitTimeout):
		t.Fatalf("child %d did not end", c.Pid())
	}
	return ExitStatus{}
}

// alive tells whether pid is a live (not zombie) process.
func alive(pid int) bool {
	if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

// ---------------------------------------------------------------------------

func TestSpawnAndInvoke(t *testing.T) {
	z := startZygote(t, "ok")
	info := ready(t, z)
	if info.InitError != nil {
		t.Fatalf("unexpected init error: %v", info.InitError)
	}
	if info.Pid != z.cmd.Process.Pid {
		t.Errorf("ready pid %d, zygote pid %d", info.Pid, z.cmd.Process.Pid)
	}

	children := make([]*testChild, 3)
	for i := range children {
		children[i] = spawn(t, z)
	}
	for i, c := range children {
		name := fmt.Sprintf("child-%d", i)
		c.api.queue <- []byte(fmt.Sprintf(`{"name":%q}`, name))
		p := c.api.waitPost(t)
		if p.Kind != "response" {
			t.Fatalf("%s: got %s %s", name, p.Kind, p.Body)
		}
		var res struct {
			Name      string `json:"name"`
			Pid       int    `json:"pid"`
			RequestID string `json:"requestId"`
		}
		if err := json.Unmarshal(p.Body, &res); err != nil {
			t.Fatalf("%s: %q: %v", name, p.Body, err)
		}
		if res.Name != name || res.Pid != c.Pid() || res.RequestID != p.ID {
			t.Errorf("%s (pid %d): response %+v for %s", name, c.Pid(), res, p.ID)
		}
		select {
		case line := <-c.stdout:
			if line != "hello from "+name {
				t.Errorf("%s stdout %q", name, line)
			}
		case <-time.After(waitTimeout):
			t.Fatalf("%s: nothing on its stdout pipe", name)
		}
		checkChildFds(t, z, c.Child)
		checkPgrp(t, z, c.Child)
	}
}

// checkChildFds makes sure the child holds no zygote descriptor: beyond
// stdin (/dev/null), stdout and stderr there may only be its HTTP socket.
func checkChildFds(t *testing.T, z *testZygote, c *Child) {
	t.Helper()
	ctrl, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/3", z.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("zygote control socket: %v", err)
	}
	dir := fmt.Sprintf("/proc/%d/fd", c.Pid())
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("list child fds: %v", err)
	}
	for _, e := range entries {
		fd, _ := strconv.Atoi(e.Name())
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		switch {
		case fd == 0:
			if target != os.DevNull {
				t.Errorf("child stdin is %q, want %s", target, os.DevNull)
			}
		case fd <= 2:
		case target == ctrl:
			t.Errorf("child fd %d is the zygote's control socket", fd)
		case !strings.HasPrefix(target, "socket:"):
			t.Errorf("child leaked fd %d -> %s", fd, target)
		}
	}
	if len(entries) > 4 {
		t.Errorf("child has %d fds, want at most 0-2 and its HTTP socket", len(entries))
	}
}

// checkPgrp: every instance leads its own process group (so killing it
// kills what it started), distinct from the zygote's.
func checkPgrp(t *testing.T, z *testZygote, c *Child) {
	t.Helper()
	zp, err1 := unix.Getpgid(z.cmd.Process.Pid)
	cp, err2 := unix.Getpgid(c.Pid())
	if err1 != nil || err2 != nil {
		t.Fatalf("getpgid: %v %v", err1, err2)
	}
	if cp != c.Pid() || cp == zp {
		t.Errorf("child %d in process group %d (zygote's is %d), want its own group", c.Pid(), cp, zp)
	}
}

func TestKillChild(t *testing.T) {
	z := startZygote(t, "ok")
	ready(t, z)
	c := spawn(t, z)
	c.api.waitNext(t) // parked in its long poll
	if err := c.Kill(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st := waitDone(t, c.Child)
	if st.Signal != int(syscall.SIGKILL) || st.Code != -1 || st.ZygoteLost {
		t.Errorf("exit status %+v, want signal 9", st)
	}
	if err := c.Kill(syscall.SIGKILL); !errors.Is(err, ErrChildExited) {
		t.Errorf("second kill: %v, want ErrChildExited", err)
	}
	// Other children are unaffected and the zygote still serves.
	other := spawn(t, z)
	other.api.waitNext(t)
	if err := other.Kill(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if st := waitDone(t, other.Child); st.Signal != int(syscall.SIGTERM) {
		t.Errorf("exit status %+v, want signal 15", st)
	}
}

func TestImportError(t *testing.T) {
	z := startZygote(t, "broken")
	info := ready(t, z)
	if info.InitError == nil {
		t.Fatal("no init error for a handler that cannot be imported")
	}
	if info.InitError.Type != "Runtime.ImportModuleError" ||
		!strings.Contains(info.InitError.Message, "baton_grain_test_module_that_does_not_exist") {
		t.Errorf("init error %+v", info.InitError)
	}
	c := spawn(t, z)
	p := c.api.waitPost(t)
	if p.Kind != "init/error" {
		t.Fatalf("child posted %s: %s", p.Kind, p.Body)
	}
	var fe workerapi.FunctionError
	if err := json.Unmarshal(p.Body, &fe); err != nil {
		t.Fatal(err)
	}
	if fe.Type != info.InitError.Type || fe.Message != info.InitError.Message {
		t.Errorf("child posted %+v, zygote reported %+v", fe, info.InitError)
	}
	if st := waitDone(t, c.Child); st.Code != 1 || st.Signal != 0 {
		t.Errorf("child exit %+v, want code 1", st)
	}
}

func TestCloseKillsChildren(t *testing.T) {
	z := startZygote(t, "ok")
	ready(t, z)
	var pids []int
	var children []*testChild
	for range 3 {
		c := spawn(t, z)
		c.api.waitNext(t)
		children = append(children, c)
		pids = append(pids, c.Pid())
	}
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-z.Done():
	default:
		t.Error("Done not closed after Close")
	}
	for _, c := range children {
		waitDone(t, c.Child)
	}
	if _, err := z.Spawn(context.Background(), nil, os.Stdout, os.Stderr); !errors.Is(err, ErrZygoteLost) {
		t.Errorf("spawn after close: %v, want ErrZygoteLost", err)
	}
	select {
	case <-z.exited:
		if z.err != nil {
			t.Errorf("zygote exit: %v, want status 0", z.err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("zygote did not exit after Close")
	}
	// The zygote killed and reaped its children before exiting.
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("child %d still alive after the zygote closed", pid)
		}
	}
}

func TestZygoteDeathKillsChildren(t *testing.T) {
	z := startZygote(t, "ok")
	ready(t, z)
	c := spawn(t, z)
	c.api.waitNext(t)
	if err := z.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-z.Done():
	case <-time.After(waitTimeout):
		t.Fatal("Done not closed after the zygote died")
	}
	if st := waitDone(t, c.Child); !st.ZygoteLost {
		t.Errorf("child exit %+v, want ZygoteLost", st)
	}
	if !errors.Is(z.Err(), ErrZygoteLost) {
		t.Errorf("Err() = %v", z.Err())
	}
	// The parent-death signal ends the orphan.
	deadline := time.Now().Add(waitTimeout)
	for alive(c.Pid()) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if alive(c.Pid()) {
		t.Errorf("child %d survived its zygote", c.Pid())
	}
}

func TestConcurrentSpawn(t *testing.T) {
	z := startZygote(t, "ok")
	ready(t, z)
	const n = 12
	var wg sync.WaitGroup
	children := make([]*testChild, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { children[i], errs[i] = trySpawn(t, z) })
	}
	wg.Wait()
	pids := map[int]bool{}
	for i, c := range children {
		if errs[i] != nil {
			t.Fatalf("spawn %d: %v", i, errs[i])
		}
		if pids[c.Pid()] {
			t.Errorf("pid %d handed out twice", c.Pid())
		}
		pids[c.Pid()] = true
	}
	// Each reply reached the right caller: every child serves the API
	// that was passed in its own spawn request.
	for i, c := range children {
		c.api.queue <- []byte(fmt.Sprintf(`{"name":"c%d"}`, i))
		p := c.api.waitPost(t)
		var res struct{ Pid int }
		json.Unmarshal(p.Body, &res)
		if res.Pid != c.Pid() {
			t.Errorf("spawn %d: Child.Pid %d but pid %d answered", i, c.Pid(), res.Pid)
		}
	}
}

func TestSpawnCancelledContext(t *testing.T) {
	z := startZygote(t, "ok")
	ready(t, z)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := z.Spawn(ctx, nil, os.Stdout, os.Stderr); !errors.Is(err, context.Canceled) {
		t.Fatalf("spawn with cancelled context: %v", err)
	}
	// The zygote stays usable.
	c := spawn(t, z)
	c.api.waitNext(t)
}

// A child is held, running neither the runtime client nor the function's
// at-fork handlers, until it is released; one never released exits.
func TestChildHeldUntilReleased(t *testing.T) {
	marks := t.TempDir()
	z := startZygote(t, "atfork", "GRAIN_TEST_MARKS="+marks)
	ready(t, z)
	api := newFakeAPI(t)
	held := func() *Child {
		c, err := z.Spawn(context.Background(), map[string]string{"AWS_LAMBDA_RUNTIME_API": api.addr()}, os.Stdout, os.Stderr)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := held()
	time.Sleep(300 * time.Millisecond)
	select {
	case <-api.nextCalls:
		t.Fatal("a held child asked for work")
	default:
	}
	mark := filepath.Join(marks, strconv.Itoa(c.Pid()))
	if _, err := os.Stat(mark); err == nil {
		t.Fatal("the function's at-fork handler ran in a held child")
	}
	if err := c.Release(); err != nil {
		t.Fatal(err)
	}
	api.waitNext(t)
	if _, err := os.Stat(mark); err != nil {
		t.Fatalf("the function's at-fork handler did not run after the release: %v", err)
	}
	if err := c.Release(); err == nil {
		t.Error("a second Release succeeded")
	}
	c.Kill(syscall.SIGKILL)
	waitDone(t, c)

	// Given up: its hold is dropped and it exits by itself.
	c = held()
	c.dropHold()
	if st := waitDone(t, c); st.Code != 1 {
		t.Errorf("a child given up exited with %+v, want code 1", st)
	}
}

// TestSpawnLatency reports the time from Spawn to the child's first /next.
func TestSpawnLatency(t *testing.T) {
	z := startZygote(t, "ok")
	ready(t, z)
	var samples []time.Duration
	for range 20 {
		api := newFakeAPI(t)
		outR, outW, _ := os.Pipe()
		start := time.Now()
		c, err := z.Spawn(context.Background(), map[string]string{"AWS_LAMBDA_RUNTIME_API": api.addr()}, outW, outW)
		outW.Close()
		if err == nil {
			err = c.Release()
		}
		if err != nil {
			t.Fatal(err)
		}
		samples = append(samples, api.waitNext(t).Sub(start))
		c.Kill(syscall.SIGKILL)
		waitDone(t, c)
		outR.Close()
	}
	slices.Sort(samples)
	t.Logf("Spawn -> first /next: median %v, min %v, max %v", samples[len(samples)/2], samples[0], samples[len(samples)-1])
}

// ---------------------------------------------------------------------------
// Protocol tests against a scripted zygote played by the test itself; they
// need no python3 and pin down the Go side's edge cases.

type fakeZygote struct {
	t  *testing.T
	fd int
}

func newFakeZygotePair(t *testing.T) (*Zygote, *fakeZygote) {
	t.Helper()
	ours, theirs, err := SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Dup(int(theirs.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	f := &fakeZygote{t: t, fd: fd}
	t.Cleanup(func() { unix.Close(fd) })
	return New(ours, nil), f
}

func (f *fakeZygote) send(msg string) {
	f.t.Helper()
	if err := unix.Sendmsg(f.fd, []byte(msg), nil, nil, 0); err != nil {
		f.t.Fatalf("fake zygote send: %v", err)
	}
}

// recv reads one packet and closes any descriptors that came with it,
// returning how many there were.
func (f *fakeZygote) recv() (map[string]any, int) {
	f.t.Helper()
	buf := make([]byte, 1<<16)
	oob := make([]byte, unix.CmsgSpace(8*4))
	n, oobn, _, _, err := unix.Recvmsg(f.fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		f.t.Fatalf("fake zygote recv: %v", err)
	}
	nfds := 0
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			f.t.Fatal(err)
		}
		for i := range msgs {
			fds, err := unix.ParseUnixRights(&msgs[i])
			if err != nil {
				f.t.Fatal(err)
			}
			for _, fd := range fds {
				unix.Close(fd)
			}
			nfds += len(fds)
		}
	}
	var m map[string]any
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		f.t.Fatalf("fake zygote got %q: %v", buf[:n], err)
	}
	return m, nfds
}

func TestProtocolScripted(t *testing.T) {
	before := runtime.NumGoroutine()
	z, f := newFakeZygotePair(t)

	f.send(`{"op":"ready","pid":1,"initError":{"errorMessage":"m","errorType":"T","stackTrace":["a"]}}`)
	info := ready(t, &testZygote{Zygote: z})
	if info.Pid != 1 || info.InitError == nil || info.InitError.Type != "T" || info.InitError.StackTrace[0] != "a" {
		t.Fatalf("ready info %+v", info)
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	type result struct {
		c   *Child
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := z.Spawn(context.Background(), map[string]string{"K": "V"}, w, w)
		res <- result{c, err}
	}()
	m, nfds := f.recv()
	if m["op"] != "spawn" || nfds != 3 || fmt.Sprint(m["env"]) != "map[K:V]" {
		t.Fatalf("spawn request %v with %d fds", m, nfds)
	}
	f.send(fmt.Sprintf(`{"op":"spawned","id":%v,"pid":42}`, m["id"]))
	got := <-res
	if got.err != nil || got.c.Pid() != 42 {
		t.Fatalf("spawn: %v %v", got.c, got.err)
	}
	c := got.c

	if err := c.Kill(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if m, _ := f.recv(); m["op"] != "kill" || m["pid"] != 42.0 || m["signal"] != 15.0 || m["id"] == nil {
		t.Fatalf("kill request %v", m)
	}
	f.send(`{"op":"exit","pid":42,"status":3,"signal":0}`)
	if st := waitDone(t, c); st != (ExitStatus{Code: 3}) {
		t.Errorf("exit %+v", st)
	}

	// A spawn error reaches its caller.
	go func() {
		c, err := z.Spawn(context.Background(), nil, w, w)
		res <- result{c, err}
	}()
	m, _ = f.recv()
	f.send(fmt.Sprintf(`{"op":"spawnError","id":%v,"error":"fork: no memory"}`, m["id"]))
	if got := <-res; got.err == nil || !strings.Contains(got.err.Error(), "fork: no memory") {
		t.Errorf("spawn error: %v", got.err)
	}

	// A caller that gives up does not leak the child it asked for.
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		c, err := z.Spawn(ctx, nil, w, w)
		res <- result{c, err}
	}()
	m, _ = f.recv()
	cancel()
	if got := <-res; !errors.Is(got.err, context.Canceled) {
		t.Fatalf("cancelled spawn: %v", got.err)
	}
	f.send(fmt.Sprintf(`{"op":"spawned","id":%v,"pid":43}`, m["id"]))
	if m, _ := f.recv(); m["op"] != "kill" || m["pid"] != 43.0 || m["signal"] != 9.0 {
		t.Fatalf("abandoned child not killed: %v", m)
	}

	// A live child is released when the zygote goes away.
	go func() {
		c, err := z.Spawn(context.Background(), nil, w, w)
		res <- result{c, err}
	}()
	m, _ = f.recv()
	f.send(fmt.Sprintf(`{"op":"spawned","id":%v,"pid":44}`, m["id"]))
	live := (<-res).c
	unix.Shutdown(f.fd, unix.SHUT_RDWR)
	select {
	case <-z.Done():
	case <-time.After(waitTimeout):
		t.Fatal("Done not closed at end of stream")
	}
	if st := waitDone(t, live); !st.ZygoteLost {
		t.Errorf("exit %+v, want ZygoteLost", st)
	}
	if err := z.Close(); err != nil {
		t.Errorf("close: %v", err)
	}

	// Nothing of the Zygote keeps running.
	deadline := time.Now().Add(waitTimeout)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after Close, %d before", n, before)
	}
}
