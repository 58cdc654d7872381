//go:build linux

package benchmarks

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/image"
	"github.com/baton-faas/baton/internal/image/baseimage"
	"github.com/baton-faas/baton/internal/node/grain"
	"github.com/baton-faas/baton/internal/node/runtimeapi"
	"github.com/baton-faas/baton/internal/runtimes"
	"github.com/baton-faas/baton/internal/sandbox"
	"github.com/baton-faas/baton/internal/sandbox/container"
	"github.com/baton-faas/baton/internal/sandbox/container/reaperbuild"
	"github.com/baton-faas/baton/test/harness"
)

// Benchmarks of issue 4: container sandboxes on layered EROFS images.
// They need root and a host that can run container sandboxes (the same
// check `baton server --sandbox container` makes); elsewhere they skip.
//
//	BenchmarkSandbox/Create    container.Runtime.Create + Destroy with the
//	                           Python base image, a whole run of
//	                           `python3 -c pass` in a new sandbox, against
//	                           Debian's `runc run` of the same image and a
//	                           plain chroot start (the floor)
//	BenchmarkSandbox/Instance  a new Python instance in a running sandbox:
//	                           fork of a warm zygote vs exec of a new
//	                           interpreter vs a new zygote + first fork
//	BenchmarkSandbox/PSS       memory (PSS, from smaps_rollup on the host) of
//	                           one more forked instance vs one more
//	                           separate interpreter running the same handler
//	BenchmarkSandboxColdStart  end to end through `baton server --sandbox
//	                           container`: Python and Node cold starts in a
//	                           new sandbox and in an existing one, against
//	                           a process-sandbox server in the same run
//	BenchmarkBurst80           80 apps (80 sandboxes) from one image, each
//	                           invoked once at the same time with the page
//	                           cache dropped: time until all answered and
//	                           bytes read from disk, against 80 `runc run`
//	                           of 80 private copies of the image's files

const (
	// sandboxRuns is the number of samples per variant of
	// BenchmarkSandbox/Create and BenchmarkSandboxColdStart.
	sandboxRuns = 20
	// sandboxStarts is the number of instance starts per variant of
	// BenchmarkSandbox/Instance.
	sandboxStarts = 30
	// pssInstances is how many instances each variant of
	// BenchmarkSandbox/PSS runs at once.
	pssInstances = 8
	// burstApps is the number of apps (and so sandboxes) of BenchmarkBurst80.
	burstApps = 80
	// burst80Reps is the number of cold (page cache dropped) bursts per
	// side of BenchmarkBurst80.
	burst80Reps = 3

	// Where the worker mounts the runtime clients and the code in a
	// sandbox (worker.runtimeMount and worker.taskMount).
	sbRuntimeDir = "/opt/baton/runtime"
	sbTaskDir    = "/var/task"
)

// baselineImports is what the baseline interpreters of BenchmarkBurst80
// import: the modules Baton's Python runtime client and its zygote import
// (baton_runtime.py), so that both sides read the same files of the image.
const baselineImports = "import http.client, importlib, io, json, os, sys, time, traceback, " +
	"signal, socket, selectors, ast, ctypes, gc"

// ---------------------------------------------------------------------------
// Prerequisites.

// requireRoot skips unless the benchmark runs as root.
func requireRoot(b *testing.B) {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("container sandboxes need root: run this benchmark as root (e.g. sudo go test ...); skipping")
	}
}

// newContainerRuntime returns a container runtime of this test binary, or
// skips with the reason this host cannot run container sandboxes. Its
// sandboxes run baton-reaper as PID 1, as a server's do; with self, this
// test binary instead (the way before baton-reaper, a baseline).
func newContainerRuntime(b *testing.B, self bool) *container.Runtime {
	b.Helper()
	requireRoot(b)
	opts := container.Options{StateDir: filepath.Join(b.TempDir(), "state")}
	if !self {
		var err error
		if opts.ReaperPath, err = reaperbuild.Build(b.TempDir()); err != nil {
			b.Fatal(err)
		}
	}
	r, err := container.New(opts)
	if errors.Is(err, container.ErrUnavailable) {
		b.Skipf("this host cannot run container sandboxes; skipping: %v", err)
	}
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// requireContainerServer skips unless `baton server --sandbox container`
// can work here (root, kernel features), so that it is not a failure.
func requireContainerServer(b *testing.B) {
	b.Helper()
	newContainerRuntime(b, true)
}

// requireRunc returns Debian's runc, or skips.
func requireRunc(b *testing.B) string {
	b.Helper()
	p, err := exec.LookPath("runc")
	if err != nil {
		b.Skip("runc not found in PATH; the baseline needs it (Debian: apt-get install runc); skipping")
	}
	return p
}

// ---------------------------------------------------------------------------
// The Python base image, mounted from an image store of the benchmark's own.

type pyImage struct {
	store  *image.Store
	img    image.Image
	lower  []string // overlay lowerdirs, top first
	interp string   // the interpreter's path inside the image
	path   string   // the image's PATH
	built  time.Duration
}

// openPythonImage builds the Python base image from the host's interpreter
// into a new image store and mounts its layers.
func openPythonImage(b *testing.B) *pyImage {
	b.Helper()
	realPython(b)
	ctx := context.Background()
	store, err := image.Open(filepath.Join(b.TempDir(), "images"), nil)
	if err != nil {
		b.Fatalf("image store: %v", err)
	}
	b.Cleanup(func() { _ = store.Close() })
	start := time.Now()
	img, err := baseimage.Ensure(ctx, store, baseimage.Python)
	if err != nil {
		b.Fatalf("python base image: %v", err)
	}
	built := time.Since(start)
	lower, release, err := store.RootFS(ctx, img)
	if err != nil {
		b.Fatalf("mount the python base image: %v", err)
	}
	b.Cleanup(release)
	p := &pyImage{store: store, img: img, lower: lower, built: built, path: "/usr/local/bin:/usr/bin:/bin"}
	if len(img.Cmd) == 0 {
		b.Fatal("the python base image names no interpreter")
	}
	p.interp = img.Cmd[0]
	for _, kv := range img.Env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			p.path = v
		}
	}
	return p
}

// exportRootFS copies the image's merged tree (a read-only overlay of its
// layers) into dst with cp -a.
func (p *pyImage) exportRootFS(b *testing.B, dst string) {
	b.Helper()
	tmp := b.TempDir()
	merged, empty := filepath.Join(tmp, "merged"), filepath.Join(tmp, "empty")
	for _, d := range []string{merged, empty, dst} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	// Without an upper directory overlayfs wants two lowerdirs at least;
	// an empty one at the bottom changes nothing.
	opts := "lowerdir=" + strings.Join(append(slices.Clone(p.lower), empty), ":")
	if err := unix.Mount("overlay", merged, "overlay", unix.MS_RDONLY, opts); err != nil {
		b.Fatalf("mount the image's overlay: %v", err)
	}
	defer func() { _ = unix.Unmount(merged, unix.MNT_DETACH) }()
	if out, err := exec.Command("cp", "-a", merged+"/.", dst+"/").CombinedOutput(); err != nil {
		b.Fatalf("cp -a the image: %v\n%s", err, out)
	}
}

