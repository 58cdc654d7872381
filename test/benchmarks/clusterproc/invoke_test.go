package clusterproc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/bench/stats"
	"github.com/baton-faas/baton/internal/function"
)

// BenchmarkTransferInvokeNetns is test/benchmarks' BenchmarkTransferInvoke
// in a cluster: one controller and two workers (process sandboxes, real
// Python) on netns hosts, the caller on one worker and the callee on the
// other (memory reservations force the spread), so every call crosses the
// virtual network. Two ways, alternating, in the same run:
//
//   - baton: baton.invoke from the worker: the call over the global bus
//     (JetStream) to the controller that serves the callee, the payload
//     above the 256 KiB threshold pulled by the callee's worker from the
//     caller's;
//   - http: urllib to the controller's HTTP invoke route with the API
//     token, the bytes through the controller.
//
// Sizes 16 B (the call's own cost), 1 MB and 10 MB; BATON_CALL_ROUNDS
// rounds per size (default 20).
//
//	go test -run '^$' -bench BenchmarkTransferInvokeNetns -benchtime 1x ./test/benchmarks/clusterproc/
func BenchmarkTransferInvokeNetns(b *testing.B) {
	sb := wfSandbox(b)
	b.Logf("at start: %s", loadNow())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	r := newNetRig(b)
	limits := []string{"--max-payload", strconv.Itoa(64 << 20)}
	workerArgs := append(append([]string{"--transfer-memory", strconv.Itoa(1 << 30)}, limits...), sb...)
	for _, id := range []string{"w1", "w2"} {
		r.worker(id, workerArgs...)
	}
	ctrl := xferController(r, limits...)
	cl := r.waitServes(ctrl)
	waitWorkers(b, cl, 2)

	src, err := os.ReadFile(filepath.Join("..", "testdata", "transfer", "xinvoke.py"))
	if err != nil {
		b.Fatal(err)
	}
	code := zipAs(b, "xinvoke.py", src)
	// Started in this order: the caller and the filler fill w1 (an app's
	// instances go together while they fit), so the callee starts on w2.
	fns := []struct {
		name, handler string
		memoryMB      int
	}{{"xinv-caller", "caller", 10240}, {"xinv-filler", "consume", 8192}, {"xinv-consume", "consume", 10240}}
	for _, f := range fns {
		spec := function.Spec{Runtime: function.RuntimePython, Handler: "xinvoke." + f.handler, App: "xinv", MemoryMB: f.memoryMB,
			TimeoutSeconds: 120, IdleTimeoutSeconds: 3600, MaxScale: 1}
		dctx, dcancel := context.WithTimeout(ctx, time.Minute)
		_, err := cl.Deploy(dctx, f.name, client.DeployRequest{FunctionSpec: apiv1.FunctionSpec(spec), Code: code})
		dcancel()
		if err != nil {
			b.Fatalf("deploy %s: %v", f.name, err)
		}
	}
	for _, f := range fns {
		// The caller calls the filler, which is to start beside it anyway.
		ictx, icancel := context.WithTimeout(ctx, 2*time.Minute)
		_, err := cl.Invoke(ictx, f.name, []byte(`{"n":1,"target":"xinv-filler","t1":0,"data":"x"}`))
		icancel()
		if err != nil {
			b.Fatalf("start %s: %v", f.name, err)
		}
	}
	where := map[string]string{}
	for _, f := range fns {
		fn, err := cl.Get(ctx, f.name)
		if err != nil {
			b.Fatal(err)
		}
		for _, in := range fn.Status.Instances {
			where[f.name] += in.Worker
		}
	}
	b.Logf("instances: %v", where)
	if where["xinv-caller"] == where["xinv-consume"] {
		b.Fatalf("the callee shares a worker with the caller: %v", where)
	}
	rounds := envInt(b, "BATON_CALL_ROUNDS", 20)
	type variant struct {
		name, via       string
		xfer, call, e2e []float64
		failed          string
	}
	var rows [][]string
	for _, size := range []int{16, 1 << 20, 10 << 20} {
		sum := sha256.Sum256([]byte(strings.Repeat("0123456789abcdef", size/16+1)[:size]))
		want := hex.EncodeToString(sum[:])
		run := func(v *variant) (float64, float64, float64, error) {
			in, _ := json.Marshal(map[string]any{"n": size, "target": "xinv-consume", "via": v.via, "url": ctrl.url(), "token": token})
			start := time.Now()
			resp, err := cl.Invoke(ctx, "xinv-caller", in)
			lat := time.Since(start)
			if err != nil {
				return 0, 0, 0, fmt.Errorf("invoke xinv-caller: %w", err)
			}
			var o struct {
				TransferNs int64  `json:"transfer_ns"`
				CallNs     int64  `json:"call_ns"`
				SHA256     string `json:"sha256"`
				Len        int    `json:"len"`
			}
			if err := json.Unmarshal(resp.Body, &o); err != nil || o.SHA256 != want || o.Len != size {
				return 0, 0, 0, fmt.Errorf("the caller answered %.300s, want the callee's sha256 %s of %d bytes", resp.Body, want, size)
			}
			return float64(o.TransferNs) / 1e6, float64(o.CallNs) / 1e6, float64(lat) / 1e6, nil
		}
		variants := []*variant{{name: "baton", via: "baton"}, {name: "http", via: "http"}}
		for _, v := range variants {
			for i := range 2 {
				if _, _, _, err := run(v); err != nil {
					v.failed = err.Error()
					wfPrintf(b, "%s at %d B: warm-up %d failed (left out): %v", v.name, size, i, err)
					break
				}
			}
		}
		for i := range rounds * b.N {
			for k := range variants {
				v := variants[(k+i)%len(variants)]
				if v.failed != "" {
					continue
				}
				x, c, e, err := run(v)
				if err != nil {
					v.failed = err.Error()
					wfPrintf(b, "%s at %d B: round %d failed (left out from here): %v", v.name, size, i, err)
					continue
				}
				v.xfer, v.call, v.e2e = append(v.xfer, x), append(v.call, c), append(v.e2e, e)
			}
		}
		var base stats.Dist
		for _, v := range variants {
			if len(v.call) == 0 {
				rows = append(rows, []string{strconv.Itoa(size), v.name, "0", "-", "-", "-", "-", "-"})
				continue
			}
			xd, cd, ed := stats.Describe(v.xfer), stats.Describe(v.call), stats.Describe(v.e2e)
			if v.name == "baton" {
				base = cd
			}
			b.ReportMetric(cd.P50, fmt.Sprintf("%dB-%s-call-p50-ms", size, v.name))
			b.ReportMetric(cd.P99, fmt.Sprintf("%dB-%s-call-p99-ms", size, v.name))
			vs := "-"
			if v.name != "baton" && base.Count > 0 {
				vs = fmt.Sprintf("%.2f", cd.P50/base.P50)
			}
			rows = append(rows, []string{strconv.Itoa(size), v.name, strconv.Itoa(cd.Count), fmt.Sprintf("%.2f", xd.P50),
				fmt.Sprintf("%.2f", cd.P50), fmt.Sprintf("%.2f", cd.P99), fmt.Sprintf("%.2f", ed.P50), vs})
		}
	}
	wfPrintf(b, "ms, %s; vs-baton: this way's call p50 / baton.invoke's:%s", loadNow(),
		wfTable([]string{"bytes", "way", "n", "xfer-p50", "call-p50", "call-p99", "e2e-p50", "vs-baton"}, rows))
}
