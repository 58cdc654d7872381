package benchmarks

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/bench/stats"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/test/harness"
)

// BenchmarkTransferInvoke measures a function invoking another with N
// bytes (1 MB, 10 MB) on one server with process sandboxes (so that the
// caller reaches the server's HTTP API), three ways in the same run,
// alternating:
//
//   - xdt: baton.invoke, the payload above the 256 KiB threshold kept on
//     the caller's worker and handed to the callee's in memory;
//   - inline: baton.invoke on a second server with --transfer-threshold 0
//     (the payload through the controller, in process);
//   - http: urllib to the HTTP invoke route (POST /v1/functions/NAME/invoke
//     with the API token), what a function does without baton.invoke.
//
// transfer is from the caller's last moment before the call (the JSON
// encoding of the payload included) to the callee's entry; call is from
// then until the result is back; e2e is the client's latency of the
// caller's invocation. BATON_XFER_ROUNDS sets the rounds per size
// ("1MB=20,10MB=10" by default; 100MB is not run).
//
//	go test -run '^$' -bench BenchmarkTransferInvoke -benchtime 1x ./test/benchmarks/
func BenchmarkTransferInvoke(b *testing.B) {
	logLoad(b)
	suppressNsOp(b)
	realPython(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	args := []string{"--sandbox", "process", "--max-payload", strconv.Itoa(64 << 20), "--max-inflight-bytes", strconv.Itoa(1 << 30),
		"--transfer-memory", strconv.Itoa(1 << 30)}
	xdtSrv := harness.Start(b, harness.Options{Args: append([]string{"--transfer-threshold", strconv.Itoa(256 << 10)}, args...)})
	inlineSrv := harness.Start(b, harness.Options{Args: append([]string{"--transfer-threshold", "0"}, args...)})
	code := zipDir(b, filepath.Join("testdata", "transfer"))
	tune := func(sp *function.Spec) { sp.MemoryMB, sp.TimeoutSeconds, sp.MaxScale = 1024, 120, 2 }
	for _, s := range []*harness.Server{xdtSrv, inlineSrv} {
		for _, fn := range []string{"caller", "consume"} {
			wfFunction(b, s, "xinv-"+fn, "xinvoke."+fn, "xinv", code, tune)
		}
	}
	type variant struct {
		name            string
		s               *harness.Server
		via             string
		xfer, call, e2e []float64
		failed          string
	}
	clients := map[*harness.Server]*client.Client{xdtSrv: wfClient(b, xdtSrv, 1), inlineSrv: wfClient(b, inlineSrv, 1)}
	rounds := transferRounds(b)
	var rows [][]string
	for _, size := range []int{1 << 20, 10 << 20} {
		variants := []*variant{{name: "xdt", s: xdtSrv, via: "baton"}, {name: "inline", s: inlineSrv, via: "baton"}, {name: "http", s: xdtSrv, via: "http"}}
		want := transferDigest(size)
		run := func(v *variant) (time.Duration, float64, float64, error) {
			c := clients[v.s]
			in, _ := json.Marshal(map[string]any{"n": size, "target": "xinv-consume", "via": v.via, "url": v.s.URL, "token": v.s.Token})
			start := time.Now()
			resp, err := c.Invoke(ctx, "xinv-caller", in)
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
			if err := json.Unmarshal(resp.Body, &o); err != nil {
				return 0, 0, 0, fmt.Errorf("caller answered %.200s: %w", resp.Body, err)
			}
			if o.SHA256 != want || o.Len != size {
				return 0, 0, 0, fmt.Errorf("the callee got %d bytes with sha256 %s, want %d with %s", o.Len, o.SHA256, size, want)
			}
			return lat, float64(o.TransferNs) / 1e6, float64(o.CallNs) / 1e6, nil
		}
		for _, v := range variants {
			for i := range 2 {
				if _, _, _, err := run(v); err != nil {
					v.failed = err.Error()
					wfPrint(b, "%s at %s: warm-up %d failed (left out): %v", v.name, sizeName(size), i, err)
					break
				}
			}
		}
		for i := range rounds[size] * b.N {
			for k := range variants {
				v := variants[(k+i)%len(variants)] // rotate who goes first
				if v.failed != "" {
					continue
				}
				lat, xfer, call, err := run(v)
				if err != nil {
					v.failed = err.Error()
					wfPrint(b, "%s at %s: round %d failed (left out from here): %v", v.name, sizeName(size), i, err)
					continue
				}
				v.e2e, v.xfer, v.call = append(v.e2e, msOf(lat)), append(v.xfer, xfer), append(v.call, call)
			}
		}
		var base stats.Dist
		for _, v := range variants {
			if len(v.xfer) == 0 {
				rows = append(rows, []string{sizeName(size), v.name, "0", "-", "-", "-", "-", "-", "-", "-"})
				continue
			}
			xd, cd, ed := stats.Describe(v.xfer), stats.Describe(v.call), stats.Describe(v.e2e)
			if v.name == "xdt" {
				base = xd
			}
			reportDist(b, fmt.Sprintf("%s-%s-transfer", sizeName(size), v.name), xd)
			reportDist(b, fmt.Sprintf("%s-%s-call", sizeName(size), v.name), cd)
			vs := "-"
			if v.name != "xdt" && base.Count > 0 {
				vs = f2(ratio(xd.P50, base.P50))
			}
			rows = append(rows, []string{sizeName(size), v.name, strconv.Itoa(xd.Count), f2(xd.P50), f2(xd.P99), f2(cd.P50), f2(cd.P99), f2(ed.P50), f2(ed.P99), vs})
		}
	}
	wfPrint(b, "isolation %s; %s; ms; last column: this way's transfer p50 / xdt's%s", isolation(ctx, xdtSrv), loadAvg(),
		table([]string{"size", "way", "n", "xfer-p50", "xfer-p99", "call-p50", "call-p99", "e2e-p50", "e2e-p99", "vs-xdt-p50"}, rows))
}