// sharedDir is a new temporary directory the sandbox's uid can read.
func sharedDir(b *testing.B) string {
	b.Helper()
	d := b.TempDir()
	if err := os.Chmod(d, 0o755); err != nil {
		b.Fatal(err)
	}
	return d
}

// sandboxCode installs the runtime clients and the benchmark's Python
// handler in host directories for the sandbox's read-only mounts.
func sandboxCode(b *testing.B) (runtimeDir, taskDir string) {
	b.Helper()
	runtimeDir, taskDir = sharedDir(b), sharedDir(b)
	if _, err := runtimes.Install(runtimeDir); err != nil {
		b.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join("testdata", "python", "app.py"))
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(taskDir, "app.py"), src, 0o644); err != nil {
		b.Fatal(err)
	}
	return runtimeDir, taskDir
}

// sandboxSpec is a sandbox as the worker makes one for a Python app: the
// image's layers, the runtime clients and the code mounted read-only.
func (p *pyImage) sandboxSpec(id, runtimeDir, taskDir string, memoryMB int) sandbox.Spec {
	return sandbox.Spec{
		ID: id, App: id, RootLowerDirs: p.lower, MemoryMB: memoryMB, PIDs: 256,
		Mounts: []sandbox.Mount{{Source: runtimeDir, Target: sbRuntimeDir}, {Source: taskDir, Target: sbTaskDir}},
	}
}

// instanceEnv is the environment the worker gives a Python instance in an
// isolated sandbox.
func (p *pyImage) instanceEnv() map[string]string {
	env := map[string]string{"PATH": p.path, "LANG": "C.UTF-8", "TZ": ":UTC", "HOME": "/tmp"}
	return benchFunctionEnv(env, sbTaskDir, sbRuntimeDir)
}

func (p *pyImage) runtimeScript() string { return sbRuntimeDir + "/" + runtimes.PythonFile }

// ---------------------------------------------------------------------------
// Python instances inside a sandbox, as the worker starts them.

// sbZygote is a zygote running in a sandbox.
type sbZygote struct {
	z      *grain.Zygote
	proc   sandbox.Process
	exited chan struct{}
}

func (z *sbZygote) stop() {
	z.z.Close()
	select {
	case <-z.exited:
	case <-time.After(10 * time.Second):
		_ = z.proc.Kill()
		<-z.exited
	}
}

// startZygoteIn starts a zygote in sb and waits until it imported the
// handler.
func (p *pyImage) startZygoteIn(sb sandbox.Sandbox) (*sbZygote, error) {
	ours, theirs, err := grain.SocketPair()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	proc, err := sb.Start(ctx, sandbox.ProcessSpec{
		Args: []string{p.interp, "-u", p.runtimeScript(), "zygote"},
		Env:  function.EnvList(p.instanceEnv()), Dir: sbTaskDir,
		Stdout: os.Stderr, Stderr: os.Stderr,
		ExtraFiles: []*os.File{theirs},
	})
	theirs.Close()
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("start zygote: %w", err)
	}
	z := &sbZygote{z: grain.New(ours, nil), proc: proc, exited: make(chan struct{})}
	go func() { _, _ = proc.Wait(); close(z.exited) }()
	info, err := z.z.Ready(ctx)
	if err == nil && info.InitError != nil {
		err = fmt.Errorf("zygote could not import the handler: %v", info.InitError)
	}
	if err != nil {
		z.stop()
		return nil, err
	}
	return z, nil
}

// sbInstance is a Python instance in a sandbox that has asked for work.
type sbInstance struct {
	api     *instanceAPI
	done    <-chan struct{}
	hostPid int // exec'd instances only; forked ones are found by cgroup
	killFn  func()
}

func (in *sbInstance) kill() {
	in.killFn()
	<-in.done
	in.api.srv.Close()
}

// invoke hands the instance one event and waits for the result.
func (in *sbInstance) invoke() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := in.api.srv.Invoke(ctx, runtimeapi.Event{Payload: warmPayload})
	if err == nil && res.Error != nil {
		err = fmt.Errorf("function error: %s: %s", res.Error.Type, res.Error.Message)
	}
	return err
}

// newSandboxAPI is an instance's Runtime API endpoint, listening in the
// sandbox's network namespace as the worker's.
func newSandboxAPI(sb sandbox.Sandbox) (*instanceAPI, error) {
	ln, err := sb.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := runtimeapi.New(runtimeapi.Options{})
	go func() { _ = srv.Serve(ln) }()
	return &instanceAPI{srv: srv, addr: ln.Addr().String()}, nil
}

func (p *pyImage) envFor(api *instanceAPI, i int) map[string]string {
	env := p.instanceEnv()
	env["AWS_LAMBDA_RUNTIME_API"] = api.addr
	env["AWS_LAMBDA_LOG_STREAM_NAME"] = "i-" + strconv.Itoa(i)
	return env
}

// forkIn forks an instance from a warm zygote and waits for its first
// /next.
func (p *pyImage) forkIn(sb sandbox.Sandbox, z *sbZygote, out *os.File, i int) (*sbInstance, error) {
	api, err := newSandboxAPI(sb)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	child, err := z.z.Spawn(ctx, p.envFor(api, i), out, out)
	if err != nil {
		api.srv.Close()
		return nil, err
	}
	in := &sbInstance{api: api, done: child.Done(), killFn: func() { _ = child.Kill(syscall.SIGKILL) }}
	if err := child.Release(); err != nil {
		in.kill()
		return nil, err
	}
	if err := api.awaitReady(child.Done()); err != nil {
		in.kill()
		return nil, err
	}
	return in, nil
}

// execIn starts a new interpreter running the runtime client in sb and
// waits for its first /next.
func (p *pyImage) execIn(sb sandbox.Sandbox, out *os.File, i int) (*sbInstance, error) {
	api, err := newSandboxAPI(sb)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	proc, err := sb.Start(ctx, sandbox.ProcessSpec{
		Args: []string{p.interp, "-u", p.runtimeScript()},
		Env:  function.EnvList(p.envFor(api, i)), Dir: sbTaskDir, Stdout: out, Stderr: out,
	})
	if err != nil {
		api.srv.Close()
		return nil, err
	}
	exited := make(chan struct{})
	go func() { _, _ = proc.Wait(); close(exited) }()
	in := &sbInstance{api: api, done: exited, hostPid: proc.Pid(), killFn: func() { _ = proc.Kill() }}
	if err := api.awaitReady(exited); err != nil {
		in.kill()
		return nil, err
	}
	return in, nil
}

