package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/node/grain"
	"github.com/baton-faas/baton/internal/node/runtimeapi"
	"github.com/baton-faas/baton/internal/runtimes"
	"github.com/baton-faas/baton/internal/runtimes/python"
	"github.com/baton-faas/baton/test/harness"
)

const (
	// instanceStarts is the number of instance starts per variant and
	// iteration of BenchmarkInstanceCreation/runtimeapi.
	instanceStarts = 40
	// secondInstances is the number of first/second instance pairs per
	// iteration of BenchmarkInstanceCreation/server.
	secondInstances = 12
	startTimeout    = 30 * time.Second
)

// BenchmarkInstanceCreation compares the two ways to get a new Python
// instance.
//
// runtimeapi: the time from the request for an instance until its first
// GET /next on a fresh runtimeapi server, for (fork) Zygote.Spawn on a warm
// zygote, (exec) `python3 -u baton_runtime.py` started with the real
// interpreter, (zygote-fork) a first instance as Baton makes it: start a
// zygote, wait until it imported the handler, fork, and, when python3 on
// PATH is a wrapper such as pyenv's shim, (exec-path) a fresh interpreter
// through that wrapper. Same handler, same environment; the variants take
// turns.
//
// server: end to end through a real server, the Server-Timing init of the
// first instance of a function version (zygote start, handler import,
// fork) against that of a second instance forced by a concurrent request
// while the first one is busy (fork of the now warm zygote).
func BenchmarkInstanceCreation(b *testing.B) {
	logLoad(b)
	b.Run("runtimeapi", benchRuntimeAPIStarts)
	b.Run("server", benchSecondInstance)
}

type pyEnv struct {
	interp string
	script string
	root   string
	env    map[string]string // the function's environment, as the worker builds it
	devnul *os.File
}

func newPyEnv(b *testing.B) *pyEnv {
	interp := realPython(b)
	paths, err := runtimes.Install(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	// A copy, so that .pyc files land in a temporary directory.
	root := b.TempDir()
	src, err := os.ReadFile(filepath.Join("testdata", "python", "app.py"))
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "app.py"), src, 0o644); err != nil {
		b.Fatal(err)
	}
	env := benchFunctionEnv(baseEnv(), root, filepath.Dir(paths.Client(python.Name)))
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { devnull.Close() })
	return &pyEnv{interp: interp, script: paths.Client(python.Name), root: root, env: env, devnul: devnull}
}

// instanceAPI is a fresh per-instance Runtime API, as the worker creates
// one for every instance.
type instanceAPI struct {
	srv  *runtimeapi.Server
	addr string
}

func newInstanceAPI() (*instanceAPI, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := runtimeapi.New(runtimeapi.Options{})
	go func() { _ = srv.Serve(ln) }()
	return &instanceAPI{srv: srv, addr: ln.Addr().String()}, nil
}

// awaitReady waits for the first /next, an init error or the process end.
func (a *instanceAPI) awaitReady(exited <-chan struct{}) error {
	select {
	case <-a.srv.Ready():
		return nil
	case fe := <-a.srv.InitError():
		return fmt.Errorf("init error: %s: %s", fe.Type, fe.Message)
	case <-exited:
		return errors.New("instance exited before its first /next")
	case <-time.After(startTimeout):
		return errors.New("no /next within the start timeout")
	}
}

func (p *pyEnv) instanceEnv(apiAddr string, i int) map[string]string {
	env := maps.Clone(p.env)
	env["AWS_LAMBDA_RUNTIME_API"] = apiAddr
	env["AWS_LAMBDA_LOG_STREAM_NAME"] = "i-" + strconv.Itoa(i)
	return env
}

// startZygote starts a zygote and waits until it is ready. stop closes its
// control socket, which makes it exit, and waits for that.
func (p *pyEnv) startZygote() (z *grain.Zygote, stop func(), err error) {
	ours, theirs, err := grain.SocketPair()
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(p.interp, "-u", p.script, "zygote")
	cmd.Env = function.EnvList(p.env)
	cmd.Dir = p.root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		ours.Close()
		return nil, nil, fmt.Errorf("start zygote: %w", err)
	}
	z = grain.New(ours, nil)
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop = func() {
		z.Close()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	info, err := z.Ready(ctx)
	if err == nil && info.InitError != nil {
		err = fmt.Errorf("zygote could not import the handler: %v", info.InitError)
	}
	if err != nil {
		stop()
		return nil, nil, err
	}
	return z, stop, nil
}

// timeZygoteFork measures a first instance the way Baton makes one: start
// a zygote, wait for it, fork the instance and wait for its first /next.
func (p *pyEnv) timeZygoteFork(i int) (time.Duration, error) {
	start := time.Now()
	z, stop, err := p.startZygote()
	if err != nil {
		return 0, err
	}
	defer stop()
	return p.forkInstance(z, i, start)
}

// timeFork measures one instance forked from a warm zygote, from request
// to first /next.
func (p *pyEnv) timeFork(z *grain.Zygote, i int) (time.Duration, error) {
	return p.forkInstance(z, i, time.Now())
}

func (p *pyEnv) forkInstance(z *grain.Zygote, i int, start time.Time) (time.Duration, error) {
	api, err := newInstanceAPI()
	if err != nil {
		return 0, err
	}
	defer api.srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	child, err := z.Spawn(ctx, p.instanceEnv(api.addr, i), p.devnul, p.devnul)
	if err != nil {
		return 0, err
	}
	if err = child.Release(); err == nil {
		err = api.awaitReady(child.Done())
	}
	d := time.Since(start)
	_ = child.Kill(syscall.SIGKILL)
	<-child.Done()
	return d, err
}

