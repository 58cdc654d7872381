package baseimage

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/runtimes"
)

// chrootPath is the only variable the chrooted programs get, unless a test
// adds the Runtime API ones.
const chrootPath = "PATH=/usr/local/bin:/usr/bin:/bin"

var scratch string // shared by the tests; removed by TestMain

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "baseimage-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	scratch = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type built struct {
	tar  string
	info Info
	took time.Duration
	err  error
}

var (
	buildsMu sync.Mutex
	builds   = map[Runtime]*built{}
)

// builtImage builds rt once per test run and shares the tar between tests; the
// test is skipped when the host lacks the interpreter.
func builtImage(t *testing.T, rt Runtime) (string, Info) {
	t.Helper()
	buildsMu.Lock()
	defer buildsMu.Unlock()
	b, ok := builds[rt]
	if !ok {
		b = &built{tar: filepath.Join(scratch, string(rt)+".tar")}
		b.took, b.info, b.err = buildFile(rt, b.tar)
		builds[rt] = b
		if b.err == nil {
			t.Logf("%s image: %s %s at %s, %d files, %.1f MB, built in %v, %s, omitted %v",
				rt, rt, b.info.Version, b.info.Interpreter, b.info.Files,
				float64(b.info.Bytes)/1e6, b.took.Round(time.Millisecond), b.info.Digest, b.info.Omitted)
		}
	}
	if errors.Is(b.err, ErrNoInterpreter) {
		t.Skipf("no %s on this host: %v", rt, b.err)
	}
	if b.err != nil {
		t.Fatalf("Build(%s): %v", rt, b.err)
	}
	return b.tar, b.info
}

func buildFile(rt Runtime, name string) (time.Duration, Info, error) {
	f, err := os.Create(name)
	if err != nil {
		return 0, Info{}, err
	}
	defer f.Close()
	start := time.Now()
	info, err := Build(context.Background(), rt, f)
	took := time.Since(start)
	if err != nil {
		return took, info, err
	}
	return took, info, f.Close()
}

// readTar checks the layer's invariants and returns its headers.
func readTar(t *testing.T, name string) []*tar.Header {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var hdrs []*tar.Header
	prev := ""
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		clean := strings.TrimSuffix(h.Name, "/")
		if clean <= prev {
			t.Errorf("%s comes after %s: paths not sorted", h.Name, prev)
		}
		prev = clean
		if strings.HasPrefix(h.Name, "/") || strings.Contains("/"+clean+"/", "/../") {
			t.Errorf("%s: not a clean relative path", h.Name)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: owner %d:%d (%q:%q), want 0:0", h.Name, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		if !h.ModTime.Equal(Epoch) {
			t.Errorf("%s: mtime %v, want %v", h.Name, h.ModTime, Epoch)
		}
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeDir, tar.TypeSymlink:
		default:
			t.Errorf("%s: entry type %q", h.Name, h.Typeflag)
		}
		if h.Mode&0o6000 != 0 {
			t.Errorf("%s: set-id mode %o", h.Name, h.Mode)
		}
		hdrs = append(hdrs, h)
	}
	return hdrs
}

// extract unpacks the layer into dir, modes and mtimes included (the pyc
// check depends on the latter).
func extract(t *testing.T, name, dir string) {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var dirs []*tar.Header
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			dirs = append(dirs, h)
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			out, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, os.FileMode(h.Mode).Perm())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(out, tr); err != nil {
				t.Fatal(err)
			}
			if err := out.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, h.ModTime, h.ModTime); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Directory modes last, so read-only ones did not block their contents.
	for _, h := range dirs {
		p := filepath.Join(dir, h.Name)
		mode := os.FileMode(h.Mode).Perm()
		if h.Mode&0o1000 != 0 {
			mode |= os.ModeSticky
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
}

// rootfs extracts rt's image into a fresh directory, for chroot tests.
func rootfs(t *testing.T, rt Runtime) (string, Info) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("chroot tests need root (run go test as root)")
	}
	name, info := builtImage(t, rt)
	dir := t.TempDir()
	extract(t, name, dir)
	if _, err := runtimes.Install(filepath.Join(dir, "opt", "baton")); err != nil {
		t.Fatal(err)
	}
	return dir, info
}

type result struct {
	stdout, stderr string
	code           int
}

