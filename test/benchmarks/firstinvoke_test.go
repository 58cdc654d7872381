package benchmarks

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/test/harness"
)

// BenchmarkFirstInvoke measures the first invocation on a fresh server:
// a new data directory (no base image, no code layer, nothing recorded),
// `baton server` started, a function deployed as soon as /healthz answers
// and invoked at once, as a script setting up a new host would. Figures:
// the invocation (client-observed, from its send to its answer), and,
// from the server's process start, the time until /healthz answered
// (readiness) and until that invocation's answer.
//
// Each sub-benchmark (sandbox × runtime) starts BATON_FIRST_INVOKE_SERVERS
// fresh servers (default 5) per binary and iteration. The baseline is the
// binary BATON_BASELINE_BIN names (e.g. main's, built with baton-reaper
// beside it), run the same way in the same run, alternating with this
// tree's binary (which goes first alternates too). Container sandboxes
// need root; without it only process sandboxes are measured.
// BATON_FIRST_INVOKE_AFTER (a duration, e.g. 3s) waits that long after
// readiness before deploying: a host set up a moment before its first
// invocation, whose background work had time to run.
//
//	BATON_BASELINE_BIN=MAIN/baton go test -run '^$' -bench FirstInvoke -benchtime 1x ./test/benchmarks/
func BenchmarkFirstInvoke(b *testing.B) {
	logLoad(b)
	bins := []firstInvokeBin{{name: "this tree", path: harness.Binary(b)}}
	if p := os.Getenv("BATON_BASELINE_BIN"); p != "" {
		bins = append([]firstInvokeBin{{name: "baseline", path: p}}, bins...)
	}
	servers := 5
	if n, err := strconv.Atoi(os.Getenv("BATON_FIRST_INVOKE_SERVERS")); err == nil && n > 0 {
		servers = n
	}
	var after time.Duration
	if d, err := time.ParseDuration(os.Getenv("BATON_FIRST_INVOKE_AFTER")); err == nil && d > 0 {
		after = d
		b.Logf("deploying %v after readiness", after)
	}
	sandboxes := []string{"process"}
	if os.Geteuid() == 0 {
		sandboxes = append(sandboxes, "container")
	} else {
		b.Log("not root: container sandboxes are not measured")
	}
	for _, sb := range sandboxes {
		for _, rt := range []struct{ name, runtime, handler, dir, cmd string }{
			{"python", function.RuntimePython, "app.handler", "python", "python3"},
			{"node", function.RuntimeNode, "index.handler", "node", "node"},
		} {
			b.Run(sb+"/"+rt.name, func(b *testing.B) {
				requireCommand(b, rt.cmd)
				code := zipDir(b, filepath.Join("testdata", rt.dir))
				spec := function.Spec{Runtime: rt.runtime, Handler: rt.handler}
				invoke := make([][]float64, len(bins))
				whole := make([][]float64, len(bins))
				ready := make([][]float64, len(bins))
				for i := range b.N * servers {
					for k := range bins {
						j := k
						if i%2 == 1 {
							j = len(bins) - 1 - k
						}
						m := firstInvoke(b, bins[j].path, sb, spec, code, after)
						invoke[j] = append(invoke[j], m.invoke)
						whole[j] = append(whole[j], m.whole)
						ready[j] = append(ready[j], m.ready)
					}
				}
				suppressNsOp(b)
				var rows [][]string
				for j, bin := range bins {
					in, wh, rd := summarize(invoke[j]), summarize(whole[j]), summarize(ready[j])
					prefix := "first-invoke-"
					if bin.name == "baseline" {
						prefix = "baseline-first-invoke-"
					}
					b.ReportMetric(in.P50, prefix+"p50-ms")
					b.ReportMetric(in.Max, prefix+"max-ms")
					rows = append(rows,
						[]string{bin.name + ": process start to ready", strconv.Itoa(rd.N), f1(rd.P50), f1(rd.Max)},
						[]string{bin.name + ": first invoke", strconv.Itoa(in.N), f1(in.P50), f1(in.Max)},
						[]string{bin.name + ": process start to answer", strconv.Itoa(wh.N), f1(wh.P50), f1(wh.Max)})
				}
				b.Logf("first invoke on a fresh server, %s sandboxes, %s (ms):%s", sb, rt.name,
					table([]string{"measure", "servers", "p50", "max"}, rows))
			})
		}
	}
}

type firstInvokeBin struct{ name, path string }

// firstInvokeTimes are one fresh server's figures (ms): from the
// process's start until /healthz answered, the first invocation, and from
// the process's start to that invocation's answer.
type firstInvokeTimes struct{ ready, invoke, whole float64 }

// firstInvoke starts bin as a fresh server, deploys spec after the pause
// and invokes it once, and stops the server.
func firstInvoke(b *testing.B, bin, sandbox string, spec function.Spec, code []byte, pause time.Duration) firstInvokeTimes {
	b.Helper()
	dir := b.TempDir()
	addr := harness.FreeAddr(b)
	cmd := exec.Command(bin, "server", "--listen", addr, "--data-dir", filepath.Join(dir, "data"),
		"--sandbox", sandbox, "--no-auth", "--log-level", "warn")
	logPath := filepath.Join(dir, "server.log")
	logf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		stopServer(b, cmd, exited, logPath)
		if left := harness.MountsUnder(dir); len(left) > 0 {
			b.Errorf("mounts left under the data directory after the server exited: %v", left)
		}
	}()

	url := "http://" + addr
	hc := newHTTPClient(1)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		if resp, err := hc.Get(url + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-exited:
			exited <- err
			b.Fatalf("%s exited during start: %v\n%s", bin, err, readFile(logPath))
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s did not become healthy\n%s", bin, readFile(logPath))
		}
	}
	ready := time.Since(begin)
	time.Sleep(pause)
	c, err := client.New(url, &http.Client{Timeout: 5 * time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	deploy(b, &harness.Server{URL: url, Client: c}, "first", spec, code)
	r := mustPost(b, hc, url+"/v1/functions/first/invoke", warmPayload)
	if !r.Cold {
		b.Fatalf("%s: the first invocation was not a cold start", bin)
	}
	return firstInvokeTimes{ready: msOf(ready), invoke: msOf(r.Latency), whole: msOf(time.Since(begin))}
}

// stopServer stops the server with SIGTERM (a container server then
// unmounts and removes its sandboxes) and waits for it.
func stopServer(b *testing.B, cmd *exec.Cmd, exited chan error, logPath string) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		var exitErr *exec.ExitError
		if err != nil && !errors.As(err, &exitErr) {
			b.Errorf("server: %v", err)
		}
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-exited
		b.Errorf("server did not stop within a minute of SIGTERM\n%s", readFile(logPath))
	}
}

func readFile(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return string(data)
}