func devNull(b *testing.B) *os.File {
	b.Helper()
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// ---------------------------------------------------------------------------
// BenchmarkSandbox: the container runtime used directly.

// BenchmarkSandbox measures container sandboxes made from the Python base
// image (built from the host's interpreter into an EROFS layer store of
// the benchmark's own). See Create, Instance and PSS below.
func BenchmarkSandbox(b *testing.B) {
	r := newContainerRuntime(b, false)
	p := openPythonImage(b)
	runtimeDir, taskDir := sandboxCode(b)
	b.Run("Create", func(b *testing.B) {
		logLoad(b)
		benchSandboxCreate(b, r, newContainerRuntime(b, true), p, runtimeDir, taskDir)
	})
	b.Run("Instance", func(b *testing.B) { logLoad(b); benchSandboxInstance(b, r, p, runtimeDir, taskDir) })
	b.Run("PSS", func(b *testing.B) { logLoad(b); benchSandboxPSS(b, r, p, runtimeDir, taskDir) })
}

// runcBundle writes an OCI bundle for Debian's runc: rootfs is a copy of
// the image, config.json comes from `runc spec`, adjusted to run args as
// uid 1000 on a read-only root without a terminal.
func runcBundle(b *testing.B, runc, dir, rootfs string, args, env []string) {
	b.Helper()
	if out, err := exec.Command(runc, "spec", "--bundle", dir).CombinedOutput(); err != nil {
		b.Fatalf("runc spec: %v\n%s", err, out)
	}
	file := filepath.Join(dir, "config.json")
	data, err := os.ReadFile(file)
	if err != nil {
		b.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal(data, &spec); err != nil {
		b.Fatalf("config.json from runc spec: %v", err)
	}
	proc, _ := spec["process"].(map[string]any)
	root, _ := spec["root"].(map[string]any)
	if proc == nil || root == nil {
		b.Fatal("config.json from runc spec has no process or root")
	}
	proc["terminal"] = false
	proc["args"] = args
	proc["env"] = env
	proc["cwd"] = "/"
	proc["user"] = map[string]any{"uid": 1000, "gid": 1000}
	root["path"] = rootfs
	root["readonly"] = true
	if data, err = json.MarshalIndent(spec, "", "\t"); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(file, data, 0o644); err != nil {
		b.Fatal(err)
	}
}

// runcRun runs the bundle's container to completion with `runc run`,
// which creates, starts, waits for and deletes it.
func runcRun(runc, state, bundle, id string) error {
	cmd := exec.Command(runc, "--root", state, "run", "--bundle", bundle, id)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("runc run %s: %v: %s", id, err, bytes.TrimSpace(out))
	}
	return nil
}

// benchSandboxCreate: Create and Destroy of a sandbox with the Python base
// image's lowerdirs (and the worker's mounts and limits); the whole life
// of a sandbox that runs `python3 -c pass`; Debian's `runc run` of the
// same image and command; and the same interpreter started in a chroot of
// the image without any container, as the floor.
func benchSandboxCreate(b *testing.B, r, rSelf *container.Runtime, p *pyImage, runtimeDir, taskDir string) {
	runc := requireRunc(b)
	bundle := b.TempDir()
	p.exportRootFS(b, filepath.Join(bundle, "rootfs"))
	env := []string{"PATH=" + p.path, "LANG=C.UTF-8", "HOME=/tmp"}
	args := []string{p.interp, "-c", "pass"}
	runcBundle(b, runc, bundle, "rootfs", args, env)
	runcState := b.TempDir()
	rootfs := filepath.Join(bundle, "rootfs")
	ctx := context.Background()

	var create, run, destroy, whole, runcLat, chroot []float64
	var selfCreate, selfRun, selfWhole []float64
	seq := 0
	batonRun := func() error {
		seq++
		spec := p.sandboxSpec(fmt.Sprintf("bench-create-%d", seq), runtimeDir, taskDir, 256)
		t0 := time.Now()
		sb, err := r.Create(ctx, spec)
		if err != nil {
			return err
		}
		t1 := time.Now()
		proc, err := sb.Start(ctx, sandbox.ProcessSpec{Args: args, Env: env})
		if err != nil {
			_ = sb.Destroy(ctx)
			return err
		}
		st, err := proc.Wait()
		if err == nil && st.Code != 0 {
			err = fmt.Errorf("python3 -c pass in the sandbox: exit %d signal %d", st.Code, st.Signal)
		}
		t2 := time.Now()
		if derr := sb.Destroy(ctx); err == nil {
			err = derr
		}
		t3 := time.Now()
		create = append(create, msOf(t1.Sub(t0)))
		run = append(run, msOf(t2.Sub(t1)))
		destroy = append(destroy, msOf(t3.Sub(t2)))
		whole = append(whole, msOf(t3.Sub(t0)))
		return err
	}
	// The baseline from before baton-reaper: the test binary as PID 1.
	selfRunOnce := func() error {
		seq++
		spec := p.sandboxSpec(fmt.Sprintf("bench-create-%d", seq), runtimeDir, taskDir, 256)
		t0 := time.Now()
		sb, err := rSelf.Create(ctx, spec)
		if err != nil {
			return err
		}
		t1 := time.Now()
		proc, err := sb.Start(ctx, sandbox.ProcessSpec{Args: args, Env: env})
		if err == nil {
			var st sandbox.ExitStatus
			if st, err = proc.Wait(); err == nil && st.Code != 0 {
				err = fmt.Errorf("python3 -c pass in the sandbox: exit %d signal %d", st.Code, st.Signal)
			}
		}
		t2 := time.Now()
		if derr := sb.Destroy(ctx); err == nil {
			err = derr
		}
		selfCreate = append(selfCreate, msOf(t1.Sub(t0)))
		selfRun = append(selfRun, msOf(t2.Sub(t1)))
		selfWhole = append(selfWhole, msOf(time.Since(t0)))
		return err
	}
	runcRunOnce := func() error {
		seq++
		t0 := time.Now()
		err := runcRun(runc, runcState, bundle, fmt.Sprintf("bench-runc-%d", seq))
		runcLat = append(runcLat, msOf(time.Since(t0)))
		return err
	}
	chrootRun := func() error {
		cmd := exec.Command(p.interp, "-c", "pass")
		cmd.Env = env
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: rootfs, Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}
		t0 := time.Now()
		out, err := cmd.CombinedOutput()
		chroot = append(chroot, msOf(time.Since(t0)))
		if err != nil {
			return fmt.Errorf("chroot python3 -c pass: %v: %s", err, out)
		}
		return nil
	}
	variants := []func() error{batonRun, selfRunOnce, runcRunOnce, chrootRun}
	// One unmeasured round warms the caches.
	for _, v := range variants {
		if err := v(); err != nil {
			b.Fatal(err)
		}
	}
	create, run, destroy, whole, runcLat, chroot = nil, nil, nil, nil, nil, nil
	selfCreate, selfRun, selfWhole = nil, nil, nil
	for i := range b.N * sandboxRuns {
		for k := range variants {
			if err := variants[(k+i)%len(variants)](); err != nil {
				b.Fatal(err)
			}
		}
	}

	suppressNsOp(b)
	c, rn, d, w, rc, ch := summarize(create), summarize(run), summarize(destroy), summarize(whole), summarize(runcLat), summarize(chroot)
	sc, sr, sw := summarize(selfCreate), summarize(selfRun), summarize(selfWhole)
	c.report(b, "create-")
	sc.report(b, "self-reaper-create-")
	d.report(b, "destroy-")
	w.report(b, "baton-run-")
	rc.report(b, "runc-run-")
	ch.report(b, "chroot-")
	b.ReportMetric(rc.P50/w.P50, "runc/baton-p50")
	b.Logf("sandbox from the python base image (%d layer, %.1f MiB of EROFS, built and stored in %.1f s; ms), %d runs per variant, interleaved; runc %s:%s",
		len(p.img.Layers), float64(p.img.Size)/(1<<20), p.built.Seconds(), len(create), runcVersion(runc), table(
			[]string{"measure", "n", "p50", "p90", "p99", "max"},
			[][]string{
				append([]string{"Create (overlay, container, reaper)"}, c.cells()...),
				append([]string{"Start+Wait python3 -c pass in it"}, rn.cells()...),
				append([]string{"Destroy"}, d.cells()...),
				append([]string{"whole: Create+run+Destroy"}, w.cells()...),
				append([]string{"before: Create, binary itself as reaper"}, sc.cells()...),
				append([]string{"before: Start+Wait python3 -c pass"}, sr.cells()...),
				append([]string{"before: whole"}, sw.cells()...),
				append([]string{"baseline: runc run, same image+command"}, rc.cells()...),
				append([]string{"floor: chroot, no container"}, ch.cells()...),
			}))
}

