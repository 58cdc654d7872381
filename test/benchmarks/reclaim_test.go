//go:build linux

package benchmarks

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/test/harness"
)

// BenchmarkMemoryReclaim (issue 12) measures how fast a big N:1 sandbox
// gives its memory back when it shrinks, end to end through real
// `baton server --sandbox container` processes (the product path: the
// router scales the function down, the node resizes the sandbox, the
// container runtime reclaims):
//
// A Python function (testdata/reclaim) with maxScale 16, minScale 1 and a
// 2 s idle timeout gets 16 concurrent events; each lands on its own
// instance, which keeps reclaimAnonMB of anonymous memory and reads its own
// reclaimCacheMB slice of a file of its code. Code layers are EROFS files
// mounted without a loop device, so a read is cached twice, in the EROFS
// file's page cache and in the layer file's, both charged to the reader:
// each instance charges about 256 MiB, 4 GiB in all. The events all end at
// the same moment; then one client invokes the function in a loop, which
// the router packs onto one instance, so the other 15 idle out and leave
// together. Measured from the first leave: the time until the sandbox's
// own charge (memory.usage_in_bytes), the host's MemFree and MemAvailable
// are back near their values before the growth, and the remaining
// instance's latency in the second after the first leave against at rest
// (before the growth).
//
// With reclaim (the default) against --memory-reclaim=false, two servers
// in the same run, alternating, reclaimRounds rounds each. Before every
// round the slices are dropped from the page cache (those files only, with
// posix_fadvise), so that each growth charges them to the sandbox again.
//
// Anything else on the host that drops the page cache (echo 1 >
// /proc/sys/vm/drop_caches, counted in /proc/vmstat's drop_pagecache)
// during a round would take the departed instances' cache with it and
// blur the comparison: such rounds, and rounds whose growth did not charge
// the expected memory, are discarded and run again (reported).
const (
	reclaimInstances = 16
	reclaimAnonMB    = 128
	reclaimCacheMB   = 64
	reclaimRounds    = 5
	// reclaimAttempts bounds the rounds run per side, discarded ones
	// included.
	reclaimAttempts = 4 * reclaimRounds
	// reclaimGiveUp bounds each wait for memory to come back.
	reclaimGiveUp = 30 * time.Second
	// reclaimHold is how long the growth's events are held: long enough
	// for 15 cold starts on a busy host.
	reclaimHold = 8 * time.Second
	// reclaimDuring is the window after the first leave whose probes
	// count as during the scale-down: the same for both variants, and
	// longer than either's leaves and reclaim.
	reclaimDuring = time.Second
	// reclaimRestProbes is the number of at-rest invocations per round.
	reclaimRestProbes = 200
)

// meminfo returns /proc/meminfo's MemAvailable and MemFree in bytes.
func meminfo() (avail, free int64, err error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "MemAvailable":
			avail = n << 10
		case "MemFree":
			free = n << 10
		}
	}
	return avail, free, sc.Err()
}

// reclaimCode writes the function's code: app.py and data.bin, 16 slices
// of reclaimCacheMB. Each 4 KiB block starts with 64 pseudo-random bytes,
// so that the archive compresses about 60:1, under the server's zip-bomb
// ratio (100:1), and stays a few tens of MB.
func reclaimCode(b *testing.B) []byte {
	b.Helper()
	dir := b.TempDir()
	src, err := os.ReadFile(filepath.Join("testdata", "reclaim", "app.py"))
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app.py"), src, 0o644); err != nil {
		b.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "data.bin"))
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(12, 2026))
	block := make([]byte, 1<<20)
	w := bufio.NewWriterSize(f, 1<<20)
	for range reclaimInstances * reclaimCacheMB {
		for off := 0; off < len(block); off += 4096 {
			for i := 0; i < 64; i += 8 {
				v := rng.Uint64()
				for j := range 8 {
					block[off+i+j] = byte(v >> (8 * j))
				}
			}
		}
		if _, err := w.Write(block); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	code := zipDir(b, dir)
	if err := os.RemoveAll(dir); err != nil {
		b.Fatal(err)
	}
	return code
}