// timeExec measures one freshly started interpreter from request to first
// /next.
func (p *pyEnv) timeExec(interp string, i int) (time.Duration, error) {
	start := time.Now()
	api, err := newInstanceAPI()
	if err != nil {
		return 0, err
	}
	defer api.srv.Close()
	cmd := exec.Command(interp, "-u", p.script)
	cmd.Env = function.EnvList(p.instanceEnv(api.addr, i))
	cmd.Dir = p.root
	cmd.Stdout, cmd.Stderr = p.devnul, p.devnul
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	err = api.awaitReady(exited)
	d := time.Since(start)
	// Kill the whole group: a wrapper may have started the interpreter as
	// its own child.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-exited
	return d, err
}

func benchRuntimeAPIStarts(b *testing.B) {
	p := newPyEnv(b)
	z, stop, err := p.startZygote()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(stop)

	variants := []*startVariant{
		{name: "fork", run: func(i int) (time.Duration, error) { return p.timeFork(z, i) }},
		{name: "exec", run: func(i int) (time.Duration, error) { return p.timeExec(p.interp, i) }},
		{name: "zygote-fork", run: p.timeZygoteFork},
	}
	if onPath, err := exec.LookPath("python3"); err == nil {
		resolved, _ := filepath.EvalSymlinks(onPath)
		real, _ := filepath.EvalSymlinks(p.interp)
		if resolved != real {
			variants = append(variants, &startVariant{name: "exec-path", run: func(i int) (time.Duration, error) { return p.timeExec(onPath, i) }})
		}
	}
	rows := measureStarts(b, variants, b.N*instanceStarts)
	fork := summarize(variants[0].lat)
	execP50 := summarize(variants[1].lat).P50
	b.ReportMetric(execP50/fork.P50, "exec/fork-p50")
	b.ReportMetric(summarize(variants[2].lat).P50/execP50, "zygote-fork/exec-p50")
	b.Logf("new Python instance, request to first /next (ms), %d starts per variant, interleaved; fork = Zygote.Spawn on a warm zygote, "+
		"exec = fresh interpreter, zygote-fork = start a zygote and fork its first child, exec-path = exec through python3 on PATH:%s",
		len(variants[0].lat), table([]string{"variant", "n", "p50", "p90", "p99", "max", "p50/fork", "p99/fork"}, rows))
}

func benchSecondInstance(b *testing.B) {
	realPython(b)
	s := harness.Start(b, harness.Options{})
	const name = "second-python"
	code := zipDir(b, filepath.Join("testdata", "python"))
	spec := function.Spec{Runtime: function.RuntimePython, Handler: "app.handler", MaxScale: 4, IdleTimeoutSeconds: 3600}
	hc := newHTTPClient(2)
	url := invokeURL(s, name)
	busy := []byte(`{"sleep_ms":300}`)

	spec.Env = map[string]string{"BENCH_ITERATION": "warm-up"}
	deploy(b, s, name, spec, code)
	mustPost(b, hc, url, warmPayload) // extracts the archive

	var first, second, secondClient []float64
	for i := range b.N * secondInstances {
		spec.Env = map[string]string{"BENCH_ITERATION": strconv.Itoa(i)}
		deploy(b, s, name, spec, code)
		waitNoProcesses(b, s)

		r := mustPost(b, hc, url, warmPayload)
		if !r.Cold {
			b.Fatalf("iteration %d: first request after redeploy was not cold", i)
		}
		first = append(first, r.Init)

		// Two concurrent sleeping calls: one takes the idle instance, the
		// other needs a new one.
		var wg sync.WaitGroup
		rs := make([]result, 2)
		for k := range rs {
			wg.Add(1)
			go func() { defer wg.Done(); rs[k] = post(hc, url, busy, false) }()
		}
		wg.Wait()
		var cold []result
		for _, x := range rs {
			if !x.ok() {
				b.Fatalf("iteration %d: %s", i, x.describe())
			}
			if x.Cold {
				cold = append(cold, x)
			}
		}
		if len(cold) != 1 || rs[0].Instance == rs[1].Instance {
			b.Fatalf("iteration %d: want exactly one cold start on a second instance, got cold=%v/%v instances %s/%s",
				i, rs[0].Cold, rs[1].Cold, rs[0].Instance, rs[1].Instance)
		}
		second = append(second, cold[0].Init)
		secondClient = append(secondClient, msOf(cold[0].Latency)-cold[0].Exec)
	}
	remove(b, s, name)

	suppressNsOp(b)
	f, sc, scl := summarize(first), summarize(second), summarize(secondClient)
	f.report(b, "first-init-")
	sc.report(b, "second-init-")
	b.ReportMetric(f.P50/sc.P50, "first/second-p50")
	b.Logf("Server-Timing init of a Python instance through the server (ms), %d pairs:%s", len(first), table(
		[]string{"instance", "n", "p50", "p90", "p99", "max"},
		[][]string{
			append([]string{"first (zygote start + import + fork)"}, f.cells()...),
			append([]string{"second (fork of warm zygote)"}, sc.cells()...),
			append([]string{"second, client latency - exec"}, scl.cells()...),
		}))
}
