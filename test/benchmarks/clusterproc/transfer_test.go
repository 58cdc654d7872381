package clusterproc

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
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

// BenchmarkTransferNetns is test/benchmarks' BenchmarkTransfer across
// netns hosts: one controller and three workers (process sandboxes, real
// Python), each on a host of its own, and step 2 always on another worker
// than step 1, so every hop crosses the virtual network:
//
//   - xdt: step 2's worker pulls step 1's output from step 1's worker
//     (worker to worker, gRPC with mutual TLS);
//   - inline: step 2 is a function of another app, so the controller
//     pulls the output and sends it to step 2 inline (worker → controller
//     → worker, as without direct transfers);
//   - objstore: step 1 puts the data into the global data layer (the
//     cluster's JetStream object store on the three NATS hosts, R3),
//     step 2 gets it.
//
// Placement keeps an app's instances together, so the functions reserve
// memory to force the spread: w1 holds step 1 of every way (and a filler),
// w2 step 2 of xdt and objstore, w3 step 2 of inline. BATON_XFER_ROUNDS
// as in BenchmarkTransfer (default "1MB=10,10MB=6,100MB=3").
//
//	go test -run '^$' -bench BenchmarkTransferNetns -benchtime 1x ./test/benchmarks/clusterproc/
func BenchmarkTransferNetns(b *testing.B) {
	sb := wfSandbox(b)
	b.Logf("at start: %s", loadNow())
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	r := newNetRig(b)
	limits := []string{"--max-payload", strconv.Itoa(256 << 20)}
	workerArgs := append(append([]string{"--data-max-value", strconv.Itoa(256 << 20), "--transfer-memory", strconv.Itoa(1 << 30)}, limits...), sb...)
	for _, id := range []string{"w1", "w2", "w3"} {
		r.worker(id, workerArgs...)
	}
	ctrl := xferController(r, limits...)
	cl := r.waitServes(ctrl)
	waitWorkers(b, cl, 3)

	src, err := os.ReadFile(filepath.Join("..", "testdata", "transfer", "xfer.py"))
	if err != nil {
		b.Fatal(err)
	}
	code := zipAs(b, "xfer.py", src)
	fns := []struct {
		name, handler, app string
		memoryMB           int
	}{
		// In start order: w1 first (the lowest id of empty workers).
		{"xfer-produce", "produce", "xfer", 4096},
		{"xfer-put", "put", "xfer", 4096},
		{"xfer-filler", "json_floor", "xfer", 10240},
		{"xfer-consume", "consume", "xfer", 10240},
		{"xfer-get", "get", "xfer", 10240},
		{"xfer-consume-other", "consume", "xfer-other", 10240},
	}
	for _, f := range fns {
		spec := function.Spec{Runtime: function.RuntimePython, Handler: "xfer." + f.handler, App: f.app, MemoryMB: f.memoryMB,
			TimeoutSeconds: 120, IdleTimeoutSeconds: 3600, MaxScale: 1}
		dctx, dcancel := context.WithTimeout(ctx, time.Minute)
		_, err := cl.Deploy(dctx, f.name, client.DeployRequest{FunctionSpec: apiv1.FunctionSpec(spec), Code: code})
		dcancel()
		if err != nil {
			b.Fatalf("deploy %s: %v", f.name, err)
		}
	}
	// Start them in order, one at a time, so that placement spreads them
	// as described.
	for _, f := range fns {
		ev := `{"n":1024,"t1":0,"data":"x","key":"none"}`
		if f.handler == "get" {
			ev = `{}` // fails (no key), but starts the instance
		}
		ictx, icancel := context.WithTimeout(ctx, 2*time.Minute)
		_, _ = cl.Invoke(ictx, f.name, []byte(ev))
		icancel()
	}
	where := map[string]string{}
	for _, f := range fns {
		fn, err := cl.Get(ctx, f.name)
		if err != nil {
			b.Fatal(err)
		}
		var ws []string
		for _, in := range fn.Status.Instances {
			ws = append(ws, in.Worker)
		}
		where[f.name] = strings.Join(ws, "+")
	}
	b.Logf("instances: %v", where)
	if where["xfer-produce"] == where["xfer-consume"] || where["xfer-put"] == where["xfer-get"] || where["xfer-produce"] == where["xfer-consume-other"] {
		b.Fatalf("step 2 shares a worker with step 1: %v", where)
	}
	putWorkflow(b, cl, "xfer-pass", `{"StartAt":"P","States":{"P":{"Type":"Task","Resource":"xfer-produce","Next":"C"},
		"C":{"Type":"Task","Resource":"xfer-consume","End":true}}}`)
	putWorkflow(b, cl, "xfer-inline", `{"StartAt":"P","States":{"P":{"Type":"Task","Resource":"xfer-produce","Next":"C"},
		"C":{"Type":"Task","Resource":"xfer-consume-other","End":true}}}`)
	putWorkflow(b, cl, "xfer-store", `{"StartAt":"P","States":{"P":{"Type":"Task","Resource":"xfer-put","Next":"C"},
		"C":{"Type":"Task","Resource":"xfer-get","End":true}}}`)

	rounds := map[int]int{1 << 20: 10, 10 << 20: 6, 100 << 20: 3}
	if s := os.Getenv("BATON_XFER_ROUNDS"); s != "" {
		for _, kv := range strings.Split(s, ",") {
			k, v, _ := strings.Cut(kv, "=")
			n, err := strconv.Atoi(v)
			size := map[string]int{"1MB": 1 << 20, "10MB": 10 << 20, "100MB": 100 << 20}[k]
			if err != nil || n < 1 || size == 0 {
				b.Fatalf("BATON_XFER_ROUNDS %q: want SIZE=N,... with SIZE 1MB, 10MB or 100MB", s)
			}
			rounds[size] = n
		}
	}
	type variant struct {
		name, wf  string
		xfer, e2e []float64
		failed    string
	}
	var rows [][]string
	for _, size := range []int{1 << 20, 10 << 20, 100 << 20} {
		sum := sha256.Sum256([]byte(strings.Repeat("0123456789abcdef", size/16+1)[:size]))
		want := hex.EncodeToString(sum[:])
		input := []byte(fmt.Sprintf(`{"n":%d}`, size))
		variants := []*variant{{name: "xdt", wf: "xfer-pass"}, {name: "inline", wf: "xfer-inline"}, {name: "objstore", wf: "xfer-store"}}
		run := func(v *variant) (float64, float64, error) {
			start := time.Now()
			x, err := cl.StartExecution(ctx, v.wf, input, client.StartOptions{Sync: true})
			lat := time.Since(start)
			if err != nil {
				return 0, 0, err
			}
			if x.Status != apiv1.ExecutionSucceeded {
				return 0, 0, fmt.Errorf("execution %s: %s %s: %.300s", x.ID, x.Status, x.Error, x.Cause)
			}
			var o struct {
				TransferNs int64  `json:"transfer_ns"`
				SHA256     string `json:"sha256"`
			}
			if err := json.Unmarshal(x.Output, &o); err != nil || o.SHA256 != want {
				return 0, 0, fmt.Errorf("execution %s: output %.200s, want sha256 %s", x.ID, x.Output, want)
			}
			return float64(o.TransferNs) / 1e6, float64(lat) / 1e6, nil
		}
		for _, v := range variants {
			if _, _, err := run(v); err != nil {
				v.failed = err.Error()
				wfPrintf(b, "%s at %dMB: warm-up failed (left out): %v", v.name, size>>20, err)
			}
		}
		for i := range rounds[size] * b.N {
			for k := range variants {
				v := variants[(k+i)%len(variants)]
				if v.failed != "" {
					continue
				}
				x, e, err := run(v)
				if err != nil {
					v.failed = err.Error()
					wfPrintf(b, "%s at %dMB: round %d failed (left out from here): %v", v.name, size>>20, i, err)
					continue
				}
				v.xfer, v.e2e = append(v.xfer, x), append(v.e2e, e)
			}
		}
		var xdt stats.Dist
		for _, v := range variants {
			if len(v.xfer) == 0 {
				rows = append(rows, []string{fmt.Sprintf("%dMB", size>>20), v.name, "0", "-", "-", "-", "-", "-"})
				continue
			}
			xd, ed := stats.Describe(v.xfer), stats.Describe(v.e2e)
			if v.name == "xdt" {
				xdt = xd
			}
			vs := "-"
			if v.name != "xdt" && xdt.Count > 0 {
				vs = fmt.Sprintf("%.2f", xd.P50/xdt.P50)
			}
			b.ReportMetric(xd.P50, fmt.Sprintf("%dMB-%s-transfer-p50-ms", size>>20, v.name))
			b.ReportMetric(xd.P99, fmt.Sprintf("%dMB-%s-transfer-p99-ms", size>>20, v.name))
			b.ReportMetric(ed.P50, fmt.Sprintf("%dMB-%s-e2e-p50-ms", size>>20, v.name))
			b.ReportMetric(ed.P99, fmt.Sprintf("%dMB-%s-e2e-p99-ms", size>>20, v.name))
			rows = append(rows, []string{fmt.Sprintf("%dMB", size>>20), v.name, strconv.Itoa(xd.Count),
				fmt.Sprintf("%.2f", xd.P50), fmt.Sprintf("%.2f", xd.P99), fmt.Sprintf("%.2f", ed.P50), fmt.Sprintf("%.2f", ed.P99), vs})
		}
	}
	wfPrintf(b, "transfer and e2e in ms, %s; vs-xdt: this way's median transfer / xdt's:%s", loadNow(),
		wfTable([]string{"size", "way", "n", "xfer-p50", "xfer-p99", "e2e-p50", "e2e-p99", "vs-xdt"}, rows))
}

// xferController starts a controller like netRig.controller, with extra
// flags.
func xferController(r *netRig, extra ...string) *netNode {
	r.b.Helper()
	h := r.nw.AddHost("c1")
	n := &netNode{id: "c1", host: h, port: netnsAPIPort}
	args := []string{"controller", "--nats", r.natsURL, "--listen", net.JoinHostPort(h.Addr(), n.port),
		"--pki", r.issue("c1", "controller", ""), "--data-dir", r.b.TempDir(), "--log-level", "warn",
		"--token-file", r.tokenFile}
	n.p = h.Start(r.b, "c1", append(args, extra...)...)
	return n
}

// zipAs zips src as one file called name.
func zipAs(b *testing.B, name string, src []byte) []byte {
	b.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	f, err := zw.Create(name)
	if err == nil {
		_, err = f.Write(src)
	}
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}