func runcVersion(runc string) string {
	out, err := exec.Command(runc, "--version").Output()
	if err != nil {
		return "(version unknown)"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(strings.TrimPrefix(line, "runc version"))
}

// benchSandboxInstance: a new Python instance in a running sandbox, from
// the request until its first GET /next: (fork) Zygote.Spawn on a warm
// zygote, (exec) a new interpreter exec'd into the sandbox running the
// runtime client, (zygote-fork) a new zygote in the sandbox and its first
// fork, i.e. the first instance of a function in an existing sandbox.
func benchSandboxInstance(b *testing.B, r *container.Runtime, p *pyImage, runtimeDir, taskDir string) {
	ctx := context.Background()
	sb, err := r.Create(ctx, p.sandboxSpec("bench-instance", runtimeDir, taskDir, 1024))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sb.Destroy(ctx) })
	null := devNull(b)
	z, err := p.startZygoteIn(sb)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(z.stop)

	timed := func(start func() (*sbInstance, error)) (time.Duration, error) {
		t0 := time.Now()
		in, err := start()
		d := time.Since(t0)
		if in != nil {
			in.kill()
		}
		return d, err
	}
	variants := []*startVariant{
		{name: "fork", run: func(i int) (time.Duration, error) {
			return timed(func() (*sbInstance, error) { return p.forkIn(sb, z, null, i) })
		}},
		{name: "exec", run: func(i int) (time.Duration, error) {
			return timed(func() (*sbInstance, error) { return p.execIn(sb, null, i) })
		}},
		{name: "zygote-fork", run: func(i int) (time.Duration, error) {
			t0 := time.Now()
			z2, err := p.startZygoteIn(sb)
			if err != nil {
				return 0, err
			}
			defer z2.stop()
			in, err := p.forkIn(sb, z2, null, i)
			d := time.Since(t0)
			if in != nil {
				in.kill()
			}
			return d, err
		}},
	}
	rows := measureStarts(b, variants, b.N*sandboxStarts)
	fork := summarize(variants[0].lat)
	b.ReportMetric(summarize(variants[1].lat).P50/fork.P50, "exec/fork-p50")
	b.Logf("new Python instance in a running container sandbox, request to first /next (ms), %d starts per variant, interleaved:%s",
		len(variants[0].lat), table([]string{"variant", "n", "p50", "p90", "p99", "max", "p50/fork", "p99/fork"}, rows))
}

// ---------------------------------------------------------------------------
// Memory.

// memUse is a process's memory from /proc/<pid>/smaps_rollup, in MiB.
type memUse struct {
	Rss, Pss, PssAnon, PssFile, USS float64
}

func (m *memUse) add(o memUse) {
	m.Rss += o.Rss
	m.Pss += o.Pss
	m.PssAnon += o.PssAnon
	m.PssFile += o.PssFile
	m.USS += o.USS
}

func readMemUse(pid int) (memUse, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return memUse{}, err
	}
	defer f.Close()
	var m memUse
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, err := strconv.ParseFloat(fields[1], 64)
		if err != nil {
			continue
		}
		mib := kb / 1024
		switch fields[0] {
		case "Rss:":
			m.Rss = mib
		case "Pss:":
			m.Pss = mib
		case "Pss_Anon:":
			m.PssAnon = mib
		case "Pss_File:":
			m.PssFile = mib
		case "Private_Clean:", "Private_Dirty:":
			m.USS += mib
		}
	}
	return m, sc.Err()
}

// sandboxProcs lists the host pids of the processes in a container
// sandbox's cgroup, found through /proc/<pid>/cgroup, with the sub-cgroup
// each is in ("" for the sandbox's own cgroup, where only the reaper is;
// every process the sandbox starts gets a sub-cgroup of its own, and
// forked children stay in their parent's).
func sandboxProcs(id string) map[int]string {
	out := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		if err != nil {
			continue
		}
		found, leaf := false, ""
		for _, line := range strings.Split(string(data), "\n") {
			parts := strings.SplitN(line, ":", 3)
			if len(parts) != 3 {
				continue
			}
			p := parts[2]
			if strings.HasSuffix(p, "/"+id) {
				found = true
			} else if i := strings.Index(p, "/"+id+"/"); i >= 0 {
				found = true
				leaf = p[i+len(id)+2:]
				break
			}
		}
		if found {
			out[pid] = leaf
		}
	}
	return out
}

// familyMem sums the memory of the sandbox's processes other than the
// reaper, and returns the per-process figures of those not in skip.
func familyMem(id string, skip map[int]bool) (total memUse, each []memUse, err error) {
	for pid, leaf := range sandboxProcs(id) {
		if leaf == "" {
			continue // the reaper
		}
		m, err := readMemUse(pid)
		if err != nil {
			return memUse{}, nil, fmt.Errorf("pid %d: %w", pid, err)
		}
		total.add(m)
		if !skip[pid] {
			each = append(each, m)
		}
	}
	return total, each, nil
}