// evictServerData drops the data file of the server's code from the page
// cache: the files named data.bin at the root of the mounts under the
// server's data directory (the code layers) and the layer files they are
// mounted from.
func evictServerData(b *testing.B, s *harness.Server) {
	b.Helper()
	// The server's view: this process's own may be a container's (the
	// container runtime's self-test can leave a thread there).
	root := fmt.Sprintf("/proc/%d/root", s.Pid())
	mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", s.Pid()))
	if err != nil {
		b.Fatal(err)
	}
	evicted := 0
	for _, line := range strings.Split(string(mi), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || !strings.HasPrefix(f[4], s.DataDir+"/") {
			continue
		}
		data := filepath.Join(root, f[4], "data.bin")
		if _, err := os.Stat(data); err != nil {
			continue
		}
		paths := []string{data}
		// Fields after the "-" separator: fstype, source, options.
		if i := slices.Index(f, "-"); i > 0 && i+2 < len(f) && filepath.IsAbs(f[i+2]) {
			paths = append(paths, filepath.Join(root, f[i+2]))
		}
		for _, p := range paths {
			if err := fadviseDontNeed(p); err != nil {
				b.Fatalf("evict %s: %v", p, err)
			}
			evicted++
		}
	}
	if evicted == 0 {
		b.Fatalf("no code layer with data.bin is mounted under %s", s.DataDir)
	}
}

// dropPagecacheCount is /proc/vmstat's drop_pagecache: how many times the
// page cache was dropped host-wide.
func dropPagecacheCount() int64 {
	b, err := os.ReadFile("/proc/vmstat")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "drop_pagecache "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return -1
}

func fadviseDontNeed(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// sandboxMemDir is the cgroup v1 memory directory of the server's only
// sandbox, or "" where the memory controller is not there (cgroup v2).
func sandboxMemDir(b *testing.B, s *harness.Server) string {
	b.Helper()
	ids := liveSandboxes(b, s)
	if len(ids) != 1 {
		b.Fatalf("want one sandbox, the server has %v", ids)
	}
	for _, dir := range []string{"/sys/fs/cgroup/memory/baton/" + ids[0], "/sys/fs/cgroup/baton/" + ids[0]} {
		if _, err := os.Stat(dir); err == nil {
			return dir
		}
	}
	b.Fatalf("no memory cgroup for sandbox %s", ids[0])
	return ""
}

func cgUsage(dir string) int64 {
	for _, name := range []string{"memory.usage_in_bytes", "memory.current"} {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
			n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			return n
		}
	}
	return -1
}

func cgLimit(dir string) int64 {
	for _, name := range []string{"memory.limit_in_bytes", "memory.max"} {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
			n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			return n
		}
	}
	return -1
}

// cgChildren counts the sandbox's child groups (its instances and grain
// workers).
func cgChildren(dir string) int {
	entries, _ := os.ReadDir(dir)
	n := 0
	for _, e := range entries {
		if e.IsDir() {
			n++
		}
	}
	return n
}

type probeSample struct {
	at time.Time
	ms float64
}

// prober invokes the function in a loop, one request at a time.
type prober struct {
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	samples []probeSample
	errs    int
}

