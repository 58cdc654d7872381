package benchmarks

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	apiv1 "github.com/baton-faas/baton/api/v1"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
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
	"text/tabwriter"
	"time"

	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/runtimes"
	"github.com/baton-faas/baton/test/harness"
)

// ---------------------------------------------------------------------------
// Statistics. All figures are milliseconds measured with time.Since, which
// uses the monotonic clock.

type summary struct {
	N                        int
	P50, P90, P99, Max, Mean float64
}

// summarize computes nearest-rank percentiles. With fewer than 100 samples
// p99 is the maximum.
func summarize(ms []float64) summary {
	if len(ms) == 0 {
		nan := math.NaN()
		return summary{P50: nan, P90: nan, P99: nan, Max: nan, Mean: nan}
	}
	s := slices.Clone(ms)
	slices.Sort(s)
	var sum float64
	for _, v := range s {
		sum += v
	}
	return summary{
		N: len(s), P50: percentile(s, 50), P90: percentile(s, 90), P99: percentile(s, 99),
		Max: s[len(s)-1], Mean: sum / float64(len(s)),
	}
}

func percentile(sorted []float64, p float64) float64 {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}

func msOf(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// report adds prefix+{p50,p90,p99,max}-ms metrics.
func (s summary) report(b *testing.B, prefix string) {
	b.ReportMetric(s.P50, prefix+"p50-ms")
	b.ReportMetric(s.P90, prefix+"p90-ms")
	b.ReportMetric(s.P99, prefix+"p99-ms")
	b.ReportMetric(s.Max, prefix+"max-ms")
}

// cells renders n, p50, p90, p99 and max for a table row.
func (s summary) cells() []string {
	return []string{strconv.Itoa(s.N), f2(s.P50), f2(s.P90), f2(s.P99), f2(s.Max)}
}

func f2(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func f1(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

// table renders rows as aligned columns for b.Logf. The testing package
// keeps only the first 10 lines a benchmark logs, so tables stay short.
func table(header []string, rows [][]string) string {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t")+"\t")
	}
	tw.Flush()
	return "\n" + buf.String()
}

// loadAvg describes the load average, to judge how noisy the machine was.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "load average unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "load average unknown"
	}
	return fmt.Sprintf("load average %s %s %s on %d CPUs", f[0], f[1], f[2], runtime.NumCPU())
}

// logLoad logs the load average at the start of a benchmark.
func logLoad(b *testing.B) { b.Logf("at start: %s", loadAvg()) }

// suppressNsOp hides the built-in ns/op: one iteration is a whole
// measurement, so its duration says nothing about latency.
func suppressNsOp(b *testing.B) { b.ReportMetric(0, "ns/op") }

// ---------------------------------------------------------------------------
// HTTP client. Every benchmark uses kept-alive connections.

func newHTTPClient(conns int) *http.Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        2*conns + 8,
		MaxIdleConnsPerHost: 2*conns + 8,
		IdleConnTimeout:     10 * time.Minute,
		DisableCompression:  true,
	}
	return &http.Client{Transport: tr, Timeout: 2 * time.Minute}
}

// result is one request's outcome. Server-Timing fields are NaN when the
// response has no such header (the baseline server).
type result struct {
	Err              error
	Status           int
	Latency          time.Duration
	Cold             bool
	Instance         string
	Wait, Init, Exec float64
	Dialed           bool // the request started a new TCP connection
	Body             []byte
}

func (r result) ok() bool { return r.Err == nil && r.Status == http.StatusOK }

func (r result) describe() string {
	if r.Err != nil {
		return r.Err.Error()
	}
	return fmt.Sprintf("HTTP %d: %s", r.Status, bytes.TrimSpace(r.Body))
}

// post sends body to url and times it from just before the request is
// written until the response body has been read. traceConn records whether
// the request had to open a TCP connection.
func post(hc *http.Client, url string, body []byte, traceConn bool) result {
	r := result{Wait: math.NaN(), Init: math.NaN(), Exec: math.NaN()}
	ctx := context.Background()
	if traceConn {
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			ConnectStart: func(string, string) { r.Dialed = true },
		})
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		r.Err = err
		return r
	}
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		r.Latency, r.Err = time.Since(start), err
		return r
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	r.Latency = time.Since(start)
	r.Err, r.Status, r.Body = err, resp.StatusCode, data
	r.Cold = resp.Header.Get("Baton-Cold-Start") == "true"
	r.Instance = resp.Header.Get("Baton-Instance-Id")
	parseServerTiming(resp.Header.Get("Server-Timing"), &r)
	return r
}

