package loadgen

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/baton-faas/baton/internal/bench/report"
	"github.com/baton-faas/baton/internal/bench/stats"
)

// Schedule says how well the client kept its schedule: the lag of a
// request is how late its sender took it, the client's own lateness and
// not the server's. LateRequests are those later than LateThreshold.
type Schedule struct {
	LateRequests    int     `json:"lateRequests"`
	LateFraction    float64 `json:"lateFraction"`
	LateThresholdMs float64 `json:"lateThresholdMs"`
	MeanLagMs       float64 `json:"meanLagMs"`
	P50LagMs        float64 `json:"p50LagMs"`
	P99LagMs        float64 `json:"p99LagMs"`
	MaxLagMs        float64 `json:"maxLagMs"`
}

// Summary is the JSON summary of a run.
type Summary struct {
	Function        string         `json:"function"`
	Mode            string         `json:"mode"`
	Config          any            `json:"config,omitempty"`
	Count           int            `json:"count"`
	Errors          int            `json:"errors"`
	ErrorRate       float64        `json:"errorRate"`
	Statuses        map[string]int `json:"statuses"`
	LatencyMs       stats.Dist     `json:"latencyMs"`
	WarmLatencyMs   stats.Dist     `json:"warmLatencyMs"`
	ColdLatencyMs   stats.Dist     `json:"coldLatencyMs"`
	WaitMs          stats.Dist     `json:"waitMs"`
	InitMs          stats.Dist     `json:"initMs"` // cold requests only
	ExecMs          stats.Dist     `json:"execMs"`
	ColdFraction    float64        `json:"coldFraction"`
	Instances       int            `json:"instances"`
	DurationSeconds float64        `json:"durationSeconds"`
	ThroughputRPS   float64        `json:"throughputRps"` // successful responses per second
	Schedule        Schedule       `json:"schedule"`
	// ScaleUpMs is the time from the start of the run until the last of
	// the distinct instances began executing its first request (how long
	// the platform took to bring up all instances that served the run).
	ScaleUpMs  float64      `json:"scaleUpMs"`
	Hops       []HopSummary `json:"hops,omitempty"`
	FirstError string       `json:"firstError,omitempty"`
	// Baseline is the same load against a plain HTTP server on loopback,
	// measured in the same run; Overhead compares the two.
	Baseline *Summary  `json:"baseline,omitempty"`
	Overhead *Overhead `json:"overheadMs,omitempty"`
}

// Overhead is the latency Baton adds over the baseline, per percentile.
type Overhead struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	// ThroughputRatio is Baton's throughput over the baseline's.
	ThroughputRatio float64 `json:"throughputRatio"`
}

// Compare sets the baseline and the overhead against it.
func (s *Summary) Compare(base Summary) {
	s.Baseline = &base
	s.Overhead = &Overhead{
		P50: s.LatencyMs.P50 - base.LatencyMs.P50,
		P90: s.LatencyMs.P90 - base.LatencyMs.P90,
		P99: s.LatencyMs.P99 - base.LatencyMs.P99,
	}
	if base.ThroughputRPS > 0 {
		s.Overhead.ThroughputRatio = s.ThroughputRPS / base.ThroughputRPS
	}
}

// HopSummary describes one hop of a chain.
type HopSummary struct {
	Hop      int        `json:"hop"`
	Function string     `json:"function"`
	ExecMs   stats.Dist `json:"execMs"`
	CallMs   stats.Dist `json:"callMs"`
	// OverheadMs is the time the caller waited on this hop minus the
	// hop's own execution: the cost of the hand-off through Baton.
	OverheadMs stats.Dist `json:"overheadMs"`
}

// Summarize computes the summary of samples recorded between start and end.
func Summarize(samples []report.Sample, start, end time.Time) Summary {
	s := Summary{Count: len(samples), Statuses: map[string]int{}}
	var all, warm, cold, wait, init, exec, lags []float64
	firstServed := map[string]int64{} // instance -> end of its first answer (ns since start)
	ok := 0
	for _, x := range samples {
		ms := float64(x.LatencyNs) / 1e6
		all = append(all, ms)
		lags = append(lags, float64(x.LagNs)/1e6)
		if Late(time.Duration(x.LagNs)) {
			s.Schedule.LateRequests++
		}
		s.Statuses[strconv.Itoa(x.Status)]++
		if x.Error != "" {
			s.Errors++
			if s.FirstError == "" {
				s.FirstError = x.Error
			}
			continue
		}
		ok++
		if x.Instance != "" {
			// When execution began: the answer's arrival minus the
			// execution time the server reported.
			began := x.StartNs + x.LatencyNs - int64(x.ExecMs*1e6) - start.UnixNano()
			if t, seen := firstServed[x.Instance]; !seen || began < t {
				firstServed[x.Instance] = began
			}
		}
		wait = append(wait, x.WaitMs)
		exec = append(exec, x.ExecMs)
		if x.Cold {
			cold = append(cold, ms)
			init = append(init, x.InitMs)
		} else {
			warm = append(warm, ms)
		}
	}
	s.LatencyMs, s.WarmLatencyMs, s.ColdLatencyMs = stats.Describe(all), stats.Describe(warm), stats.Describe(cold)
	s.WaitMs, s.InitMs, s.ExecMs = stats.Describe(wait), stats.Describe(init), stats.Describe(exec)
	s.Instances = len(firstServed)
	for _, t := range firstServed {
		s.ScaleUpMs = max(s.ScaleUpMs, float64(t)/1e6)
	}
	if s.Count > 0 {
		s.ErrorRate = float64(s.Errors) / float64(s.Count)
		s.Schedule.LateFraction = float64(s.Schedule.LateRequests) / float64(s.Count)
	}
	if ok > 0 {
		s.ColdFraction = float64(len(cold)) / float64(ok)
	}
	d := stats.Describe(lags)
	s.Schedule.MeanLagMs, s.Schedule.P50LagMs, s.Schedule.P99LagMs, s.Schedule.MaxLagMs = d.Mean, d.P50, d.P99, d.Max
	s.Schedule.LateThresholdMs = float64(LateThreshold) / 1e6
	s.DurationSeconds = end.Sub(start).Seconds()
	if s.DurationSeconds > 0 {
		s.ThroughputRPS = float64(ok) / s.DurationSeconds
	}
	return s
}

