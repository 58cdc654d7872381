//go:build linux && cgo

package container

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer/exeseal"

	"github.com/baton-faas/baton/internal/sandbox"
)

// Benchmarks of the container runtime, with a baseline from the same run:
//
//	sudo go test -run '^$' -bench . -benchtime 30x ./internal/sandbox/container/
//
// Each reports the median and 99th percentile of its operation.

// BenchmarkCreate measures Create (overlay root, container, reaper running,
// ready for processes); Destroy is measured apart. Each iteration also
// creates a sandbox whose reaper is the test binary itself (the way
// before baton-reaper), as an interleaved baseline ("self-").
func BenchmarkCreate(b *testing.B) {
	r := newRuntime(b)
	rSelf := newRuntimeWith(b, "")
	spec := testSpec(b, "")
	var create, destroy, selfCreate, selfDestroy []time.Duration
	for i := 0; b.Loop(); i++ {
		for k, rt := range []*Runtime{r, rSelf} {
			spec.ID = fmt.Sprintf("bench-%d-%d", i, k)
			t0 := time.Now()
			sb, err := rt.Create(context.Background(), spec)
			if err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if err := sb.Destroy(context.Background()); err != nil {
				b.Fatal(err)
			}
			if k == 0 {
				create = append(create, t1.Sub(t0))
				destroy = append(destroy, time.Since(t1))
			} else {
				selfCreate = append(selfCreate, t1.Sub(t0))
				selfDestroy = append(selfDestroy, time.Since(t1))
			}
		}
	}
	report(b, "create", create)
	report(b, "destroy", destroy)
	report(b, "self-create", selfCreate)
	report(b, "self-destroy", selfDestroy)
}

// BenchmarkExec measures starting /usr/bin/true in a running sandbox and
// waiting for it: through the sandbox's reaper (the default with
// baton-reaper) and, interleaved as the same run's baseline, through
// libcontainer's re-exec of the test binary ("libcontainer-");
// BenchmarkExecHostBaseline does the same on the host without any sandbox.
func BenchmarkExec(b *testing.B) {
	requireContainers(b)
	if reaperPath == "" {
		b.Skip("baton-reaper could not be built")
	}
	r := newRuntime(b)
	state := filepath.Join(b.TempDir(), "state")
	rLC, err := New(Options{StateDir: state, ReaperPath: reaperPath, LibcontainerExec: true})
	if err != nil {
		b.Fatal(err)
	}
	sb := create(b, r, testSpec(b, "bench-exec"))
	sbLC := create(b, rLC, testSpec(b, "bench-exec-lc"))
	var d, dLC []time.Duration
	for b.Loop() {
		for _, s := range []*Sandbox{sb, sbLC} {
			t0 := time.Now()
			p, err := s.Start(context.Background(), sandbox.ProcessSpec{Args: []string{"/usr/bin/true"}})
			if err != nil {
				b.Fatal(err)
			}
			if st, err := p.Wait(); err != nil || st.Code != 0 {
				b.Fatal(st, err)
			}
			if s == sb {
				d = append(d, time.Since(t0))
			} else {
				dLC = append(dLC, time.Since(t0))
			}
		}
	}
	report(b, "exec", d)
	report(b, "libcontainer-exec", dLC)
}

// BenchmarkCloneSelfExe measures what libcontainer does first for every
// process it starts: a sealed clone of the running executable
// (exeseal.CloneSelfExe: a private overlay mount where it can make one, a
// memfd copy of the whole binary otherwise), and its release.
func BenchmarkCloneSelfExe(b *testing.B) {
	requireContainers(b)
	dir := b.TempDir()
	var d []time.Duration
	for b.Loop() {
		t0 := time.Now()
		f, err := exeseal.CloneSelfExe(dir)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
		d = append(d, time.Since(t0))
	}
	report(b, "clone", d)
}

func BenchmarkExecHostBaseline(b *testing.B) {
	var d []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := exec.Command("/usr/bin/true").Run(); err != nil {
			b.Fatal(err)
		}
		d = append(d, time.Since(t0))
	}
	report(b, "exec", d)
}

func report(b *testing.B, what string, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	pct := func(p float64) float64 {
		return float64(d[min(len(d)-1, int(p*float64(len(d))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), what+"-p50-ms")
	b.ReportMetric(pct(0.99), what+"-p99-ms")
}