// parseServerTiming reads "wait;dur=X, init;dur=Y, exec;dur=Z" (ms).
func parseServerTiming(h string, r *result) {
	for _, part := range strings.Split(h, ",") {
		name, dur, ok := strings.Cut(strings.TrimSpace(part), ";dur=")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(dur, 64)
		if err != nil {
			continue
		}
		switch name {
		case "wait":
			r.Wait = v
		case "init":
			r.Init = v
		case "exec":
			r.Exec = v
		}
	}
}

// ---------------------------------------------------------------------------
// Servers, functions and processes.

func requireCommand(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		tb.Skipf("%s not found in PATH; skipping (this benchmark needs %s)", name, name)
	}
	return p
}

// realPython returns the interpreter python3 resolves to, so that a
// wrapper on PATH (pyenv's shim is a shell script) does not distort start
// times. Baton's worker resolves it the same way.
func realPython(tb testing.TB) string {
	tb.Helper()
	requireCommand(tb, "python3")
	return runtimes.Python()
}

// baseEnv is the part of the environment Baton's worker gives every
// instance that does not depend on the function. Processes the benchmarks
// start themselves get it instead of the benchmark's own environment,
// which may hold variables that change start-up times (NODE_EXTRA_CA_CERTS
// makes node load a CA bundle, PYTHONDONTWRITEBYTECODE disables .pyc
// caching) that instances never see.
func baseEnv() map[string]string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	return map[string]string{"PATH": path, "LANG": "C.UTF-8", "TZ": ":UTC", "HOME": os.TempDir()}
}

func baseEnvList() []string { return function.EnvList(baseEnv()) }

// benchFunctionEnv is the Lambda environment of the benchmarks' Python
// function "bench" with its code at taskRoot and Baton's runtime clients
// at runtimeDir, added to env.
func benchFunctionEnv(env map[string]string, taskRoot, runtimeDir string) map[string]string {
	maps.Copy(env, map[string]string{
		"LAMBDA_TASK_ROOT":                taskRoot,
		"LAMBDA_RUNTIME_DIR":              runtimeDir,
		"_HANDLER":                        "app.handler",
		"AWS_LAMBDA_FUNCTION_NAME":        "bench",
		"AWS_LAMBDA_FUNCTION_VERSION":     "1",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
		"AWS_LAMBDA_LOG_GROUP_NAME":       "/baton/bench",
		"AWS_LAMBDA_INITIALIZATION_TYPE":  "on-demand",
		"AWS_REGION":                      "local",
		"AWS_DEFAULT_REGION":              "local",
		"AWS_EXECUTION_ENV":               "Baton_python3",
		"BATON_CONCURRENCY":               "1",
	})
	return env
}

// zipDir archives a directory below testdata.
func zipDir(tb testing.TB, dir string) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := archive.ZipDir(dir, &buf); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func deploy(tb testing.TB, s *harness.Server, name string, spec function.Spec, code []byte) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := s.Client.Deploy(ctx, name, client.DeployRequest{FunctionSpec: apiv1.FunctionSpec(spec), Code: code}); err != nil {
		tb.Fatalf("deploy %s: %v", name, err)
	}
}

// remove deletes a function and waits until its processes are gone.
func remove(tb testing.TB, s *harness.Server, name string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Client.Delete(ctx, name); err != nil {
		tb.Errorf("delete %s: %v", name, err)
	}
	waitNoProcesses(tb, s)
}