func startProber(hc *http.Client, url string) *prober {
	p := &prober{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			t := time.Now()
			r := post(hc, url, []byte(`{}`), false)
			p.mu.Lock()
			if r.ok() {
				p.samples = append(p.samples, probeSample{at: t, ms: msOf(r.Latency)})
			} else {
				p.errs++
			}
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *prober) finish() ([]probeSample, int) {
	close(p.stop)
	<-p.done
	return p.samples, p.errs
}

type reclaimRound struct {
	// Times from the first instance leaving until each measure is back
	// (NaN: not within reclaimGiveUp).
	availPct, availDip, free, charge, allGone float64
	// chargeAfterLast is the time from the last instance leaving until
	// the charge was back (0: back by then).
	chargeAfterLast                  float64
	dipMB, chargeMB, leftMB, limitMB float64
	// freeGainMB and availGainMB are what MemFree and MemAvailable
	// regained from the peak one reclaimDuring after the first leave:
	// less exact than the sandbox's charge (the host's other work moves
	// them too), but comparable between the variants.
	freeGainMB, availGainMB float64
	// From the server's log: the departed instances' groups drained, the
	// bytes that took back and the time the kernel took (sum, longest).
	drains                            int
	drainedMB, drainSumMS, drainMaxMS float64
	during, rest                      []float64
	probeErrs                         int
}

// drainsLogged sums the container runtime's "drained a departed
// instance's group" log lines.
func drainsLogged(log string) (n int, mb, sumMS, maxMS float64) {
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "drained a departed instance's group") {
			continue
		}
		var bytes int64
		var took time.Duration
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "reclaimed-bytes="); ok {
				bytes, _ = strconv.ParseInt(v, 10, 64)
			} else if v, ok := strings.CutPrefix(f, "took="); ok {
				took, _ = time.ParseDuration(v)
			}
		}
		n++
		mb += float64(bytes) / (1 << 20)
		sumMS += msOf(took)
		maxMS = max(maxMS, msOf(took))
	}
	return n, mb, sumMS, maxMS
}

type reclaimSide struct {
	label     string
	s         *harness.Server
	rounds    []reclaimRound
	attempts  int
	discarded []string // why
}