// inChroot runs argv (argv[0] an absolute path inside root) chrooted into
// root with nothing in its environment but PATH and extra.
func inChroot(t *testing.T, root string, extra []string, argv ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// exec.Command resolved argv[0] on the host; the child execs it after
	// chroot, so it must be the path inside root.
	cmd.Path = argv[0]
	cmd.Dir = "/"
	cmd.Env = append([]string{chrootPath}, extra...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("run %v in chroot: %v", argv, err)
	}
	return result{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
}

// checkContents fails on anything of the host that has no business in an
// image.
func checkContents(t *testing.T, hdrs []*tar.Header) map[string]*tar.Header {
	t.Helper()
	byName := map[string]*tar.Header{}
	allowedTop := map[string]bool{"bin": true, "dev": true, "etc": true, "lib": true, "lib64": true,
		"opt": true, "proc": true, "sbin": true, "sys": true, "tmp": true, "usr": true, "var": true}
	allowedEtc := map[string]bool{"passwd": true, "group": true, "nsswitch.conf": true, "hosts": true,
		"resolv.conf": true, "protocols": true, "services": true, "ssl": true, "pki": true}
	for _, h := range hdrs {
		name := strings.TrimSuffix(h.Name, "/")
		byName[name] = h
		parts := strings.Split(name, "/")
		if !allowedTop[parts[0]] {
			t.Errorf("unexpected top-level entry %s", h.Name)
		}
		// Debian links the stdlib's sitecustomize.py to /etc/python3.X.
		if parts[0] == "etc" && len(parts) > 1 && !allowedEtc[parts[1]] && !strings.HasPrefix(parts[1], "python3") {
			t.Errorf("unexpected host file %s", h.Name)
		}
		for i, p := range parts {
			if (p == "test" || p == "tests") && h.Typeflag == tar.TypeDir {
				t.Errorf("test directory %s", h.Name)
			}
			if p == "site-packages" && i < len(parts)-1 {
				t.Errorf("site-packages content %s", h.Name)
			}
			if p == "idlelib" || p == "tkinter" || p == "ensurepip" || p == "turtledemo" ||
				(i == len(parts)-1 && strings.HasPrefix(p, "_test") && strings.HasSuffix(p, ".so")) {
				t.Errorf("unneeded stdlib part %s", h.Name)
			}
		}
	}
	for _, name := range []string{"etc/shadow", "etc/gshadow", "home", "root", "etc/ssl/private"} {
		if byName[name] != nil {
			t.Errorf("host path %s is in the image", name)
		}
	}
	for _, name := range []string{"tmp", "var/task", "opt/baton", "proc", "sys", "dev"} {
		if h := byName[name]; h == nil || h.Typeflag != tar.TypeDir {
			t.Errorf("mount point %s missing", name)
		}
	}
	if h := byName["tmp"]; h != nil && h.Mode != 0o1777 {
		t.Errorf("/tmp mode %o, want 1777", h.Mode)
	}
	return byName
}

// fakeAPI is a Runtime API that hands out one invocation and then answers
// 410, which Baton's clients treat as the end of the instance.
type fakeAPI struct {
	srv      *httptest.Server
	mu       sync.Mutex
	served   bool
	response string
	errors   []string
}

func newFakeAPI(t *testing.T, event string) *fakeAPI {
	a := &fakeAPI{}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		defer a.mu.Unlock()
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/2018-06-01/runtime/invocation/next":
			if a.served {
				http.Error(w, "gone", http.StatusGone)
				return
			}
			a.served = true
			w.Header().Set("Lambda-Runtime-Aws-Request-Id", "req-1")
			w.Header().Set("Lambda-Runtime-Deadline-Ms", fmt.Sprint(time.Now().Add(time.Minute).UnixMilli()))
			w.Header().Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:baton:000000000000:function:f")
			io.WriteString(w, event)
		case r.Method == http.MethodPost && r.URL.Path == "/2018-06-01/runtime/invocation/req-1/response":
			a.response = string(body)
			w.WriteHeader(http.StatusAccepted)
		case r.Method == http.MethodPost:
			a.errors = append(a.errors, r.URL.Path+": "+string(body))
			w.WriteHeader(http.StatusAccepted)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *fakeAPI) addr() string { return strings.TrimPrefix(a.srv.URL, "http://") }

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

var wantSum = func() string { s := sha256.Sum256([]byte("baton")); return hex.EncodeToString(s[:]) }()

func checkResponse(t *testing.T, a *fakeAPI, res result) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	var got struct {
		N   int    `json:"n"`
		Sum string `json:"sum"`
	}
	if err := json.Unmarshal([]byte(a.response), &got); err != nil || got.N != 42 || got.Sum != wantSum {
		t.Errorf("response %q (errors %q), want n 42 and sum %s; stderr:\n%s", a.response, a.errors, wantSum, res.stderr)
	}
	if res.code != 1 {
		t.Errorf("runtime exited %d after the API went away, want 1; stderr:\n%s", res.code, res.stderr)
	}
}