// waitNoProcesses waits until the server has no child processes left: no
// instance and no grain worker, so every function is at zero and the next
// request to any of them is a cold start.
func waitNoProcesses(tb testing.TB, s *harness.Server) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(harness.Descendants(s.Pid())) > 0 {
		if time.Now().After(deadline) {
			tb.Fatalf("server still has child processes %v after 30s", harness.Descendants(s.Pid()))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func invokeURL(s *harness.Server, name string) string {
	return s.URL + "/v1/functions/" + name + "/invoke"
}

// mustPost posts and fails the benchmark on anything but HTTP 200.
func mustPost(tb testing.TB, hc *http.Client, url string, body []byte) result {
	tb.Helper()
	r := post(hc, url, body, false)
	if !r.ok() {
		tb.Fatalf("POST %s: %s", url, r.describe())
	}
	return r
}

// startBaseline builds and runs testdata/baseline and returns its URL.
func startBaseline(tb testing.TB) string {
	tb.Helper()
	dir := harness.BuildGo(tb, "./test/benchmarks/testdata/baseline")
	cmd := exec.Command(filepath.Join(dir, "bootstrap"))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		addr <- strings.TrimSpace(line)
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case a := <-addr:
		if a == "" {
			tb.Fatal("baseline server printed no address")
		}
		return "http://" + a + "/"
	case <-time.After(30 * time.Second):
		tb.Fatal("baseline server did not start")
	}
	return ""
}

// ---------------------------------------------------------------------------
// Closed-loop load: conc clients, each sending its next request as soon as
// the previous one answered.

type loadResult struct {
	Lat      []float64 // ms, successful requests only
	Exec     []float64 // Server-Timing exec of successful requests, if present
	Outer    []float64 // latency minus exec, per request, if exec is present
	OK       int
	Failed   int
	Cold     int
	Elapsed  time.Duration
	FirstErr string
}

func (l *loadResult) merge(o loadResult) {
	l.Lat = append(l.Lat, o.Lat...)
	l.Exec = append(l.Exec, o.Exec...)
	l.Outer = append(l.Outer, o.Outer...)
	l.OK += o.OK
	l.Failed += o.Failed
	l.Cold += o.Cold
	l.Elapsed += o.Elapsed
	if l.FirstErr == "" {
		l.FirstErr = o.FirstErr
	}
}

func (l loadResult) throughput() float64 {
	if l.Elapsed <= 0 {
		return math.NaN()
	}
	return float64(l.OK) / l.Elapsed.Seconds()
}

func closedLoop(hc *http.Client, url string, body []byte, conc int, dur time.Duration) loadResult {
	var (
		mu  sync.Mutex
		all loadResult
		wg  sync.WaitGroup
	)
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine loadResult
			for time.Since(start) < dur && mine.Failed < 100 {
				r := post(hc, url, body, false)
				if !r.ok() {
					mine.Failed++
					if mine.FirstErr == "" {
						mine.FirstErr = r.describe()
					}
					time.Sleep(time.Millisecond)
					continue
				}
				mine.OK++
				mine.Lat = append(mine.Lat, msOf(r.Latency))
				if !math.IsNaN(r.Exec) {
					mine.Exec = append(mine.Exec, r.Exec)
					mine.Outer = append(mine.Outer, msOf(r.Latency)-r.Exec)
				}
				if r.Cold {
					mine.Cold++
				}
			}
			mu.Lock()
			all.merge(mine)
			mu.Unlock()
		}()
	}
	wg.Wait()
	all.Elapsed = time.Since(start)
	return all
}

// startVariant is one way of starting an instance, measured against others.
type startVariant struct {
	name string
	run  func(i int) (time.Duration, error)
	lat  []float64
}

// measureStarts runs one unmeasured round of every variant (warming caches
// and writing .pyc files), then n interleaved rounds, so that drift on the
// shared machine hits all variants alike. It returns one table row per
// variant with its ratios to the first variant, after reporting metrics.
func measureStarts(b *testing.B, variants []*startVariant, n int) [][]string {
	b.Helper()
	for _, v := range variants {
		if _, err := v.run(-1); err != nil {
			b.Fatalf("%s: %v", v.name, err)
		}
	}
	for i := range n {
		for k := range variants {
			v := variants[(k+i)%len(variants)]
			d, err := v.run(i)
			if err != nil {
				b.Fatalf("%s start %d: %v", v.name, i, err)
			}
			v.lat = append(v.lat, msOf(d))
		}
	}
	suppressNsOp(b)
	first := summarize(variants[0].lat)
	var rows [][]string
	for _, v := range variants {
		s := summarize(v.lat)
		s.report(b, v.name+"-")
		rows = append(rows, append(append([]string{v.name}, s.cells()...), f1(s.P50/first.P50), f1(s.P99/first.P99)))
	}
	return rows
}