// benchSandboxPSS measures what one more concurrent Python instance costs
// in memory inside a container sandbox, measured on the host with PSS
// (proportional set size: a page shared by n processes counts 1/n in
// each), so that the sum over a family of processes is the memory the
// family uses. fork: a zygote plus pssInstances forked children; exec:
// pssInstances separate interpreters, each running the runtime client
// with the same handler. Every instance served one invocation before the
// measurement. The two families run one after the other in the same
// sandbox, so that they do not share pages with each other.
func benchSandboxPSS(b *testing.B, r *container.Runtime, p *pyImage, runtimeDir, taskDir string) {
	ctx := context.Background()
	const id = "bench-pss"
	sb, err := r.Create(ctx, p.sandboxSpec(id, runtimeDir, taskDir, 2048))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sb.Destroy(ctx) })
	null := devNull(b)

	type family struct {
		name    string
		sums    []memUse // total after 0, 1, ..., pssInstances instances
		each    []memUse // per instance process at pssInstances
		marg    []float64
		further []float64
	}
	measure := func(f *family, skip map[int]bool) {
		total, each, err := familyMem(id, skip)
		if err != nil {
			b.Fatal(err)
		}
		f.sums = append(f.sums, total)
		f.each = each
	}
	fork, execd := &family{name: "fork"}, &family{name: "exec"}
	for range b.N {
		// fork: the zygote alone, then one child more at a time.
		z, err := p.startZygoteIn(sb)
		if err != nil {
			b.Fatal(err)
		}
		skip := map[int]bool{z.proc.Pid(): true}
		fork.sums = nil
		measure(fork, skip)
		var ins []*sbInstance
		for i := range pssInstances {
			in, err := p.forkIn(sb, z, null, i)
			if err != nil {
				b.Fatal(err)
			}
			if err := in.invoke(); err != nil {
				b.Fatal(err)
			}
			ins = append(ins, in)
			measure(fork, skip)
		}
		if len(fork.each) != pssInstances {
			b.Fatalf("found %d forked instances in the sandbox's cgroup, want %d", len(fork.each), pssInstances)
		}
		for _, in := range ins {
			in.kill()
		}
		z.stop()

		// exec: separate interpreters, one more at a time.
		execd.sums = nil
		measure(execd, nil)
		ins = nil
		for i := range pssInstances {
			in, err := p.execIn(sb, null, i)
			if err != nil {
				b.Fatal(err)
			}
			if err := in.invoke(); err != nil {
				b.Fatal(err)
			}
			ins = append(ins, in)
			measure(execd, nil)
		}
		if len(execd.each) != pssInstances {
			b.Fatalf("found %d exec'd instances in the sandbox's cgroup, want %d", len(execd.each), pssInstances)
		}
		for _, in := range ins {
			in.kill()
		}
		for _, f := range []*family{fork, execd} {
			n := float64(pssInstances)
			f.marg = append(f.marg, (f.sums[pssInstances].Pss-f.sums[0].Pss)/n)
			f.further = append(f.further, (f.sums[pssInstances].Pss-f.sums[1].Pss)/(n-1))
		}
	}

	suppressNsOp(b)
	var rows [][]string
	for _, f := range []*family{fork, execd} {
		var pss, uss, rss, anon []float64
		for _, m := range f.each {
			pss = append(pss, m.Pss)
			uss = append(uss, m.USS)
			rss = append(rss, m.Rss)
			anon = append(anon, m.PssAnon)
		}
		ps, us, rs, an := summarize(pss), summarize(uss), summarize(rss), summarize(anon)
		mg, fu := summarize(f.marg), summarize(f.further)
		b.ReportMetric(ps.P50, f.name+"-pss-per-process-MiB")
		b.ReportMetric(mg.P50, f.name+"-pss-per-instance-MiB")
		b.ReportMetric(fu.P50, f.name+"-pss-each-further-MiB")
		rows = append(rows, []string{f.name, f2(f.sums[0].Pss), f2(f.sums[pssInstances].Pss), f2(mg.P50), f2(fu.P50),
			f2(ps.P50), f2(an.P50), f2(us.P50), f2(rs.P50)})
	}
	b.ReportMetric(summarize(execd.marg).P50/summarize(fork.marg).P50, "exec/fork-pss")
	b.Logf("memory of Python instances in one container sandbox (MiB, from smaps_rollup on the host), %d instances per family, each served one call; "+
		"per instance = (sum with %d - sum with 0)/%d, each further = (sum with %d - sum with 1)/%d; per-process columns are p50 over the instances:%s",
		pssInstances, pssInstances, pssInstances, pssInstances, pssInstances-1, table(
			[]string{"family", "sum PSS with 0", "sum PSS with " + strconv.Itoa(pssInstances), "per instance", "each further", "PSS/process", "PSS_Anon/process", "USS/process", "RSS/process"},
			rows))
}

// ---------------------------------------------------------------------------
// Through the server.