func TestPythonImage(t *testing.T) {
	name, info := builtImage(t, Python)
	byName := checkContents(t, readTar(t, name))
	if info.Runtime != Python || info.Version == "" || !path.IsAbs(info.Interpreter) {
		t.Errorf("info %+v", info)
	}
	if h := byName[strings.TrimPrefix(info.Interpreter, "/")]; h == nil || h.Typeflag != tar.TypeReg {
		t.Errorf("interpreter %s is not a regular file of the image", info.Interpreter)
	}
	if h := byName["usr/bin/python3"]; h == nil {
		t.Errorf("usr/bin/python3 missing")
	}
	// Only the provided image has a shell.
	for _, sh := range []string{"bin/sh", "usr/bin/sh"} {
		if byName[sh] != nil {
			t.Errorf("the python image has a shell at %s", sh)
		}
	}

	root, _ := rootfs(t, Python)
	py := "/usr/bin/python3"

	t.Run("imports", func(t *testing.T) {
		res := inChroot(t, root, nil, py, "-c",
			"import json, http.client, ssl, ctypes, hashlib, zlib, socket, selectors, traceback, urllib.request; print('ok')")
		if res.code != 0 || strings.TrimSpace(res.stdout) != "ok" {
			t.Fatalf("exit %d, stdout %q, stderr:\n%s", res.code, res.stdout, res.stderr)
		}
	})

	t.Run("resolution", func(t *testing.T) {
		res := inChroot(t, root, nil, py, "-c", `import ctypes, pwd, grp, socket, sys
print(pwd.getpwuid(1000).pw_name, grp.getgrgid(1000).gr_name, socket.getservbyname("https"),
      socket.getaddrinfo("localhost", "http", type=socket.SOCK_STREAM)[0][4][1],
      ctypes.CDLL(None).getpid() > 0, sys.prefix)`)
		fields := strings.Fields(res.stdout)
		if res.code != 0 || len(fields) != 6 || strings.Join(fields[:5], " ") != "baton baton 443 80 True" {
			t.Fatalf("exit %d, stdout %q, stderr:\n%s", res.code, res.stdout, res.stderr)
		}
		if fields[5] == "" || byName[strings.TrimPrefix(fields[5], "/")] == nil {
			t.Errorf("sys.prefix %q is not in the image", fields[5])
		}
	})

	t.Run("ca-certificates", func(t *testing.T) {
		// As many CAs as the host interpreter trusts by default, from the
		// paths its OpenSSL was built with.
		code := `import ssl; print(ssl.create_default_context().cert_store_stats()["x509_ca"])`
		cmd := exec.Command(runtimes.Python(), "-I", "-c", code)
		cmd.Env = []string{}
		host, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		res := inChroot(t, root, nil, py, "-c", code)
		if res.code != 0 || res.stdout != string(host) {
			t.Fatalf("image trusts %q CAs, host %q; stderr:\n%s", res.stdout, host, res.stderr)
		}
		t.Logf("trusted CAs: %s", strings.TrimSpace(res.stdout))
	})

	t.Run("bytecode-fresh", func(t *testing.T) {
		// -B: with nothing written, every import shows whether the image's
		// pycs are accepted as they are.
		res := inChroot(t, root, nil, py, "-B", "-v", "-c", "import json, http.client")
		if res.code != 0 {
			t.Fatalf("exit %d, stderr:\n%s", res.code, res.stderr)
		}
		if strings.Contains(res.stderr, "bytecode is stale") ||
			!strings.Contains(grepLines(res.stderr, "code object from"), "/json/__pycache__/__init__.") {
			t.Errorf("stdlib bytecode not used as is:\n%s", grepLines(res.stderr, "stale", "json"))
		}
	})

	t.Run("runtime-client", func(t *testing.T) {
		handler := `import hashlib, json, urllib.request

def handler(event, context):
    return {"n": event["n"] + 1, "sum": hashlib.sha256(b"baton").hexdigest()}
`
		if err := os.WriteFile(filepath.Join(root, "var", "task", "app.py"), []byte(handler), 0o644); err != nil {
			t.Fatal(err)
		}
		env := []string{"_HANDLER=app.handler", "LAMBDA_TASK_ROOT=/var/task"}
		script := "/opt/baton/" + runtimes.PythonFile

		api := newFakeAPI(t, `{"n": 41}`)
		res := inChroot(t, root, append(env, "AWS_LAMBDA_RUNTIME_API="+api.addr()), py, "-u", script)
		checkResponse(t, api, res)

		// Nothing listening: a one-line error, exit 1, no traceback.
		res = inChroot(t, root, append(env, "AWS_LAMBDA_RUNTIME_API="+deadAddr(t)), py, "-u", script)
		if res.code != 1 || !strings.Contains(res.stderr, "baton runtime:") ||
			!strings.Contains(res.stderr, "ConnectionRefusedError") || strings.Contains(res.stderr, "Traceback") {
			t.Errorf("exit %d, stderr:\n%s", res.code, res.stderr)
		}
	})
}

