package benchmarks

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/test/harness"
)

// prefetchStarts is how many cold starts each variant gets per mode
// (BATON_PREFETCH_STARTS overrides it).
func prefetchStarts() int {
	if n, err := strconv.Atoi(os.Getenv("BATON_PREFETCH_STARTS")); err == nil && n > 0 {
		return n
	}
	return 12
}

// BenchmarkPrefetch measures REAP's working-set prefetch on container
// sandboxes: cold starts of a Python function with a realistic import set
// and of a Node function bundling a few MB of its own modules, each
// deployed twice with the same code, with prefetch (the default) and with
// prefetch: false (the baseline), measured alternately in the same run.
// Every sample stops the function's instances (its sandbox goes with the
// last one) and, in the "dropped" mode, drops the page cache
// (echo 1 > /proc/sys/vm/drop_caches) before the start; in the "cached"
// mode it does not, to show that prefetch costs nothing then. Reported per
// variant: the client's latency of the cold request and the start's init
// (Server-Timing), the instance's major page faults (Python: its grain
// worker's, which imported the code, plus its own; Node: the process's),
// the bytes the server (the prefetch included) and the instance read from
// storage (/proc/PID/io), and the bytes the host's disks read during the
// request (every process's).
func BenchmarkPrefetch(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("dropping the page cache and container sandboxes need root")
	}
	logLoad(b)
	suppressNsOp(b)
	s := harness.Start(b, harness.Options{Args: []string{"--sandbox", "container"}})
	nodeCode := nodeBundle(b)
	for _, rt := range []struct {
		name, runtime, handler, cmd string
		code                        []byte
	}{
		{"python", function.RuntimePython, "app.handler", "python3", zipDir(b, filepath.Join("testdata", "prefetch", "python"))},
		{"node", function.RuntimeNode, "index.handler", "node", nodeCode},
	} {
		b.Run(rt.name, func(b *testing.B) {
			requireCommand(b, rt.cmd)
			for range b.N {
				measurePrefetch(b, s, rt.name, function.Spec{Runtime: rt.runtime, Handler: rt.handler, MaxScale: 1, IdleTimeoutSeconds: 3600}, rt.code)
			}
		})
	}
}

// prefetchSample is one cold start.
type prefetchSample struct {
	latency, init float64
	majflt        float64
	// readMB: what the host's disks read during the request (every
	// process's, other benchmarks' included); ownMB: what the server
	// (prefetch included) and the instance read from storage.
	readMB, ownMB float64
}

func measurePrefetch(b *testing.B, s *harness.Server, rt string, spec function.Spec, code []byte) {
	on, off := "reap-"+rt, "reap-"+rt+"-off"
	deploy(b, s, on, spec, code)
	no := false
	spec.Prefetch = &no
	deploy(b, s, off, spec, code)
	hc := newHTTPClient(1)
	// The first cold start of each records (on) or builds the code layer
	// (both); not measured.
	for _, name := range []string{on, off} {
		stopInstances(b, s, on, off)
		dropPageCache(b)
		mustPost(b, hc, invokeURL(s, name), warmPayload)
	}
	recorded := waitWorkingSet(b, s, on, func(ws workingSetView) bool { return ws.Recorded })
	b.Logf("%s: working set %s (%d files)", rt, recorded.Summary, recorded.Files)

	n := prefetchStarts()
	samples := map[string][]prefetchSample{}
	for _, mode := range []string{"dropped", "cached"} {
		for i := range n {
			// Alternate which variant goes first, so that neither
			// always follows the other.
			order := []string{off, on}
			if i%2 == 1 {
				order = []string{on, off}
			}
			for _, name := range order {
				stopInstances(b, s, on, off)
				if mode == "dropped" {
					dropPageCache(b)
				}
				before, serverBefore := diskReadBytes(), procReadBytes(s.Pid())
				r := mustPost(b, hc, invokeURL(s, name), warmPayload)
				read, serverRead := diskReadBytes()-before, procReadBytes(s.Pid())-serverBefore
				if !r.Cold {
					b.Fatalf("%s %s sample %d was not a cold start", mode, name, i)
				}
				var out struct{ Majflt, ParentMajflt, ReadBytes float64 }
				if err := json.Unmarshal(r.Body, &out); err != nil {
					b.Fatalf("%s: body %q: %v", name, r.Body, err)
				}
				key := mode + " " + strings.TrimPrefix(name, "reap-"+rt)
				samples[key] = append(samples[key], prefetchSample{
					latency: msOf(r.Latency), init: r.Init, majflt: out.Majflt + max(out.ParentMajflt, 0), readMB: float64(read) / (1 << 20),
					ownMB: (float64(serverRead) + out.ReadBytes) / (1 << 20),
				})
			}
		}
	}
	stopInstances(b, s, on, off) // the next runtime's waits see no process of these
	ws := waitWorkingSet(b, s, on, func(workingSetView) bool { return true })
	if ws.Prefetches < int64(2*n) {
		b.Errorf("%s: %d prefetches counted, want at least %d (every measured start of %s)", rt, ws.Prefetches, 2*n, on)
	}

	var rows [][]string
	med := map[string]prefetchSample{}
	for _, key := range []string{"dropped -off", "dropped ", "cached -off", "cached "} {
		ss := samples[key]
		lat, ini, flt, rd, own := make([]float64, len(ss)), make([]float64, len(ss)), make([]float64, len(ss)), make([]float64, len(ss)), make([]float64, len(ss))
		for i, x := range ss {
			lat[i], ini[i], flt[i], rd[i], own[i] = x.latency, x.init, x.majflt, x.readMB, x.ownMB
		}
		l := summarize(lat)
		m := prefetchSample{latency: l.P50, init: summarize(ini).P50, majflt: summarize(flt).P50, readMB: summarize(rd).P50, ownMB: summarize(own).P50}
		med[key] = m
		label := strings.Replace(key, " -off", " off", 1)
		if !strings.HasSuffix(label, " off") {
			label += "on"
		}
		rows = append(rows, append([]string{label}, append(l.cells(), f2(m.init), f2(summarize(ini).P99), f1(m.majflt), f1(summarize(flt).P99), f1(m.ownMB), f1(m.readMB))...))
		metric := strings.ReplaceAll(label, " ", "-")
		b.ReportMetric(l.P50, metric+"-p50-ms")
		b.ReportMetric(l.P99, metric+"-p99-ms")
		b.ReportMetric(m.majflt, metric+"-majflt")
		b.ReportMetric(m.readMB, metric+"-disk-MB")
		b.ReportMetric(m.ownMB, metric+"-own-MB")
	}
	b.Logf("%s (%s):%s", rt, loadAvg(), table([]string{"mode/prefetch", "n", "p50", "p90", "p99", "max", "init-p50", "init-p99", "majflt-p50", "majflt-p99", "own-MB-p50", "disk-MB-p50"}, rows))
	if off, on := med["dropped -off"], med["dropped "]; on.latency > 0 && off.majflt > 0 {
		b.ReportMetric(off.latency/on.latency, "dropped-speedup-x")
		b.ReportMetric(100*(1-on.majflt/off.majflt), "dropped-fewer-majflt-%")
	}
	if off, on := med["cached -off"], med["cached "]; on.latency > 0 {
		b.ReportMetric(off.latency/on.latency, "cached-speedup-x")
	}
}

