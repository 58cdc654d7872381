package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/bench/loadgen"
	"github.com/baton-faas/baton/internal/bench/report"
	"github.com/baton-faas/baton/internal/bench/stats"
	"github.com/baton-faas/baton/internal/bench/synthetic"
	"github.com/baton-faas/baton/internal/bench/trace"
	"github.com/baton-faas/baton/internal/function"
)

type replayFlags struct {
	server, traceDir, day, placement, runtime, execKind, out string
	functions, minutes, startMinute, maxScale, maxInFlight   int
	compress                                                 float64
	maxExec                                                  time.Duration
	seed                                                     uint64
	keep                                                     bool
}

func newReplayCmd() *cobra.Command {
	var f replayFlags
	cmd := &cobra.Command{
		Use:   "replay --trace DIR --functions N --minutes M",
		Short: "Replay an Azure Functions 2019 trace against Baton",
		Long: `replay reads the public Azure Functions 2019 trace (invocations per function
per minute, duration percentiles, app memory percentiles) from --trace DIR,
samples --functions N functions whose load resembles the whole trace, deploys
one synthetic function per trace function, sends the trace's invocations of
--minutes M minutes (optionally time-compressed) and removes what it deployed.

Per invocation it reports the scheduling latency (response time minus the
execution time the function reported) and the slowdown (response time /
requested duration), as Dirigent and In-Vitro do, into --out DIR.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runReplay(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.server, "server", defaultServer(), "URL of the baton server API (env BATON_SERVER)")
	fl.StringVar(&f.traceDir, "trace", "", "directory with the Azure trace CSV files")
	fl.StringVar(&f.day, "day", "", "trace day to use, e.g. d01 (needed when the directory holds several)")
	fl.IntVar(&f.functions, "functions", 10, "number of trace functions to replay")
	fl.IntVar(&f.minutes, "minutes", 1, "minutes of the trace to replay")
	fl.IntVar(&f.startMinute, "start-minute", 0, "first minute of the trace (0-based)")
	fl.Float64Var(&f.compress, "compress", 1, "time compression: each trace minute lasts 60s/compress")
	fl.StringVar(&f.placement, "placement", "poisson", "arrivals within a minute: poisson or uniform")
	fl.StringVar(&f.runtime, "runtime", function.RuntimePython, "synthetic function runtime: python3, nodejs or provided")
	fl.StringVar(&f.execKind, "exec", "sleep", "how functions spend their duration: sleep or busy (CPU)")
	fl.DurationVar(&f.maxExec, "max-exec", 0, "cap each invocation's execution time (0: as the trace says); for quick runs")
	fl.IntVar(&f.maxScale, "max-scale", 20, "maxScale of each deployed function")
	fl.IntVar(&f.maxInFlight, "max-inflight", 10000, "most outstanding requests; beyond it sending falls behind (and says so)")
	fl.Uint64Var(&f.seed, "seed", 1, "random seed (sampling, arrivals, durations)")
	fl.BoolVar(&f.keep, "keep", false, "keep the deployed functions after the run")
	fl.StringVarP(&f.out, "out", "o", "", "directory for invocations.csv, functions.csv, summary.json and SVG plots")
	return cmd
}

// replayFunction is one sampled trace function and its deployment.
type replayFunction struct {
	tf     trace.Function
	name   string
	target *loadgen.HTTPTarget
}

func runReplay(cmd *cobra.Command, f replayFlags) error {
	ctx := cmd.Context()
	log := cmd.ErrOrStderr()
	if f.traceDir == "" {
		return errors.New("--trace DIR is required (the directory holding the Azure trace CSV files)")
	}
	if f.functions <= 0 || f.minutes <= 0 || f.startMinute < 0 {
		return errors.New("--functions and --minutes must be > 0 and --start-minute >= 0")
	}
	if f.compress < 1 || math.IsInf(f.compress, 0) || math.IsNaN(f.compress) {
		return errors.New("--compress must be >= 1")
	}
	if f.execKind != "sleep" && f.execKind != "busy" {
		return fmt.Errorf("--exec %q: want sleep or busy", f.execKind)
	}
	c, err := client.New(f.server, nil, client.WithToken(apiToken("")))
	if err != nil {
		return err
	}
	tr, err := trace.Load(f.traceDir, trace.Options{Day: f.day})
	if err != nil {
		return err
	}
	if f.startMinute+f.minutes > tr.Minutes {
		return fmt.Errorf("minutes %d..%d are beyond the trace's %d minutes", f.startMinute, f.startMinute+f.minutes, tr.Minutes)
	}
	n := f.functions
	if have := tr.Eligible(f.startMinute, f.minutes); have > 0 && have < n {
		fmt.Fprintf(log, "the trace has only %d functions with durations and invocations in minutes %d..%d: replaying all of them instead of --functions %d\n",
			have, f.startMinute, f.startMinute+f.minutes, n)
		n = have
	}
	sample, err := tr.Sample(n, f.startMinute, f.minutes, f.seed)
	if err != nil {
		return err
	}
	arrivals, err := trace.Schedule(sample, f.startMinute, f.minutes, f.placement, f.compress, f.seed)
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "replaying %d invocations of %d functions over %d trace minutes (%.0fs)\n",
		len(arrivals), len(sample), f.minutes, float64(f.minutes)*60/f.compress)

	fns := map[string]*replayFunction{}
	var deployed []string
	if !f.keep {
		defer func() { removeFunctions(c, deployed, log) }()
	}
	for _, tf := range sample {
		rf := &replayFunction{tf: tf, name: "replay-" + tf.ID}
		spec := function.Spec{Runtime: f.runtime, MemoryMB: replayMemory(tf), MaxScale: f.maxScale,
			TimeoutSeconds: replayTimeout(tf)}
		if err := synthetic.Deploy(ctx, c, rf.name, spec); err != nil {
			return fmt.Errorf("deploy %s: %w", rf.name, err)
		}
		deployed = append(deployed, rf.name)
		if rf.target, err = loadgen.NewHTTPTarget(f.server, rf.name, false, 64); err != nil {
			return err
		}
		fns[tf.ID] = rf
	}

	samples, start, end, err := dispatch(ctx, f, fns, arrivals, log)
	if err != nil && len(samples) == 0 {
		return err
	}
	rs := summarizeReplay(samples, fns, start, end)
	rs.print(cmd.OutOrStdout())
	if f.out != "" {
		if werr := writeReplayOutput(f.out, samples, rs, start); werr != nil {
			return werr
		}
		fmt.Fprintf(cmd.OutOrStdout(), "results in %s\n", f.out)
	}
	return err
}

// replayMemory gives a function its app's median memory, in Lambda-like
// steps, with room for the runtime itself.
func replayMemory(tf trace.Function) int {
	mb := 128
	if tf.HasMemory {
		for _, p := range tf.MemoryMB.Points {
			if p.Q >= 0.5 {
				mb = int(math.Ceil(p.V/64))*64 + 64
				break
			}
		}
	}
	return min(max(mb, 128), function.MaxMemoryMB)
}

// replayTimeout covers the function's longest recorded duration.
func replayTimeout(tf trace.Function) int {
	maxMs := 0.0
	for _, p := range tf.Duration.Points {
		maxMs = math.Max(maxMs, p.V)
	}
	return int(min(max(math.Ceil(maxMs/1000)*2+5, 10), function.MaxTimeoutSeconds))
}

// dispatch sends every arrival at its time (open loop) through the load
// generator's scheduler and records it.
func dispatch(ctx context.Context, f replayFlags, fns map[string]*replayFunction, arrivals []trace.Arrival, log io.Writer) ([]report.Sample, time.Time, time.Time, error) {
	rng := rand.New(rand.NewPCG(f.seed, f.seed^0x9e3779b97f4a7c15))
	sched := make([]loadgen.Scheduled, len(arrivals))
	for i, a := range arrivals {
		rf := fns[a.Function]
		requested := math.Max(rf.tf.Duration.Sample(rng), 0)
		if f.maxExec > 0 {
			requested = math.Min(requested, float64(f.maxExec)/float64(time.Millisecond))
		}
		ev := synthetic.Behavior{}
		if rf.tf.HasMemory {
			// Touch a share of the app's memory, bounded by the function's limit.
			ev.TouchMB = int(math.Min(rf.tf.MemoryMB.Sample(rng)/4, float64(replayMemory(rf.tf))/2))
		}
		if f.execKind == "busy" {
			ev.BusyMs = requested
		} else {
			ev.SleepMs = requested
		}
		body, err := json.Marshal(ev)
		if err != nil {
			return nil, time.Time{}, time.Time{}, err
		}
		sched[i] = loadgen.Scheduled{At: a.At, Target: rf.target, Function: rf.tf.ID, Payload: body, RequestedMs: requested}
	}
	runner := &loadgen.Runner{
		Plan: loadgen.Plan{Mode: loadgen.Trace, Schedule: sched, MaxInFlight: max(f.maxInFlight, 1),
			Observe: readSyntheticReply},
		OnProgress: replayProgress(log, len(sched)),
	}
	res, err := runner.Run(ctx)
	return res.Samples, res.Start, res.End, err
}

// readSyntheticReply records the execution time the synthetic function
// reported, which the scheduling latency is computed from.
func readSyntheticReply(_ int, resp loadgen.Response, s *report.Sample) {
	if resp.Err != nil {
		return
	}
	var r synthetic.Reply
	if err := json.Unmarshal(resp.Body, &r); err != nil {
		s.Error = "function reply is not a synthetic reply: " + err.Error()
		return
	}
	s.ReportedMs = r.ExecMs
}

// replayProgress prints a line every 5 s of the run.
func replayProgress(log io.Writer, total int) func(loadgen.Progress) {
	var next time.Duration = 5 * time.Second
	return func(p loadgen.Progress) {
		if p.Elapsed < next {
			return
		}
		next = p.Elapsed.Truncate(5*time.Second) + 5*time.Second
		fmt.Fprintf(log, "%6.0fs  answered %d of %d  sent late %d\n", p.Elapsed.Seconds(), p.Done, total, p.Late)
	}
}

// replaySummary holds the In-Vitro/Dirigent metrics.
type replaySummary struct {
	Invocations          int                 `json:"invocations"`
	Errors               int                 `json:"errors"`
	ColdFraction         float64             `json:"coldFraction"`
	SchedulingLatencyMs  stats.Dist          `json:"schedulingLatencyMs"`
	Slowdown             stats.Dist          `json:"slowdown"`
	ResponseMs           stats.Dist          `json:"responseMs"`
	DurationSeconds      float64             `json:"durationSeconds"`
	Schedule             loadgen.Schedule    `json:"schedule"`
	Functions            []replayFunctionSum `json:"functions"`
	FirstError           string              `json:"firstError,omitempty"`
	SchedulingDefinition string              `json:"schedulingLatencyDefinition"`
}

type replayFunctionSum struct {
	ID                  string     `json:"id"`
	Name                string     `json:"name"`
	Invocations         int        `json:"invocations"`
	Errors              int        `json:"errors"`
	ColdFraction        float64    `json:"coldFraction"`
	SchedulingLatencyMs stats.Dist `json:"schedulingLatencyMs"`
	Slowdown            stats.Dist `json:"slowdown"`
}

func summarizeReplay(samples []report.Sample, fns map[string]*replayFunction, start, end time.Time) replaySummary {
	base := loadgen.Summarize(samples, start, end)
	rs := replaySummary{Invocations: len(samples), Errors: base.Errors, ColdFraction: base.ColdFraction,
		ResponseMs: base.LatencyMs, DurationSeconds: base.DurationSeconds, Schedule: base.Schedule, FirstError: base.FirstError,
		SchedulingDefinition: "response time measured by the client minus the execution time the function reported"}
	type acc struct {
		n, errs, cold int
		sched, slow   []float64
	}
	per := map[string]*acc{}
	var sched, slow []float64
	for _, s := range samples {
		a := per[s.Function]
		if a == nil {
			a = &acc{}
			per[s.Function] = a
		}
		a.n++
		if s.Error != "" {
			a.errs++
			continue
		}
		if s.Cold {
			a.cold++
		}
		ms := float64(s.LatencyNs) / 1e6
		sl := math.Max(ms-s.ReportedMs, 0)
		sched, a.sched = append(sched, sl), append(a.sched, sl)
		if s.RequestedMs > 0 {
			ratio := ms / s.RequestedMs
			slow, a.slow = append(slow, ratio), append(a.slow, ratio)
		}
	}
	rs.SchedulingLatencyMs, rs.Slowdown = stats.Describe(sched), stats.Describe(slow)
	for id, a := range per {
		fs := replayFunctionSum{ID: id, Invocations: a.n, Errors: a.errs,
			SchedulingLatencyMs: stats.Describe(a.sched), Slowdown: stats.Describe(a.slow)}
		if rf := fns[id]; rf != nil {
			fs.Name = rf.name
		}
		if ok := a.n - a.errs; ok > 0 {
			fs.ColdFraction = float64(a.cold) / float64(ok)
		}
		rs.Functions = append(rs.Functions, fs)
	}
	sort.Slice(rs.Functions, func(i, j int) bool { return rs.Functions[i].Invocations > rs.Functions[j].Invocations })
	return rs
}

func (rs replaySummary) print(w io.Writer) {
	fmt.Fprintf(w, "\n%d invocations in %.1fs, %d errors, %.1f%% cold\n", rs.Invocations, rs.DurationSeconds, rs.Errors, 100*rs.ColdFraction)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tp50\tp90\tp99\tmax\t")
	fmt.Fprintf(tw, "scheduling latency (ms)\t%.2f\t%.2f\t%.2f\t%.2f\t\n", rs.SchedulingLatencyMs.P50, rs.SchedulingLatencyMs.P90, rs.SchedulingLatencyMs.P99, rs.SchedulingLatencyMs.Max)
	fmt.Fprintf(tw, "slowdown (×)\t%.2f\t%.2f\t%.2f\t%.2f\t\n", rs.Slowdown.P50, rs.Slowdown.P90, rs.Slowdown.P99, rs.Slowdown.Max)
	fmt.Fprintf(tw, "response time (ms)\t%.2f\t%.2f\t%.2f\t%.2f\t\n", rs.ResponseMs.P50, rs.ResponseMs.P90, rs.ResponseMs.P99, rs.ResponseMs.Max)
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FUNCTION\tINVOCATIONS\tERRORS\tCOLD\tSCHED p50 ms\tSCHED p99 ms\tSLOWDOWN p50\tSLOWDOWN p99")
	for _, f := range rs.Functions {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f%%\t%.2f\t%.2f\t%.2f\t%.2f\n", f.ID, f.Invocations, f.Errors, 100*f.ColdFraction,
			f.SchedulingLatencyMs.P50, f.SchedulingLatencyMs.P99, f.Slowdown.P50, f.Slowdown.P99)
	}
	tw.Flush()
	if rs.Schedule.LateRequests > 0 {
		fmt.Fprintf(w, "client fell behind schedule: %d invocations sent late, p99 %.2f ms, max %.2f ms\n",
			rs.Schedule.LateRequests, rs.Schedule.P99LagMs, rs.Schedule.MaxLagMs)
	}
	if rs.FirstError != "" {
		fmt.Fprintf(w, "first error: %s\n", rs.FirstError)
	}
}

func writeReplayOutput(dir string, samples []report.Sample, rs replaySummary, start time.Time) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	if err := writeFile(filepath.Join(dir, "invocations.csv"), func(w io.Writer) error { return report.WriteCSV(w, samples) }); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, "functions.csv"), func(w io.Writer) error {
		fmt.Fprintln(w, "function,name,invocations,errors,cold_fraction,sched_p50_ms,sched_p99_ms,slowdown_p50,slowdown_p99")
		for _, f := range rs.Functions {
			fmt.Fprintf(w, "%s,%s,%d,%d,%.4f,%.3f,%.3f,%.3f,%.3f\n", f.ID, f.Name, f.Invocations, f.Errors, f.ColdFraction,
				f.SchedulingLatencyMs.P50, f.SchedulingLatencyMs.P99, f.Slowdown.P50, f.Slowdown.P99)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := report.WriteJSON(filepath.Join(dir, "summary.json"), rs); err != nil {
		return err
	}
	var sched, slow []float64
	for _, s := range samples {
		if s.Error == "" {
			ms := float64(s.LatencyNs) / 1e6
			sched = append(sched, math.Max(ms-s.ReportedMs, 0))
			if s.RequestedMs > 0 {
				slow = append(slow, ms/s.RequestedMs)
			}
		}
	}
	if len(sched) > 0 {
		if err := writeFile(filepath.Join(dir, "scheduling-cdf.svg"), func(w io.Writer) error {
			return report.PlotCDF(w, "Scheduling latency CDF (ms)", []report.Series{{Name: "scheduling latency", Values: sched}}, true)
		}); err != nil {
			return err
		}
	}
	if len(slow) > 0 {
		if err := writeFile(filepath.Join(dir, "slowdown-cdf.svg"), func(w io.Writer) error {
			return report.PlotCDFLabeled(w, "Slowdown CDF", "slowdown (response time / requested duration)", []report.Series{{Name: "slowdown", Values: slow}}, true)
		}); err != nil {
			return err
		}
	}
	labels := make([]string, 0, len(rs.Functions))
	values := make([]float64, 0, len(rs.Functions))
	for _, f := range rs.Functions {
		labels = append(labels, f.ID)
		values = append(values, f.SchedulingLatencyMs.P99)
	}
	if len(labels) > 0 {
		if err := writeFile(filepath.Join(dir, "functions-p99.svg"), func(w io.Writer) error {
			return report.PlotBars(w, "p99 scheduling latency per function", "ms", labels, values)
		}); err != nil {
			return err
		}
	}
	return writePlots(dir, "response", "replay", samples, start)
}