func TestNodeImage(t *testing.T) {
	name, info := builtImage(t, Node)
	byName := checkContents(t, readTar(t, name))
	if info.Runtime != Node || info.Version == "" || !path.IsAbs(info.Interpreter) {
		t.Errorf("info %+v", info)
	}
	if h := byName[strings.TrimPrefix(info.Interpreter, "/")]; h == nil || h.Typeflag != tar.TypeReg {
		t.Errorf("interpreter %s is not a regular file of the image", info.Interpreter)
	}

	root, _ := rootfs(t, Node)
	node := "/usr/bin/node"

	t.Run("modules", func(t *testing.T) {
		res := inChroot(t, root, nil, node, "-e", "require('http'); require('crypto'); console.log('ok')")
		if res.code != 0 || strings.TrimSpace(res.stdout) != "ok" {
			t.Fatalf("exit %d, stdout %q, stderr:\n%s", res.code, res.stdout, res.stderr)
		}
	})

	t.Run("resolution", func(t *testing.T) {
		res := inChroot(t, root, nil, node, "-e", `
const os = require('os'), dns = require('dns'), tls = require('tls');
dns.lookup('localhost', {family: 4}, (err, addr) => {
  if (err) throw err;
  console.log(os.userInfo().username, addr, tls.rootCertificates.length > 0);
});`)
		if res.code != 0 || strings.TrimSpace(res.stdout) != "root 127.0.0.1 true" {
			t.Fatalf("exit %d, stdout %q, stderr:\n%s", res.code, res.stdout, res.stderr)
		}
	})

	t.Run("runtime-client", func(t *testing.T) {
		handler := `const crypto = require('node:crypto');
exports.handler = async (event) => ({ n: event.n + 1, sum: crypto.createHash('sha256').update('baton').digest('hex') });
`
		if err := os.WriteFile(filepath.Join(root, "var", "task", "index.js"), []byte(handler), 0o644); err != nil {
			t.Fatal(err)
		}
		env := []string{"_HANDLER=index.handler", "LAMBDA_TASK_ROOT=/var/task"}
		script := "/opt/baton/" + runtimes.NodeFile

		api := newFakeAPI(t, `{"n": 41}`)
		res := inChroot(t, root, append(env, "AWS_LAMBDA_RUNTIME_API="+api.addr()), node, script)
		checkResponse(t, api, res)

		res = inChroot(t, root, append(env, "AWS_LAMBDA_RUNTIME_API="+deadAddr(t)), node, script)
		if res.code != 1 || !strings.Contains(res.stderr, "ECONNREFUSED") || strings.Contains(res.stderr, "fatal") {
			t.Errorf("exit %d, stdout %q, stderr:\n%s", res.code, res.stdout, res.stderr)
		}
	})
}

// TestProvidedImage runs a shell-script bootstrap's usual moves in the
// provided image: the shell, its tools, and a detached helper.
func TestProvidedImage(t *testing.T) {
	name, info := builtImage(t, Provided)
	byName := checkContents(t, readTar(t, name))
	if info.Runtime != Provided || info.Version == "" || !path.IsAbs(info.Interpreter) || len(info.Omitted) > 0 {
		t.Errorf("info %+v", info)
	}
	if h := byName[strings.TrimPrefix(info.Interpreter, "/")]; h == nil || h.Typeflag != tar.TypeReg {
		t.Errorf("shell %s is not a regular file of the image", info.Interpreter)
	}
	for p, h := range byName {
		if strings.Contains(p, "python") || strings.Contains(p, "node") {
			t.Errorf("provided image holds %s (%c)", p, h.Typeflag)
		}
	}

	root, _ := rootfs(t, Provided)
	// setsid -w waits for the command, so the output is ordered; cat is
	// not in the image, which holds no more than it says.
	res := inChroot(t, root, []string{"GREETING=hi"}, "/bin/sh", "-c",
		`sleep 0.01 && setsid -w sh -c 'echo "$GREETING"' && ! command -v cat && echo done`)
	if res.code != 0 || res.stdout != "hi\ndone\n" {
		t.Fatalf("exit %d, stdout %q, stderr:\n%s", res.code, res.stdout, res.stderr)
	}

	// A bootstrap linking glibc's maths library finds it.
	libm := false
	for p := range byName {
		if path.Base(p) == "libm.so.6" {
			libm = true
		}
	}
	if !libm {
		t.Errorf("libm.so.6 missing from the provided image")
	}
}