func BenchmarkMemoryReclaim(b *testing.B) {
	logLoad(b)
	requireContainerServer(b)
	realPython(b)
	code := reclaimCode(b)
	args := []string{"--sandbox", "container", "--max-code-bytes", strconv.Itoa(3 << 30), "--max-payload", strconv.Itoa(128 << 20)}
	sides := []*reclaimSide{
		{label: "reclaim (default)", s: harness.Start(b, harness.Options{Args: args})},
		{label: "--memory-reclaim=false", s: harness.Start(b, harness.Options{Args: append(slices.Clone(args), "--memory-reclaim=false")})},
	}
	hc := newHTTPClient(reclaimInstances + 2)
	spec := function.Spec{Runtime: function.RuntimePython, Handler: "app.handler", MemoryMB: 512,
		MinScale: 1, MaxScale: reclaimInstances, IdleTimeoutSeconds: 2}
	for _, sd := range sides {
		deploy(b, sd.s, "grow", spec, code)
		mustPost(b, hc, invokeURL(sd.s, "grow"), []byte(`{}`))
	}
	// One unmeasured round each, so that every measured round starts with
	// the remaining instance holding its own share already.
	for _, sd := range sides {
		runReclaimRound(b, hc, sd.s)
	}
	want := b.N * reclaimRounds
	for round := 0; ; round++ {
		busy := false
		for k := range sides {
			sd := sides[(k+round)%len(sides)]
			if len(sd.rounds) >= want || sd.attempts >= b.N*reclaimAttempts {
				continue
			}
			busy = true
			sd.attempts++
			rr, why := runReclaimRound(b, hc, sd.s)
			if why != "" {
				sd.discarded = append(sd.discarded, why)
				b.Logf("%s: round discarded: %s", sd.label, why)
				continue
			}
			sd.rounds = append(sd.rounds, rr)
		}
		if !busy {
			break
		}
	}
	for _, sd := range sides {
		if len(sd.rounds) < want {
			b.Fatalf("%s: %d valid rounds of %d attempts, want %d; discarded: %v", sd.label, len(sd.rounds), sd.attempts, want, sd.discarded)
		}
	}

	suppressNsOp(b)
	var rows [][]string
	for _, sd := range sides {
		// med/max of one figure over the rounds; never back counts as
		// reclaimGiveUp.
		col := func(get func(reclaimRound) float64) string {
			var v []float64
			for _, r := range sd.rounds {
				x := get(r)
				if math.IsNaN(x) {
					x = msOf(reclaimGiveUp)
				}
				v = append(v, x)
			}
			m := summarize(v)
			return f1(m.P50) + " / " + f1(m.Max)
		}
		var during, rest []float64
		errs := 0
		for _, r := range sd.rounds {
			during = append(during, r.during...)
			rest = append(rest, r.rest...)
			errs += r.probeErrs
		}
		d, re := summarize(during), summarize(rest)
		rows = append(rows, []string{sd.label, fmt.Sprintf("%d (+%d discarded)", len(sd.rounds), len(sd.discarded)),
			col(func(r reclaimRound) float64 { return r.chargeMB }), col(func(r reclaimRound) float64 { return r.dipMB }),
			col(func(r reclaimRound) float64 { return r.allGone }),
			col(func(r reclaimRound) float64 { return r.charge }), col(func(r reclaimRound) float64 { return r.chargeAfterLast }),
			col(func(r reclaimRound) float64 { return r.free }),
			col(func(r reclaimRound) float64 { return r.freeGainMB }), col(func(r reclaimRound) float64 { return r.availGainMB }),
			col(func(r reclaimRound) float64 { return r.availDip }), col(func(r reclaimRound) float64 { return r.availPct }),
			col(func(r reclaimRound) float64 { return r.leftMB }), col(func(r reclaimRound) float64 { return r.limitMB }),
			col(func(r reclaimRound) float64 { return r.drainedMB }), col(func(r reclaimRound) float64 { return r.drainSumMS }),
			col(func(r reclaimRound) float64 { return r.drainMaxMS }),
			fmt.Sprintf("%d: %s / %s", re.N, f2(re.P50), f2(re.P99)), fmt.Sprintf("%d: %s / %s", d.N, f2(d.P50), f2(d.P99)),
			strconv.Itoa(errs)})
		prefix := "reclaim-"
		if sd != sides[0] {
			prefix = "noreclaim-"
		}
		med := func(get func(reclaimRound) float64) float64 {
			var v []float64
			for _, r := range sd.rounds {
				if x := get(r); !math.IsNaN(x) {
					v = append(v, x)
				} else {
					v = append(v, msOf(reclaimGiveUp))
				}
			}
			return summarize(v).P50
		}
		b.ReportMetric(med(func(r reclaimRound) float64 { return r.charge }), prefix+"charge-back-ms")
		b.ReportMetric(med(func(r reclaimRound) float64 { return r.free }), prefix+"free-back-ms")
		b.ReportMetric(med(func(r reclaimRound) float64 { return r.freeGainMB }), prefix+"free-gain-1s-MiB")
		b.ReportMetric(med(func(r reclaimRound) float64 { return r.availDip }), prefix+"avail-back-ms")
		b.ReportMetric(d.P99, prefix+"during-p99-ms")
		b.ReportMetric(re.P99, prefix+"rest-p99-ms")
	}
	b.Logf("%d instances × (%d MiB anonymous + %d MiB of a code file, cached twice), then scaled to one. Median / max over the rounds; "+
		"times in ms from the first instance leaving unless said (%d s: never back); \"back\" = within 5 %% of the growth "+
		"(charge, MemFree, MemAvailable) or MemAvailable ≥ 95 %% of its value before; MiB at the peak (charge, MemAvailable dip) "+
		"and once settled (left, limit); drains from the server's log (MiB, kernel ms summed and longest); latency of the "+
		"remaining instance, n: p50 / p99 ms, at rest (before the growth) and in the %s after the first leave:%s",
		reclaimInstances, reclaimAnonMB, reclaimCacheMB, int(reclaimGiveUp/time.Second), reclaimDuring, table(
			[]string{"variant", "rounds", "charge MiB", "MemAvail dip MiB", "all gone", "charge back", "charge back after last leave",
				"MemFree back", "MemFree +MiB at 1 s", "MemAvail +MiB at 1 s", "MemAvail back", "MemAvail ≥95 %", "left MiB", "limit MiB", "drained MiB", "drain ms sum", "drain ms longest",
				"at rest", "during", "probe errors"}, rows))
	b.Logf("at end: %s", loadAvg())
}