// Print writes a human summary.
func (s Summary) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "\n%s (%s): %d requests in %.1fs, %d errors (%.2f%%), %.1f req/s, %.1f%% cold, %d instances (all serving %.0f ms after the start)\n",
		s.Function, s.Mode, s.Count, s.DurationSeconds, s.Errors, 100*s.ErrorRate, s.ThroughputRPS, 100*s.ColdFraction, s.Instances, s.ScaleUpMs)
	fmt.Fprintln(tw, "ms\tcount\tp50\tp90\tp99\tp99.9\tmax\tp99/p50\t")
	row := func(name string, d stats.Dist) {
		if d.Count == 0 {
			return
		}
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f\t\n", name, d.Count, d.P50, d.P90, d.P99, d.P999, d.Max, d.TailRatio)
	}
	row("latency", s.LatencyMs)
	row("warm", s.WarmLatencyMs)
	row("cold", s.ColdLatencyMs)
	row("wait", s.WaitMs)
	row("init (cold)", s.InitMs)
	row("exec", s.ExecMs)
	for _, h := range s.Hops {
		row(fmt.Sprintf("hop %d exec", h.Hop), h.ExecMs)
		row(fmt.Sprintf("hop %d hand-off", h.Hop), h.OverheadMs)
	}
	tw.Flush()
	if b := s.Baseline; b != nil {
		fmt.Fprintf(w, "baseline (plain HTTP on loopback, same load, same run): p50 %.3f  p90 %.3f  p99 %.3f ms, %.1f req/s\n",
			b.LatencyMs.P50, b.LatencyMs.P90, b.LatencyMs.P99, b.ThroughputRPS)
		fmt.Fprintf(w, "Baton's overhead: p50 +%.3f  p90 +%.3f  p99 +%.3f ms, throughput ×%.2f of baseline\n",
			s.Overhead.P50, s.Overhead.P90, s.Overhead.P99, s.Overhead.ThroughputRatio)
	}
	if sc := s.Schedule; s.Mode == string(Open) || s.Mode == string(Burst) {
		// Scheduled modes always show the client's own lateness, so a
		// reader can tell that the client was not what got measured.
		fmt.Fprintf(w, "client lateness (how late senders took requests, not the server): p50 %.3f  p99 %.3f  max %.3f ms; %d requests (%.2f%%) more than %.1f ms late\n",
			sc.P50LagMs, sc.P99LagMs, sc.MaxLagMs, sc.LateRequests, 100*sc.LateFraction, sc.LateThresholdMs)
		if b := s.Baseline; b != nil {
			fmt.Fprintf(w, "baseline's client lateness: p50 %.3f  p99 %.3f  max %.3f ms; %.2f%% more than %.1f ms late\n",
				b.Schedule.P50LagMs, b.Schedule.P99LagMs, b.Schedule.MaxLagMs, 100*b.Schedule.LateFraction, b.Schedule.LateThresholdMs)
		}
	} else if sc.LateRequests > 0 {
		fmt.Fprintf(w, "client fell behind schedule: %d requests (%.1f%%) sent late, mean %.2f ms, p99 %.2f ms, max %.2f ms (latency is measured from the intended send time)\n",
			sc.LateRequests, 100*sc.LateFraction, sc.MeanLagMs, sc.P99LagMs, sc.MaxLagMs)
	}
	if s.Mode == string(Warm) {
		fmt.Fprintf(w, "cold requests while measuring: %d (warm mode brought the instances up first; want 0)\n", s.ColdLatencyMs.Count)
	}
	if s.Errors > 0 {
		codes := make([]string, 0, len(s.Statuses))
		for c := range s.Statuses {
			codes = append(codes, c)
		}
		sort.Strings(codes)
		fmt.Fprintf(w, "statuses:")
		for _, c := range codes {
			fmt.Fprintf(w, " %s×%d", c, s.Statuses[c])
		}
		fmt.Fprintf(w, "\nfirst error: %s\n", s.FirstError)
	}
}