// TestDeterministic builds each image again and expects the same bytes.
func TestDeterministic(t *testing.T) {
	for _, rt := range []Runtime{Python, Node, Provided} {
		t.Run(string(rt), func(t *testing.T) {
			name, first := builtImage(t, rt)
			data, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(data)
			if want := "sha256:" + hex.EncodeToString(sum[:]); first.Digest != want || first.Bytes != int64(len(data)) {
				t.Errorf("Info says %s, %d bytes; the tar is %s, %d bytes", first.Digest, first.Bytes, want, len(data))
			}
			h := sha256.New()
			start := time.Now()
			second, err := Build(context.Background(), rt, h)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("rebuilt in %v", time.Since(start).Round(time.Millisecond))
			if second.Digest != first.Digest || "sha256:"+hex.EncodeToString(h.Sum(nil)) != first.Digest {
				t.Errorf("second build %s, first %s", second.Digest, first.Digest)
			}
		})
	}
}

func TestBuildCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Build(ctx, Python, io.Discard)
	if errors.Is(err, ErrNoInterpreter) {
		t.Skip(err)
	}
	if err == nil {
		t.Fatal("Build with a cancelled context succeeded")
	}
}

func TestUnknownRuntime(t *testing.T) {
	if _, err := Build(context.Background(), "cobol", io.Discard); err == nil {
		t.Fatal("Build(cobol) succeeded")
	}
}

func grepLines(s string, words ...string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.Contains(line, w) {
				out = append(out, line)
				break
			}
		}
	}
	if len(out) > 20 {
		out = out[:20]
	}
	return strings.Join(out, "\n")
}

// TestPythonInterpreters builds an image from every distinct python3 on
// PATH (a pyenv one relocated to /usr/local, a distribution one kept in
// place, ...) and runs the import check in each.
func TestPythonInterpreters(t *testing.T) {
	orig := os.Getenv("PATH")
	seen := map[string]bool{}
	for _, dir := range filepath.SplitList(orig) {
		if !filepath.IsAbs(dir) {
			continue
		}
		cand := filepath.Join(dir, "python3")
		if fi, err := os.Stat(cand); err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			continue
		}
		// The same lookup Build does, with dir first on PATH.
		t.Setenv("PATH", dir+string(filepath.ListSeparator)+orig)
		real, err := filepath.EvalSymlinks(runtimes.Python())
		if err != nil || seen[real] {
			continue
		}
		seen[real] = true
		t.Run(strings.ReplaceAll(strings.Trim(real, "/"), "/", "_"), func(t *testing.T) {
			name := filepath.Join(t.TempDir(), "image.tar")
			took, info, err := buildFile(Python, name)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("python %s at %s: %d files, %.1f MB, built in %v, omitted %v",
				info.Version, info.Interpreter, info.Files, float64(info.Bytes)/1e6, took.Round(time.Millisecond), info.Omitted)
			checkContents(t, readTar(t, name))
			if os.Geteuid() != 0 {
				t.Skip("chroot checks need root")
			}
			root := t.TempDir()
			extract(t, name, root)
			res := inChroot(t, root, nil, "/usr/bin/python3", "-B", "-v", "-c",
				"import json, http.client, ssl, ctypes, hashlib, zlib, socket, selectors, traceback, urllib.request; print('ok')")
			if res.code != 0 || strings.TrimSpace(res.stdout) != "ok" {
				t.Fatalf("exit %d, stdout %q, stderr:\n%s", res.code, res.stdout, grepLines(res.stderr, "Error", "rror:", "stale"))
			}
			if strings.Contains(res.stderr, "bytecode is stale") {
				t.Errorf("stale bytecode:\n%s", grepLines(res.stderr, "stale"))
			}
		})
	}
	if len(seen) == 0 {
		t.Skip("no python3 on PATH")
	}
}