// toZero recycles a function's instances and waits until the server
// reports none starting, running or stopping.
func toZero(b *testing.B, s *harness.Server, name string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Client.Recycle(ctx, name); err != nil {
		b.Fatalf("recycle %s: %v", name, err)
	}
	for {
		v, err := s.Client.Get(ctx, name)
		if err != nil {
			b.Fatalf("get %s: %v", name, err)
		}
		if len(v.Status.Instances) == 0 && v.Status.Starting == 0 && v.Status.Stopping == 0 {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitDescendants waits until the server has exactly n descendant
// processes (the sandboxes that must stay: their reapers, zygotes and
// instances).
func waitDescendants(b *testing.B, s *harness.Server, n int) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(harness.Descendants(s.Pid())) != n {
		if time.Now().After(deadline) {
			b.Fatalf("server has descendants %v after 30s, want %d", harness.Descendants(s.Pid()), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// stableDescendants waits until the number of the server's descendants has
// not changed for 300 ms and returns it.
func stableDescendants(s *harness.Server) int {
	n, since := -1, time.Now()
	for time.Since(since) < 300*time.Millisecond {
		if c := len(harness.Descendants(s.Pid())); c != n {
			n, since = c, time.Now()
		}
		time.Sleep(10 * time.Millisecond)
	}
	return n
}

// liveSandboxes lists the container sandboxes of a server: the per-sandbox
// directories in its container runtime's state directory.
func liveSandboxes(b *testing.B, s *harness.Server) []string {
	b.Helper()
	entries, err := os.ReadDir(filepath.Join(s.DataDir, "sandboxes-state", "sandboxes"))
	if err != nil {
		b.Fatalf("list the server's sandboxes: %v", err)
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.Name())
	}
	return ids
}

// BenchmarkSandboxColdStart measures end-to-end cold starts through a real
// `baton server --sandbox container`, for Python (zygote start, handler
// import, fork) and Node (a new node process):
//
//   - new sandbox: the function is the only one of its app; between
//     requests its instances are recycled (DELETE .../instances), which
//     destroys the sandbox, so every measured request creates one.
//   - existing sandbox: a second function of the same app keeps one warm
//     instance, so the app's sandbox stays while the measured function is
//     recycled; the cold start happens in the running sandbox.
//
// Baseline in the same run: the same functions on a second server with the
// process sandbox (no isolation). Each sample also sends a second request
// to the instance the cold start created. Every measured request must be a
// cold start, and the benchmark checks from the container runtime's state
// directory that a new sandbox was (or was not) created.
func BenchmarkSandboxColdStart(b *testing.B) {
	logLoad(b)
	requireContainerServer(b)
	realPython(b)
	requireCommand(b, "node")
	ctr := harness.Start(b, harness.Options{Args: []string{"--sandbox", "container"}})
	proc := harness.Start(b, harness.Options{Args: []string{"--sandbox", "process"}})
	hc := newHTTPClient(2)

	type rtCase struct {
		name, runtime, handler, dir string
	}
	rts := []rtCase{
		{"python", function.RuntimePython, "app.handler", "python"},
		{"node", function.RuntimeNode, "index.handler", "node"},
	}
	type variant struct {
		label   string
		s       *harness.Server
		fn      string
		kind    string // "process", "new" or "existing"
		cold    []float64
		init    []float64
		warm    []float64
		notCold int
	}
	var all [][]*variant
	firstReq := map[string]float64{}
	for _, rt := range rts {
		code := zipDir(b, filepath.Join("testdata", rt.dir))
		spec := function.Spec{Runtime: rt.runtime, Handler: rt.handler, MaxScale: 1, IdleTimeoutSeconds: 3600}
		vs := []*variant{
			{label: rt.name + ", process sandbox (baseline)", s: proc, fn: "proc-" + rt.name, kind: "process"},
			{label: rt.name + ", container, new sandbox", s: ctr, fn: "new-" + rt.name, kind: "new"},
			{label: rt.name + ", container, existing sandbox", s: ctr, fn: "existing-" + rt.name, kind: "existing"},
		}
		for _, v := range vs {
			sp := spec
			if v.kind == "existing" {
				sp.App = "shared-" + rt.name
			}
			deploy(b, v.s, v.fn, sp, code)
		}
		// The keeper shares the existing-sandbox function's app and keeps
		// its sandbox alive.
		keeper := spec
		keeper.App = "shared-" + rt.name
		deploy(b, ctr, "keep-"+rt.name, keeper, code)
		t0 := time.Now()
		mustPost(b, hc, invokeURL(ctr, "keep-"+rt.name), warmPayload)
		// The first container request of each runtime also builds its
		// base image and extracts the code.
		firstReq[rt.name] = msOf(time.Since(t0))
		all = append(all, vs)
	}
	keeperSandboxes := liveSandboxes(b, ctr)
	if len(keeperSandboxes) != len(rts) {
		b.Fatalf("want %d sandboxes for the keepers, found %v", len(rts), keeperSandboxes)
	}
	ctrBase := stableDescendants(ctr)
	// One unmeasured request per function (code extraction, first mounts).
	for _, vs := range all {
		for _, v := range vs {
			mustPost(b, hc, invokeURL(v.s, v.fn), warmPayload)
			toZero(b, v.s, v.fn)
		}
	}

	seen := map[string]bool{}
	for _, id := range keeperSandboxes {
		seen[id] = true
	}
	for i := range b.N * sandboxRuns {
		for _, vs := range all {
			for k := range vs {
				v := vs[(k+i)%len(vs)]
				if v.s == ctr {
					waitDescendants(b, ctr, ctrBase)
				} else {
					waitDescendants(b, proc, 0)
				}
				url := invokeURL(v.s, v.fn)
				r := mustPost(b, hc, url, warmPayload)
				if !r.Cold {
					v.notCold++
					b.Errorf("%s, sample %d: not a cold start", v.label, i)
				}
				if v.s == ctr {
					ids := liveSandboxes(b, ctr)
					var fresh []string
					for _, id := range ids {
						if !seen[id] {
							fresh = append(fresh, id)
							seen[id] = true
						}
					}
					switch {
					case v.kind == "new" && (len(fresh) != 1 || len(ids) != len(keeperSandboxes)+1):
						b.Errorf("%s, sample %d: want one new sandbox, have %v (new: %v)", v.label, i, ids, fresh)
					case v.kind == "existing" && len(ids) != len(keeperSandboxes):
						b.Errorf("%s, sample %d: want the existing sandboxes %v only, have %v", v.label, i, keeperSandboxes, ids)
					}
				}
				v.cold = append(v.cold, msOf(r.Latency))
				v.init = append(v.init, r.Init)
				w := mustPost(b, hc, url, warmPayload)
				if w.Cold || w.Instance != r.Instance {
					b.Errorf("%s, sample %d: second request was not warm on the same instance", v.label, i)
				}
				v.warm = append(v.warm, msOf(w.Latency))
				toZero(b, v.s, v.fn)
			}
		}
	}

	suppressNsOp(b)
	var rows [][]string
	for ri, vs := range all {
		for _, v := range vs {
			c, in, w := summarize(v.cold), summarize(v.init), summarize(v.warm)
			prefix := rts[ri].name + "-" + v.kind + "-"
			c.report(b, prefix)
			b.ReportMetric(in.P50, prefix+"init-p50-ms")
			b.ReportMetric(float64(v.notCold), prefix+"not-cold")
			rows = append(rows, []string{v.label, strconv.Itoa(c.N), f2(c.P50), f2(c.P90), f2(c.P99), f2(c.Max), f2(in.P50), f2(in.P99), f2(w.P50)})
		}
	}
	b.Logf("cold start through the server (ms), %d samples per row, interleaved; first container request per runtime (base image build + mount + code): python %.0f ms, node %.0f ms:%s",
		sandboxRuns*b.N, firstReq["python"], firstReq["node"], table(
			[]string{"case", "n", "p50", "p90", "p99", "max", "init p50", "init p99", "2nd req p50"}, rows))
}

// ---------------------------------------------------------------------------
// BenchmarkBurst80.

// dropCaches writes back dirty pages and drops the page cache, dentries
// and inodes.
func dropCaches() error {
	unix.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200)
}

// diskOf returns the /proc/diskstats name of the block device holding dir.
func diskOf(dir string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return "", err
	}
	maj, mnr := unix.Major(st.Dev), unix.Minor(st.Dev)
	data, err := os.ReadFile("/proc/diskstats")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && f[0] == strconv.FormatUint(uint64(maj), 10) && f[1] == strconv.FormatUint(uint64(mnr), 10) {
			return f[2], nil
		}
	}
	return "", fmt.Errorf("device %d:%d of %s is not in /proc/diskstats (not a block device)", maj, mnr, dir)
}

// sectorsRead is the device's "sectors read" counter (512-byte units).
func sectorsRead(dev string) (uint64, error) {
	data, err := os.ReadFile("/proc/diskstats")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && f[2] == dev {
			return strconv.ParseUint(f[5], 10, 64)
		}
	}
	return 0, fmt.Errorf("device %s not in /proc/diskstats", dev)
}

// treeUse is what a process tree has done: bytes it caused to be read
// from storage (read_bytes of /proc/<pid>/io) and CPU time (utime, stime,
// cutime and cstime of /proc/<pid>/stat), summed over the root and its
// live descendants. Both include what exited children did: the kernel
// adds a child's counters to its parent's when the parent reaps it.
type treeUse struct {
	readBytes uint64
	cpu       time.Duration
	procs     int
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times (100 on
// every Linux architecture Baton runs on).
const clockTicks = 100

func treeUsage(root int) treeUse {
	var u treeUse
	for _, pid := range append([]int{root}, harness.Descendants(root)...) {
		io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
		if err != nil {
			continue // exited meanwhile; its parent has its counters once it is reaped
		}
		for _, line := range strings.Split(string(io), "\n") {
			if v, ok := strings.CutPrefix(line, "read_bytes: "); ok {
				n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				u.readBytes += n
			}
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		// Fields after the command: state is field 3, utime 14 ... cstime 17.
		f := strings.Fields(string(stat[i+2:]))
		if len(f) < 15 {
			continue
		}
		for _, k := range []int{11, 12, 13, 14} {
			t, _ := strconv.ParseUint(f[k], 10, 64)
			u.cpu += time.Duration(t) * time.Second / clockTicks
		}
		u.procs++
	}
	return u
}

type burstRound struct {
	total     time.Duration
	bytes     uint64 // read from the device (diskstats), by anyone
	treeBytes uint64 // read by the measured process tree
	cpu       time.Duration
	procs     int // live processes of the tree at the end
	lat       []float64
	errs      int
	firstEr   string
}

// measureBurst drops the caches (if cold), then runs start() for every one
// of n sandboxes at once, released by one gate, and measures the time
// until all returned, the bytes read from dev meanwhile, and the bytes
// read and CPU time used by the process tree of root.
func measureBurst(b *testing.B, dev string, root, n int, cold bool, start func(i int) error) burstRound {
	b.Helper()
	if cold {
		if err := dropCaches(); err != nil {
			b.Fatalf("drop caches: %v", err)
		}
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		r    burstRound
		gate = make(chan struct{})
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			t0 := time.Now()
			err := start(i)
			d := msOf(time.Since(t0))
			mu.Lock()
			defer mu.Unlock()
			r.lat = append(r.lat, d)
			if err != nil {
				r.errs++
				if r.firstEr == "" {
					r.firstEr = err.Error()
				}
			}
		}()
	}
	tree0 := treeUsage(root)
	before, err := sectorsRead(dev)
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	close(gate)
	wg.Wait()
	r.total = time.Since(t0)
	after, err := sectorsRead(dev)
	if err != nil {
		b.Fatal(err)
	}
	tree1 := treeUsage(root)
	r.bytes = (after - before) * 512
	r.treeBytes = tree1.readBytes - min(tree0.readBytes, tree1.readBytes)
	r.cpu = tree1.cpu - min(tree0.cpu, tree1.cpu)
	r.procs = tree1.procs
	return r
}

// BenchmarkBurst80 starts 80 sandboxes at once from one image until each
// served its first request, with the page cache dropped first (sync, then
// 3 > /proc/sys/vm/drop_caches), and measures the time until all 80
// answered and the bytes read from the disk that holds the data
// directories meanwhile (/proc/diskstats "sectors read" x 512: it counts
// every read of the device, also the kernel's and EROFS's own reads of
// its layer file, which per-process I/O accounting would miss).
//
// Baton: 80 Python functions in 80 different apps, so 80 sandboxes, on one
// `baton server --sandbox container`, all at zero instances; each is
// invoked once, all at the same time. Their code is already extracted and
// the base image built (an unmeasured first round).
//
// Baseline: what a storage driver without a shared page cache does: 80
// private copies of the image's files (cp -a of the extracted base image
// tree), one per container, each run with Debian's `runc run` executing
// an interpreter that imports what Baton's runtime client imports
// (baselineImports), all 80 at once. The copies are made before and are
// not measured.
//
// Both sides run burst80Reps times, alternating, then once more each
// without dropping the cache.
func BenchmarkBurst80(b *testing.B) {
	logLoad(b)
	requireContainerServer(b)
	runc := requireRunc(b)
	realPython(b)
	s := harness.Start(b, harness.Options{Args: []string{"--sandbox", "container"}})
	dev, err := diskOf(s.DataDir)
	if err != nil {
		b.Skipf("cannot measure disk reads: %v", err)
	}
	code := zipDir(b, filepath.Join("testdata", "python"))
	spec := function.Spec{Runtime: function.RuntimePython, Handler: "app.handler", MaxScale: 1, IdleTimeoutSeconds: 3600}
	names := make([]string, burstApps)
	for i := range names {
		names[i] = fmt.Sprintf("burst80-%02d", i)
		deploy(b, s, names[i], spec, code) // app defaults to the function's name
	}
	hc := newHTTPClient(burstApps)
	batonBurst := func(cold bool) burstRound {
		for _, n := range names {
			toZero(b, s, n)
		}
		waitDescendants(b, s, 0)
		r := measureBurst(b, dev, s.Pid(), burstApps, cold, func(i int) error {
			res := post(hc, invokeURL(s, names[i]), warmPayload, false)
			if !res.ok() {
				return errors.New(res.describe())
			}
			if !res.Cold {
				return errors.New("not a cold start")
			}
			return nil
		})
		if ids := liveSandboxes(b, s); len(ids) != burstApps {
			b.Errorf("after the burst the server has %d sandboxes, want %d", len(ids), burstApps)
		}
		return r
	}
	// Unmeasured: builds the base image, extracts the code once, opens
	// the client's connections.
	t0 := time.Now()
	if r := batonBurst(false); r.errs > 0 {
		b.Fatalf("first burst: %d failed: %s", r.errs, r.firstEr)
	}
	b.Logf("first burst (base image build, code extraction): %.1f s", time.Since(t0).Seconds())

	// The baseline's 80 bundles.
	t0 = time.Now()
	tree := filepath.Join(b.TempDir(), "tree")
	info := extractBaseImage(b, tree)
	bundles := b.TempDir()
	state := b.TempDir()
	args := []string{info.Interpreter, "-c", baselineImports}
	env := []string{"PATH=" + filepath.Dir(info.Interpreter) + ":/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "HOME=/tmp"}
	var wg sync.WaitGroup
	errc := make(chan error, burstApps)
	work := make(chan int)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				dir := filepath.Join(bundles, strconv.Itoa(i))
				if err := os.MkdirAll(dir, 0o755); err != nil {
					errc <- err
					continue
				}
				if out, err := exec.Command("cp", "-a", tree, filepath.Join(dir, "rootfs")).CombinedOutput(); err != nil {
					errc <- fmt.Errorf("cp -a: %v: %s", err, out)
				}
			}
		}()
	}
	for i := range burstApps {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errc)
	for err := range errc {
		b.Fatal(err)
	}
	for i := range burstApps {
		runcBundle(b, runc, filepath.Join(bundles, strconv.Itoa(i)), "rootfs", args, env)
	}
	treeBytes := duBytes(b, tree)
	b.Logf("baseline: %d copies of the %.1f MiB image tree made in %.1f s", burstApps, float64(treeBytes)/(1<<20), time.Since(t0).Seconds())
	seq := 0
	zeroAll := func() {
		for _, n := range names {
			toZero(b, s, n)
		}
		waitDescendants(b, s, 0)
	}
	runcBurst := func(cold bool) burstRound {
		// Baton's sandboxes of the previous round are gone first.
		zeroAll()
		seq++
		round := seq
		return measureBurst(b, dev, os.Getpid(), burstApps, cold, func(i int) error {
			return runcRun(runc, state, filepath.Join(bundles, strconv.Itoa(i)), fmt.Sprintf("burst-%d-%d", round, i))
		})
	}
	if r := runcBurst(false); r.errs > 0 { // unmeasured: checks the bundles
		b.Fatalf("baseline: %d of %d runc runs failed: %s", r.errs, burstApps, r.firstEr)
	}

	// Background: what the device reads in one second right after a drop
	// while nothing of ours runs.
	if err := dropCaches(); err != nil {
		b.Fatalf("drop caches: %v", err)
	}
	bg0, _ := sectorsRead(dev)
	time.Sleep(time.Second)
	bg1, _ := sectorsRead(dev)
	background := float64((bg1-bg0)*512) / (1 << 20)

	var batonRounds, runcRounds []burstRound
	for range b.N * burst80Reps {
		batonRounds = append(batonRounds, batonBurst(true))
		runcRounds = append(runcRounds, runcBurst(true))
	}
	// Warm page cache: each side once unmeasured first, since the other
	// side's last cold round dropped its files.
	batonBurst(false)
	batonWarm := batonBurst(false)
	runcBurst(false)
	runcWarm := runcBurst(false)
	for _, r := range append(append(slices.Clone(batonRounds), runcRounds...), batonWarm, runcWarm) {
		if r.errs > 0 {
			b.Errorf("a burst had %d failures: %s", r.errs, r.firstEr)
		}
	}

	suppressNsOp(b)
	mib := func(v uint64) float64 { return float64(v) / (1 << 20) }
	type sideStats struct {
		total, tree, device, cpu, lat summary
	}
	stats := func(rs []burstRound) sideStats {
		var t, tr, dv, cpu, lat []float64
		for _, r := range rs {
			t = append(t, msOf(r.total))
			tr = append(tr, mib(r.treeBytes))
			dv = append(dv, mib(r.bytes))
			cpu = append(cpu, r.cpu.Seconds())
			lat = append(lat, r.lat...)
		}
		return sideStats{summarize(t), summarize(tr), summarize(dv), summarize(cpu), summarize(lat)}
	}
	bs, rs := stats(batonRounds), stats(runcRounds)
	b.ReportMetric(bs.total.P50, "baton-all-served-p50-ms")
	b.ReportMetric(bs.total.Max, "baton-all-served-max-ms")
	b.ReportMetric(bs.tree.P50, "baton-tree-read-p50-MiB")
	b.ReportMetric(bs.device.P50, "baton-device-read-p50-MiB")
	b.ReportMetric(rs.total.P50, "copies-all-done-p50-ms")
	b.ReportMetric(rs.tree.P50, "copies-tree-read-p50-MiB")
	b.ReportMetric(rs.device.P50, "copies-device-read-p50-MiB")
	b.ReportMetric(100*(1-bs.tree.P50/rs.tree.P50), "less-read-tree-%")
	b.ReportMetric(100*(1-bs.device.P50/rs.device.P50), "less-read-device-%")
	row := func(name string, st sideStats) []string {
		return []string{name, f1(st.total.P50), f1(st.total.Max), f1(st.tree.P50), f1(st.tree.Max), f1(st.device.P50), f1(st.device.Max),
			f1(st.cpu.P50), f1(st.lat.P50), f1(st.lat.P99)}
	}
	per := func(rs []burstRound) string {
		var parts []string
		for _, r := range rs {
			parts = append(parts, fmt.Sprintf("%.0f ms %.1f/%.1f MiB %.1f s CPU %d procs", msOf(r.total), mib(r.treeBytes), mib(r.bytes), r.cpu.Seconds(), r.procs))
		}
		return strings.Join(parts, ", ")
	}
	b.Logf("%d sandboxes at once, %d cold rounds per side (sync + drop_caches first); read = tree (read_bytes of the process tree) / device (%s diskstats, "+
		"anyone's; %.1f MiB/s in the second after a drop with nothing of ours running):%s"+
		"rounds (ms, tree/device MiB, CPU, live processes at the end): baton: %s | copies: %s\nwithout dropping the cache: baton %s | copies %s",
		burstApps, len(batonRounds), dev, background, table(
			[]string{"side", "all done p50 ms", "max", "tree read p50 MiB", "max", "device read p50 MiB", "max", "CPU p50 s", "request p50 ms", "p99"},
			[][]string{row("baton, 80 apps, one EROFS image", bs), row("80 private copies, runc run", rs)}),
		per(batonRounds), per(runcRounds), per([]burstRound{batonWarm}), per([]burstRound{runcWarm}))
}

// extractBaseImage builds the Python base image's layer (the same tar
// Baton stores as EROFS) and extracts it into dir.
func extractBaseImage(b *testing.B, dir string) baseimage.Info {
	b.Helper()
	f, err := os.CreateTemp(b.TempDir(), "base-*.tar")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	info, err := baseimage.Build(context.Background(), baseimage.Python, f)
	if err != nil {
		b.Fatalf("build the python base image: %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("tar", "-xpf", f.Name(), "-C", dir).CombinedOutput(); err != nil {
		b.Fatalf("extract the base image: %v\n%s", err, out)
	}
	return info
}

// duBytes is the apparent size of the regular files below dir.
func duBytes(b *testing.B, dir string) int64 {
	b.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}