// workingSetView is the part of GET /v1/functions/{name} the benchmark
// reads.
type workingSetView struct {
	Summary    string
	Recorded   bool
	Files      int
	Prefetches int64
}

func waitWorkingSet(b *testing.B, s *harness.Server, name string, ok func(workingSetView) bool) workingSetView {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		v, err := s.Client.Get(ctx, name)
		cancel()
		if err != nil {
			b.Fatalf("get %s: %v", name, err)
		}
		if v.WorkingSet != nil {
			ws := workingSetView{Summary: v.WorkingSet.Summary, Recorded: v.WorkingSet.Recorded, Files: v.WorkingSet.Files, Prefetches: v.WorkingSet.Prefetches}
			if ok(ws) {
				return ws
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: working set not as expected after a minute: %+v", name, v.WorkingSet)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stopInstances stops the functions' instances and waits until the server
// has no process left, so that the next request is a cold start in a new
// sandbox.
func stopInstances(b *testing.B, s *harness.Server, names ...string) {
	b.Helper()
	for _, name := range names {
		stopFunctionInstances(b, s, name)
	}
	waitNoProcesses(b, s)
}

func stopFunctionInstances(b *testing.B, s *harness.Server, name string) {
	b.Helper()
	req, err := http.NewRequest(http.MethodDelete, s.URL+"/v1/functions/"+name+"/instances", nil)
	if err != nil {
		b.Fatal(err)
	}
	for k, v := range s.AuthHeader() {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatalf("stop instances of %s: %v", name, err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b.Fatalf("stop instances of %s: HTTP %d", name, res.StatusCode)
	}
}

// dropPageCache writes back dirty pages and drops the clean page cache
// (echo 1 > /proc/sys/vm/drop_caches: dentries and inodes stay).
func dropPageCache(b *testing.B) {
	b.Helper()
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0); err != nil {
		b.Fatalf("drop the page cache: %v", err)
	}
}

// diskReadBytes sums what the host's block devices have read.
func diskReadBytes() int64 {
	devs, _ := filepath.Glob("/sys/block/*/stat")
	var total int64
	for _, p := range devs {
		if strings.Contains(p, "/loop") || strings.Contains(p, "/ram") || strings.Contains(p, "/zram") {
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		f := strings.Fields(string(data))
		if len(f) < 3 {
			continue
		}
		sectors, _ := strconv.ParseInt(f[2], 10, 64)
		total += sectors * 512
	}
	return total
}

// procReadBytes is what a process has read from storage (read_bytes of
// /proc/PID/io).
func procReadBytes(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "read_bytes:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// nodeBundle is testdata/prefetch/node with lib/ generated: 48 modules of
// about 80 KiB each (functions and tables a bundler would emit), so that
// the function's own code is a few MB read at init.
func nodeBundle(b *testing.B) []byte {
	b.Helper()
	dir := b.TempDir()
	src, err := os.ReadFile(filepath.Join("testdata", "prefetch", "node", "index.js"))
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.js"), src, 0o644); err != nil {
		b.Fatal(err)
	}
	lib := filepath.Join(dir, "lib")
	if err := os.Mkdir(lib, 0o755); err != nil {
		b.Fatal(err)
	}
	for m := range 48 {
		var sb strings.Builder
		fmt.Fprintf(&sb, "// generated module %d\n'use strict';\n", m)
		for f := range 400 {
			fmt.Fprintf(&sb, "function f%d_%d(x) {\n  const table = [%s];\n  let acc = %d;\n  for (const v of table) acc = (acc * 31 + v + x) %% 1000003;\n  return acc;\n}\n",
				m, f, tableLiteral(m, f), f)
		}
		fmt.Fprintf(&sb, "exports.weight = () => f%d_0(1) + f%d_399(2);\n", m, m)
		if err := os.WriteFile(filepath.Join(lib, fmt.Sprintf("mod%02d.js", m)), []byte(sb.String()), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return zipDir(b, dir)
}

func tableLiteral(m, f int) string {
	var sb strings.Builder
	for i := range 24 {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(strconv.Itoa((m*7919 + f*104729 + i*1299709) % 99991))
	}
	return sb.String()
}