// runReclaimRound grows the server's sandbox to 16 instances, lets it
// shrink to one and measures; why says why the round does not count.
func runReclaimRound(b *testing.B, hc *http.Client, s *harness.Server) (rr reclaimRound, why string) {
	b.Helper()
	url := invokeURL(s, "grow")
	drops := dropPagecacheCount()
	evictServerData(b, s)
	// At rest: the one instance left from before.
	for range reclaimRestProbes {
		rr.rest = append(rr.rest, msOf(mustPost(b, hc, url, []byte(`{}`)).Latency))
	}
	dir := sandboxMemDir(b, s)
	restChildren := cgChildren(dir)
	logBefore := len(s.Logs())
	// The sandbox's charge and the host's memory before the growth: let
	// the last probes' effects settle first.
	time.Sleep(200 * time.Millisecond)
	availBefore, freeBefore, err := meminfo()
	if err != nil {
		b.Fatal(err)
	}
	chargeBefore := cgUsage(dir)

	// Growth: one event per slot, each held until the same moment, so
	// that each gets an instance and all go idle together.
	until := float64(time.Now().Add(reclaimHold).UnixNano()) / 1e9
	var wg sync.WaitGroup
	pids := make([]string, reclaimInstances)
	for i := range reclaimInstances {
		wg.Go(func() {
			ev, _ := json.Marshal(map[string]any{"slot": i, "anon_mb": reclaimAnonMB, "cache_mb": reclaimCacheMB, "until": until})
			r := post(hc, url, ev, false)
			if !r.ok() {
				b.Errorf("grow slot %d: %s", i, r.describe())
				return
			}
			var out struct {
				Read int64 `json:"read"`
				Pid  int   `json:"pid"`
			}
			if err := json.Unmarshal(r.Body, &out); err != nil || out.Read != reclaimCacheMB<<20 {
				b.Errorf("grow slot %d: %s (%v)", i, bytes.TrimSpace(r.Body), err)
			}
			pids[i] = strconv.Itoa(out.Pid) + "@" + r.Instance
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	slices.Sort(pids)
	if n := len(slices.Compact(slices.Clone(pids))); n != reclaimInstances {
		b.Fatalf("the %d events ran on %d instances, want one each: %v", reclaimInstances, n, pids)
	}
	availGrown, freeGrown, _ := meminfo()
	chargeGrown := cgUsage(dir)
	children := cgChildren(dir)
	// Each instance's slice is cached twice (see above).
	if wantCharge := int64(reclaimInstances*(reclaimAnonMB+2*reclaimCacheMB)) << 20; chargeGrown-chargeBefore < wantCharge*9/10 {
		why = fmt.Sprintf("the growth charged %d MiB, want about %d MiB (page cache dropped meanwhile?)", (chargeGrown-chargeBefore)>>20, wantCharge>>20)
	}
	rr.dipMB = float64(availBefore-availGrown) / (1 << 20)
	rr.chargeMB = float64(chargeGrown) / (1 << 20)

	// Shrink: the probe keeps one instance busy, the rest idle out.
	p := startProber(hc, url)
	var t0 time.Time
	nan := math.NaN
	rr.availPct, rr.availDip, rr.free, rr.charge, rr.allGone = nan(), nan(), nan(), nan(), nan()
	deadline := time.Now().Add(reclaimGiveUp + 10*time.Second)
	var settled time.Time
	gained := false
	gain := func() {
		if avail, free, err := meminfo(); err == nil && !gained {
			rr.freeGainMB, rr.availGainMB, gained = float64(free-freeGrown)/(1<<20), float64(avail-availGrown)/(1<<20), true
		}
	}
	for time.Now().Before(deadline) {
		now := time.Now()
		n := cgChildren(dir)
		if t0.IsZero() {
			if n < children {
				t0 = now
			}
			time.Sleep(time.Millisecond)
			continue
		}
		since := msOf(now.Sub(t0))
		if now.Sub(t0) >= reclaimDuring {
			gain()
		}
		avail, free, _ := meminfo()
		charge := cgUsage(dir)
		set := func(v *float64, ok bool) {
			if ok && math.IsNaN(*v) {
				*v = since
			}
		}
		set(&rr.allGone, n <= restChildren)
		set(&rr.availPct, float64(avail) >= 0.95*float64(availBefore))
		set(&rr.availDip, float64(availBefore-avail) <= 0.05*float64(availBefore-availGrown))
		set(&rr.free, float64(freeBefore-free) <= 0.05*float64(freeBefore-freeGrown))
		set(&rr.charge, float64(charge-chargeBefore) <= 0.05*float64(chargeGrown-chargeBefore))
		done := !slices.ContainsFunc([]float64{rr.allGone, rr.availPct, rr.availDip, rr.free, rr.charge}, math.IsNaN)
		if done && settled.IsZero() {
			settled = now
		}
		// Every measure is back, or the instances are gone and no more is
		// coming back: the scale-down is over.
		if !settled.IsZero() || (!math.IsNaN(rr.allGone) && since > msOf(reclaimGiveUp)) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if t0.IsZero() {
		b.Fatalf("no instance left within %s", reclaimGiveUp+10*time.Second)
	}
	// Let the limit settle (the reclaimer works after the last leave).
	time.Sleep(time.Until(t0.Add(reclaimDuring)))
	gain()
	time.Sleep(500 * time.Millisecond)
	samples, errs := p.finish()
	rr.probeErrs = errs
	for _, s := range samples {
		if !s.at.Before(t0) && s.at.Before(t0.Add(reclaimDuring)) {
			rr.during = append(rr.during, s.ms)
		}
	}
	if !math.IsNaN(rr.charge) && !math.IsNaN(rr.allGone) {
		rr.chargeAfterLast = max(rr.charge-rr.allGone, 0)
	} else {
		rr.chargeAfterLast = math.NaN()
	}
	rr.drains, rr.drainedMB, rr.drainSumMS, rr.drainMaxMS = drainsLogged(s.Logs()[logBefore:])
	rr.leftMB = float64(cgUsage(dir)) / (1 << 20)
	rr.limitMB = float64(cgLimit(dir)) / (1 << 20)
	if d := dropPagecacheCount(); why == "" && d != drops {
		why = fmt.Sprintf("the host's page cache was dropped %d times during the round (drop_pagecache)", d-drops)
	}
	b.Logf("round (%d child groups at the peak, %d after): before avail %d MiB free %d MiB charge %d MiB; grown dip %.0f MiB, charge %.0f MiB; back after (ms) avail≥95%% %.0f, avail dip %.0f, free %.0f, charge %.0f, all gone %.0f; left %.0f MiB, limit %.0f MiB; %d probes during; drained %d groups, %.0f MiB in %.1f ms (longest %.1f ms); at 1 s MemFree +%.0f MiB, MemAvailable +%.0f MiB",
		children, cgChildren(dir), availBefore>>20, freeBefore>>20, chargeBefore>>20, rr.dipMB, rr.chargeMB, rr.availPct, rr.availDip, rr.free, rr.charge, rr.allGone, rr.leftMB, rr.limitMB, len(rr.during),
		rr.drains, rr.drainedMB, rr.drainSumMS, rr.drainMaxMS, rr.freeGainMB, rr.availGainMB)
	return rr, why
}
