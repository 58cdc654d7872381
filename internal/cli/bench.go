package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/bench/arrival"
	"github.com/baton-faas/baton/internal/bench/loadgen"
	"github.com/baton-faas/baton/internal/bench/report"
	"github.com/baton-faas/baton/internal/bench/stats"
	"github.com/baton-faas/baton/internal/bench/synthetic"
	"github.com/baton-faas/baton/internal/function"
)

type benchFlags struct {
	server, function, data, runtime, mode, arrivalKind, out string
	viaURL, keep, baseline                                  bool
	sleepMs, busyMs, rate                                   float64
	responseBytes, touchMB, memoryMB, payloadBytes, chain   int
	concurrency, burst, requests, warmup, maxInFlight       int
	maxScale                                                int
	burstGap, duration                                      time.Duration
	seed                                                    uint64
}

func newBenchCmd() *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure invocation latency: closed/open loops, bursts, cold-start sweeps, chains",
		Long: `bench sends load to a function and records every request.

Target a deployed function with --function NAME (its event is --data), or let
bench deploy a synthetic function (--runtime, --sleep-ms, --busy-ms,
--response-bytes, --touch-mb, --chain) that it removes afterwards.

Results go to --out DIR: requests.csv (one row per request), summary.json,
latency-cdf.svg and latency-timeline.svg (and hops.csv for chains).
Latency is measured from each request's intended send time; when the client
falls behind its schedule it says so and by how much.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runBench(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.server, "server", defaultServer(), "URL of the baton server API (env BATON_SERVER)")
	fl.StringVar(&f.function, "function", "", "benchmark this deployed function instead of a synthetic one")
	fl.StringVarP(&f.data, "data", "d", "", "event for --function: JSON, or @file")
	fl.BoolVar(&f.viaURL, "http", false, "send plain HTTP through the function URL (/fn/NAME/) instead of the invoke API")
	fl.StringVar(&f.runtime, "runtime", function.RuntimePython, "synthetic function runtime: python3, nodejs or provided (Go)")
	fl.Float64Var(&f.sleepMs, "sleep-ms", 0, "synthetic function: sleep this long per request")
	fl.Float64Var(&f.busyMs, "busy-ms", 0, "synthetic function: burn CPU this long per request")
	fl.IntVar(&f.responseBytes, "response-bytes", 0, "synthetic function: response body size")
	fl.IntVar(&f.touchMB, "touch-mb", 0, "synthetic function: memory to touch per request (MiB)")
	fl.IntVar(&f.memoryMB, "memory", 0, "synthetic function: memoryMB")
	fl.IntVar(&f.maxScale, "max-scale", 0, "synthetic function: maxScale (default: enough for --concurrency/--burst)")
	fl.IntVar(&f.payloadBytes, "payload-bytes", 0, "pad each synthetic request to about this many bytes")
	fl.IntVar(&f.chain, "chain", 0, "synthetic chain length: function k invokes function k+1 through Baton")
	fl.BoolVar(&f.keep, "keep", false, "keep the synthetic function(s) after the run")
	fl.StringVar(&f.mode, "mode", "closed", "load model: closed, open, burst, cold or warm (--rate implies open)")
	fl.IntVarP(&f.concurrency, "concurrency", "c", 1, "closed loop: concurrent clients")
	fl.Float64Var(&f.rate, "rate", 0, "open loop: requests per second (implies --mode open)")
	fl.StringVar(&f.arrivalKind, "arrival", "exponential", "open loop inter-arrival times: exponential, uniform or fixed")
	fl.Uint64Var(&f.seed, "seed", 1, "random seed for arrivals")
	fl.IntVar(&f.burst, "burst", 0, "burst mode: requests per burst")
	fl.DurationVar(&f.burstGap, "burst-gap", 0, "burst mode: time between burst starts")
	fl.DurationVar(&f.duration, "duration", 0, "measure for this long")
	fl.IntVarP(&f.requests, "requests", "n", 0, "measure this many requests")
	fl.IntVar(&f.warmup, "warmup", 0, "requests sent and discarded before measuring (warm mode: default 2×concurrency, at least 20, and then until the server reports enough instances up for --concurrency)")
	fl.IntVar(&f.maxInFlight, "max-inflight", 10000, "open/burst: most outstanding requests; beyond it sending falls behind (and says so)")
	fl.BoolVar(&f.baseline, "baseline", false, "first run the same load against a plain HTTP server on loopback in this process and report Baton's overhead")
	fl.StringVarP(&f.out, "out", "o", "", "directory for requests.csv, summary.json and SVG plots")
	return cmd
}

func defaultServer() string {
	if s := os.Getenv("BATON_SERVER"); s != "" {
		return s
	}
	return DefaultServer
}

func runBench(cmd *cobra.Command, f benchFlags) error {
	ctx := cmd.Context()
	mode, err := benchMode(cmd, f)
	if err != nil {
		return err
	}
	f.mode = string(mode)
	kind, err := arrival.ParseKind(f.arrivalKind)
	if err != nil {
		return fmt.Errorf("--arrival: %w", err)
	}
	if f.duration <= 0 && f.requests <= 0 {
		return errors.New("set --duration or --requests")
	}
	c, err := client.New(f.server, nil, client.WithToken(apiToken("")))
	if err != nil {
		return err
	}
	plan := loadgen.Plan{
		Mode: mode, Concurrency: f.concurrency, Rate: f.rate, Arrival: kind, Seed: f.seed,
		BurstSize: f.burst, BurstGap: f.burstGap, Duration: f.duration, Requests: f.requests,
		Warmup: f.warmup, MaxInFlight: f.maxInFlight,
	}
	target := f.function
	var chain []string
	if target != "" {
		if f.chain > 0 {
			return errors.New("--chain deploys synthetic functions: it cannot be used with --function")
		}
		if _, err := c.Get(ctx, target); err != nil {
			return err
		}
		payload, err := readData(f.data)
		if err != nil {
			return err
		}
		plan.Payload = func(int) []byte { return payload }
	} else {
		if f.data != "" {
			return errors.New("--data is for --function; a synthetic function's event comes from --sleep-ms, --busy-ms, ...")
		}
		chain, err = deploySynthetic(ctx, c, f, mode, cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		if !f.keep {
			defer removeFunctions(c, chain, cmd.ErrOrStderr())
		}
		target = chain[0]
		body, err := syntheticEvent(f, chain)
		if err != nil {
			return err
		}
		plan.Payload = func(int) []byte { return body }
	}
	plan.Function = target
	plan.ScaleToZero = func(ctx context.Context) error { return scaleToZero(ctx, c, target) }
	if mode == loadgen.Warm {
		plan.Ready = instancesReady(c, target, f.concurrency, cmd.ErrOrStderr())
	}

	conns := max(f.concurrency, f.burst, 64)
	var base *loadgen.Summary
	var baseRes loadgen.Result
	if f.baseline {
		if mode == loadgen.Cold {
			return errors.New("--baseline compares warm request paths; it has no meaning in cold mode")
		}
		fmt.Fprintln(cmd.ErrOrStderr(), "measuring the baseline: the same load against a plain HTTP server on loopback…")
		baseRes, err = runBaseline(ctx, plan, f.responseBytes, conns, cmd.ErrOrStderr())
		if err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		s := loadgen.Summarize(baseRes.Samples, baseRes.Start, baseRes.End)
		s.Function, s.Mode = "baseline", string(mode)
		base = &s
	}
	tgt, err := loadgen.NewHTTPTarget(f.server, target, f.viaURL, conns)
	if err != nil {
		return err
	}
	defer tgt.CloseIdle()
	runner := &loadgen.Runner{Target: tgt, Plan: plan, KeepBodies: len(chain) > 1, OnProgress: progressPrinter(cmd.ErrOrStderr())}
	fmt.Fprintf(cmd.ErrOrStderr(), "benchmarking %s (%s)…\n", target, mode)
	res, runErr := runner.Run(ctx)
	sum := loadgen.Summarize(res.Samples, res.Start, res.End)
	sum.Function, sum.Mode, sum.Config = target, string(mode), f.config()
	if len(chain) > 1 {
		sum.Hops = hopSummaries(chain, res.Bodies, res.Samples)
	}
	if base != nil {
		sum.Compare(*base)
	}
	sum.Print(cmd.OutOrStdout())
	if f.out != "" {
		if err := writeBenchOutput(f.out, res, sum, chain); err != nil {
			return err
		}
		if base != nil {
			if err := writeFile(filepath.Join(f.out, "baseline-requests.csv"), func(w io.Writer) error {
				return report.WriteCSV(w, baseRes.Samples)
			}); err != nil {
				return err
			}
		}
		fmt.Fprintf(cmd.OutOrStdout(), "results in %s\n", f.out)
	}
	if runErr != nil {
		return runErr
	}
	if sum.Count == 0 {
		return errors.New("no request was measured")
	}
	return nil
}

// benchMode resolves --mode: --rate only has a meaning in the open loop,
// so it selects it when --mode is not given and conflicts with any other.
func benchMode(cmd *cobra.Command, f benchFlags) (loadgen.Mode, error) {
	mode, err := loadgen.ParseMode(f.mode)
	if err != nil {
		return "", err
	}
	if !cmd.Flags().Changed("rate") {
		return mode, nil
	}
	if !cmd.Flags().Changed("mode") {
		return loadgen.Open, nil
	}
	if mode != loadgen.Open {
		return "", fmt.Errorf("--rate sets the open loop's request rate: it cannot be used with --mode %s (use --mode open, or drop --rate)", mode)
	}
	return mode, nil
}

// runBaseline runs plan against a plain HTTP server on loopback that
// answers every POST with a small JSON body of the function's response
// size: the floor under any request/response platform on this machine.
func runBaseline(ctx context.Context, plan loadgen.Plan, responseBytes, conns int, log io.Writer) (loadgen.Result, error) {
	reply := []byte(`{"execMs":0,"body":"` + strings.Repeat("x", responseBytes) + `"}`)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return loadgen.Result{}, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(reply)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	tgt := loadgen.NewURLTarget("http://"+ln.Addr().String()+"/", conns)
	defer tgt.CloseIdle()
	plan.Function = "baseline"
	plan.Ready = nil // the baseline server has no instances to wait for
	runner := &loadgen.Runner{Target: tgt, Plan: plan, OnProgress: progressPrinter(log)}
	return runner.Run(ctx)
}

// config records the flags in summary.json, so a result says how it was made.
func (f benchFlags) config() map[string]any {
	return map[string]any{
		"function": f.function, "http": f.viaURL, "runtime": f.runtime, "sleepMs": f.sleepMs, "busyMs": f.busyMs,
		"responseBytes": f.responseBytes, "touchMB": f.touchMB, "payloadBytes": f.payloadBytes, "chain": f.chain,
		"mode": f.mode, "concurrency": f.concurrency, "rate": f.rate, "arrival": f.arrivalKind, "seed": f.seed,
		"burst": f.burst, "burstGap": f.burstGap.String(), "duration": f.duration.String(), "requests": f.requests,
		"warmup": f.warmup,
	}
}

func readData(data string) ([]byte, error) {
	payload := []byte(data)
	if rest, ok := strings.CutPrefix(data, "@"); ok {
		var err error
		if payload, err = os.ReadFile(rest); err != nil {
			return nil, fmt.Errorf("--data: %w", err)
		}
	}
	if len(payload) == 0 {
		payload = []byte("{}")
	}
	if !json.Valid(payload) {
		return nil, errors.New("--data is not valid JSON")
	}
	return payload, nil
}

func randomSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// deploySynthetic deploys the synthetic function (or chain) and returns
// the names, first one first.
func deploySynthetic(ctx context.Context, c *client.Client, f benchFlags, mode loadgen.Mode, log io.Writer) ([]string, error) {
	n := max(f.chain, 1)
	maxScale := f.maxScale
	if maxScale == 0 {
		maxScale = max(f.concurrency, f.burst, 10)
		if mode == loadgen.Open {
			maxScale = max(maxScale, 50)
		}
		maxScale = min(maxScale, function.MaxScaleLimit)
	}
	base := "bench-" + randomSuffix()
	names := make([]string, n)
	for i := range names {
		names[i] = base
		if n > 1 {
			names[i] = fmt.Sprintf("%s-%d", base, i+1)
		}
		spec := function.Spec{Runtime: f.runtime, MemoryMB: f.memoryMB, MaxScale: maxScale, TimeoutSeconds: 300}
		if f.runtime == function.RuntimeNode {
			spec.Concurrency = 1
		}
		if err := synthetic.Deploy(ctx, c, names[i], spec); err != nil {
			removeFunctions(c, names[:i], log)
			return nil, fmt.Errorf("deploy synthetic function %s: %w", names[i], err)
		}
	}
	fmt.Fprintf(log, "deployed synthetic %s function %s\n", f.runtime, strings.Join(names, " → "))
	return names, nil
}

func syntheticEvent(f benchFlags, chain []string) ([]byte, error) {
	ev := synthetic.Behavior{SleepMs: f.sleepMs, BusyMs: f.busyMs, ResponseBytes: f.responseBytes, TouchMB: f.touchMB}
	if len(chain) > 1 {
		ev.Chain = chain[1:]
		ev.Server = f.server
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	if pad := f.payloadBytes - len(body) - len(`,"filler":""`); pad > 0 {
		ev.Filler = strings.Repeat("x", pad)
		body, err = json.Marshal(ev)
	}
	return body, err
}

func removeFunctions(c *client.Client, names []string, log io.Writer) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range names {
		if err := c.Delete(ctx, n); err != nil {
			fmt.Fprintf(log, "could not remove %s: %v\n", n, err)
		}
	}
}

// scaleToZero recycles the function's instances through the API and
// waits until the server reports none, so the next request is cold.
func scaleToZero(ctx context.Context, c *client.Client, name string) error {
	if err := c.Recycle(ctx, name); err != nil {
		return err
	}
	for {
		v, err := c.Get(ctx, name)
		if err != nil {
			return err
		}
		if len(v.Status.Instances) == 0 && v.Status.Starting == 0 && v.Status.Stopping == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// instancesReady is warm mode's question to the server: are enough
// instances of the function's current version up for clients concurrent
// requests (by the capacity the instances report, within maxScale)? It
// prints the count whenever it changes.
func instancesReady(c *client.Client, name string, clients int, log io.Writer) func(context.Context) (bool, string, error) {
	last := ""
	return func(ctx context.Context) (bool, string, error) {
		v, err := c.Get(ctx, name)
		if err != nil {
			return false, "", err
		}
		up, perInstance := 0, 1
		for _, in := range v.Status.Instances {
			if in.Version == v.Version {
				up++
				perInstance = max(perInstance, in.Capacity)
			}
		}
		want := (clients + perInstance - 1) / perInstance
		if v.Spec.MaxScale > 0 {
			want = min(want, v.Spec.MaxScale)
		}
		detail := fmt.Sprintf("%d of %d instances up, %d starting", up, want, v.Status.Starting)
		if detail != last {
			fmt.Fprintf(log, "warm-up: %s\n", detail)
			last = detail
		}
		return up >= want, detail, nil
	}
}

// progressPrinter shows one live line on a terminal, a line every few
// seconds otherwise.
func progressPrinter(w io.Writer) func(loadgen.Progress) {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	var last time.Time
	return func(p loadgen.Progress) {
		line := fmt.Sprintf("%6.1fs  sent %d  done %d  in flight %d  errors %d  behind %s",
			p.Elapsed.Seconds(), p.Sent, p.Done, p.InFlight, p.Errors, p.Behind.Round(time.Microsecond))
		if tty {
			fmt.Fprintf(w, "\r\033[K%s", line)
			return
		}
		if time.Since(last) >= 5*time.Second {
			fmt.Fprintln(w, line)
			last = time.Now()
		}
	}
}

func hopSummaries(chain []string, bodies [][]byte, samples []report.Sample) []loadgen.HopSummary {
	execs := make([][]float64, len(chain))
	calls := make([][]float64, len(chain))
	overhead := make([][]float64, len(chain))
	for i, b := range bodies {
		if i >= len(samples) || samples[i].Error != "" {
			continue
		}
		var r synthetic.Reply
		if json.Unmarshal(b, &r) != nil || len(r.Hops) != len(chain) {
			continue
		}
		for h, hop := range r.Hops {
			execs[h] = append(execs[h], hop.ExecMs)
			calls[h] = append(calls[h], hop.CallMs)
			if h+1 < len(r.Hops) {
				overhead[h+1] = append(overhead[h+1], hop.CallMs-r.Hops[h+1].ExecMs)
			}
		}
	}
	out := make([]loadgen.HopSummary, len(chain))
	for h := range chain {
		out[h] = loadgen.HopSummary{Hop: h + 1, Function: chain[h], ExecMs: stats.Describe(execs[h]),
			CallMs: stats.Describe(calls[h]), OverheadMs: stats.Describe(overhead[h])}
	}
	return out
}

func writeBenchOutput(dir string, res loadgen.Result, sum loadgen.Summary, chain []string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	if err := writeFile(filepath.Join(dir, "requests.csv"), func(w io.Writer) error { return report.WriteCSV(w, res.Samples) }); err != nil {
		return err
	}
	if err := report.WriteJSON(filepath.Join(dir, "summary.json"), sum); err != nil {
		return err
	}
	if len(chain) > 1 {
		if err := writeFile(filepath.Join(dir, "hops.csv"), func(w io.Writer) error { return writeHopsCSV(w, chain, res) }); err != nil {
			return err
		}
	}
	return writePlots(dir, "latency", sum.Function, res.Samples, res.Start)
}

// writePlots draws the latency CDF (warm and cold separately) and latency
// over time.
func writePlots(dir, prefix, title string, samples []report.Sample, start time.Time) error {
	var all, warm, cold []float64
	points := make([]report.Point, 0, len(samples))
	for _, s := range samples {
		ms := float64(s.LatencyNs) / 1e6
		points = append(points, report.Point{T: float64(s.StartNs-start.UnixNano()) / 1e9, Ms: ms, Cold: s.Cold, Failed: s.Error != ""})
		if s.Error != "" {
			continue
		}
		all = append(all, ms)
		if s.Cold {
			cold = append(cold, ms)
		} else {
			warm = append(warm, ms)
		}
	}
	if len(all) == 0 {
		return nil
	}
	series := []report.Series{{Name: "all", Values: all}}
	if len(cold) > 0 && len(warm) > 0 {
		series = append(series, report.Series{Name: "warm", Values: warm}, report.Series{Name: "cold", Values: cold})
	}
	logX := report.WantLogX(series)
	if err := writeFile(filepath.Join(dir, prefix+"-cdf.svg"), func(w io.Writer) error {
		return report.PlotCDF(w, title+": latency CDF (ms)", series, logX)
	}); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, prefix+"-timeline.svg"), func(w io.Writer) error {
		return report.PlotTimeline(w, title+": latency over time", points)
	})
}

func writeHopsCSV(w io.Writer, chain []string, res loadgen.Result) error {
	if _, err := fmt.Fprintln(w, "request,hop,function,exec_ms,call_ms,cold"); err != nil {
		return err
	}
	for i, b := range res.Bodies {
		var r synthetic.Reply
		if json.Unmarshal(b, &r) != nil {
			continue
		}
		for h, hop := range r.Hops {
			cold := hop.Cold
			if h == 0 && i < len(res.Samples) {
				cold = res.Samples[i].Cold
			}
			if _, err := fmt.Fprintf(w, "%d,%d,%s,%.3f,%.3f,%v\n", i, h+1, hop.Function, hop.ExecMs, hop.CallMs, cold); err != nil {
				return err
			}
		}
	}
	return nil
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
