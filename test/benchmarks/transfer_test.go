package benchmarks

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

	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/bench/stats"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/test/harness"
)

// BenchmarkTransfer measures one hop of N bytes between the two steps of
// a workflow (step 1 makes the data, step 2 hashes it) on one server, for
// 1 MB, 10 MB and 100 MB, three ways in the same run, alternating:
//
//   - xdt: step 1's output stays on its worker and step 2's worker pulls
//     it (direct transfer, --transfer-threshold 256 KiB);
//   - inline: the output goes through the workflow engine as JSON
//     (a second server with --transfer-threshold 0);
//   - objstore: step 1 puts the data into the global data layer (the
//     JetStream object store), step 2 gets it (and deletes it);
//   - s3: step 1 PUTs the data to a real S3-compatible server (SeaweedFS
//     on loopback, started for the run, anonymous access), step 2 GETs it
//     (and DELETEs it); only when `weed` is found (weedBinary:
//     BATON_BENCH_WEED=path, or built once with BATON_BENCH_WEED_BUILD=1),
//     else left out with a message. A container sandbox reaches no host
//     address from its own network namespace, so with the s3 way every
//     function of the run (all ways, both servers: one app, one sandbox)
//     is deployed with network "host", the same sandbox kind for all;
//   - json-floor: no hop; one function encodes and decodes the data as
//     the Python runtime does a result and an event, which xdt and inline
//     pay within their transfer and objstore does not (its data is raw).
//
// transfer is from step 1's last moment with the data (its return, or
// before its put) to step 2's first moment with it (its entry, or after
// its get), on the machine's one clock; e2e is the client's latency of
// the whole execution. BATON_XFER_ROUNDS ("1MB=20,10MB=10,100MB=4" by
// default) sets the rounds per size.
//
//	go test -run '^$' -bench 'BenchmarkTransfer$' -benchtime 1x ./test/benchmarks/
func BenchmarkTransfer(b *testing.B) {
	logLoad(b)
	suppressNsOp(b)
	realPython(b)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	limits := []string{"--max-payload", strconv.Itoa(256 << 20), "--max-inflight-bytes", strconv.Itoa(1 << 30),
		"--data-max-value", strconv.Itoa(256 << 20), "--transfer-memory", strconv.Itoa(1 << 30)}
	xdtSrv := harness.Start(b, harness.Options{Args: append([]string{"--transfer-threshold", strconv.Itoa(256 << 10)}, limits...)})
	inlineSrv := harness.Start(b, harness.Options{Args: append([]string{"--transfer-threshold", "0"}, limits...)})
	code := zipDir(b, filepath.Join("testdata", "transfer"))
	network := function.NetworkIsolated
	var s3 *s3Server
	if weed, err := weedBinary(ctx, b); err != nil {
		wfPrint(b, "s3 way left out: %v", err)
	} else if s3, err = startS3(ctx, b, weed); err != nil {
		wfPrint(b, "s3 way left out: %v", err)
	} else {
		network = function.NetworkHost
	}
	tune := func(sp *function.Spec) {
		sp.MemoryMB, sp.TimeoutSeconds, sp.MaxScale, sp.Network = 2048, 120, 2, network
		if s3 != nil {
			sp.Env = map[string]string{"XFER_S3_BUCKET": s3.Bucket}
		}
	}
	for _, s := range []*harness.Server{xdtSrv, inlineSrv} {
		for _, fn := range []string{"produce", "consume", "put", "get", "s3_put", "s3_get", "json_floor"} {
			wfFunction(b, s, "xfer-"+strings.ReplaceAll(fn, "_", "-"), "xfer."+fn, "xfer", code, tune)
		}
		putWorkflow(b, s, "xfer-pass", `{"StartAt":"P","States":{"P":{"Type":"Task","Resource":"xfer-produce","Next":"C"},
			"C":{"Type":"Task","Resource":"xfer-consume","End":true}}}`)
		putWorkflow(b, s, "xfer-floor", `{"StartAt":"F","States":{"F":{"Type":"Task","Resource":"xfer-json-floor","End":true}}}`)
		putWorkflow(b, s, "xfer-store", `{"StartAt":"P","States":{"P":{"Type":"Task","Resource":"xfer-put","Next":"C"},
			"C":{"Type":"Task","Resource":"xfer-get","End":true}}}`)
		putWorkflow(b, s, "xfer-s3", `{"StartAt":"P","States":{"P":{"Type":"Task","Resource":"xfer-s3-put","Next":"C"},
			"C":{"Type":"Task","Resource":"xfer-s3-get","End":true}}}`)
	}
	xc, ic := wfClient(b, xdtSrv, 1), wfClient(b, inlineSrv, 1)
	type variant struct {
		name   string
		c      *client.Client
		wf     string
		xfer   []float64
		e2e    []float64
		failed string
		// floor: no hop, only the runtime's JSON encoding and decoding
		// of the data (the part of xdt's and inline's transfer that is
		// the Python runtime's, not Baton's).
		floor bool
	}
	rounds := transferRounds(b)
	var rows [][]string
	for _, size := range []int{1 << 20, 10 << 20, 100 << 20} {
		variants := []*variant{
			{name: "xdt", c: xc, wf: "xfer-pass"},
			{name: "inline", c: ic, wf: "xfer-pass"},
			{name: "objstore", c: xc, wf: "xfer-store"},
			{name: "json-floor", c: xc, wf: "xfer-floor", floor: true},
		}
		if s3 != nil {
			variants = append(variants, &variant{name: "s3", c: xc, wf: "xfer-s3"})
		}
		want := transferDigest(size)
		input := []byte(fmt.Sprintf(`{"n":%d}`, size))
		run := func(v *variant) (time.Duration, float64, error) {
			x, lat, err := runSync(ctx, v.c, v.wf, input)
			if err != nil {
				return 0, 0, err
			}
			var o struct {
				TransferNs int64  `json:"transfer_ns"`
				SHA256     string `json:"sha256"`
				Len        int    `json:"len"`
			}
			if err := json.Unmarshal(x.Output, &o); err != nil {
				return 0, 0, fmt.Errorf("execution %s output %.200s: %w", x.ID, x.Output, err)
			}
			if !v.floor && (o.SHA256 != want || o.Len != size) {
				return 0, 0, fmt.Errorf("execution %s: step 2 got %d bytes with sha256 %s, want %d with %s", x.ID, o.Len, o.SHA256, size, want)
			}
			return lat, float64(o.TransferNs) / 1e6, nil
		}
		// Warm up: instances started and the data made in both steps.
		for _, v := range variants {
			for i := range 2 {
				if _, _, err := run(v); err != nil {
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
				lat, xfer, err := run(v)
				if err != nil {
					v.failed = err.Error()
					wfPrint(b, "%s at %s: round %d failed (left out from here): %v", v.name, sizeName(size), i, err)
					continue
				}
				v.e2e = append(v.e2e, msOf(lat))
				v.xfer = append(v.xfer, xfer)
			}
		}
		base := map[string]stats.Dist{}
		for _, v := range variants {
			if len(v.xfer) == 0 {
				rows = append(rows, []string{sizeName(size), v.name, "0", "-", "-", "-", "-", "-", "-"})
				continue
			}
			xd, ed := stats.Describe(v.xfer), stats.Describe(v.e2e)
			base[v.name] = xd
			reportDist(b, fmt.Sprintf("%s-%s-transfer", sizeName(size), v.name), xd)
			reportDist(b, fmt.Sprintf("%s-%s-e2e", sizeName(size), v.name), ed)
			rows = append(rows, []string{sizeName(size), v.name, strconv.Itoa(xd.Count), f2(xd.P50), f2(xd.P99), f2(ed.P50), f2(ed.P99), "", ""})
		}
		// Speed-ups of xdt's median transfer.
		if x, ok := base["xdt"]; ok {
			for i := len(rows) - len(variants); i < len(rows); i++ {
				if d, ok := base[rows[i][1]]; ok && rows[i][1] != "xdt" && rows[i][1] != "json-floor" {
					rows[i][7] = f2(ratio(d.P50, x.P50))
					rows[i][8] = f2(ratio(d.P99, x.P99))
				}
			}
		}
	}
	wfPrint(b, "isolation %s, network %s; %s; transfer and e2e in ms; last columns: this way's transfer / xdt's (p50, p99)%s",
		isolation(ctx, xdtSrv), network, loadAvg(), table([]string{"size", "way", "n", "xfer-p50", "xfer-p99", "e2e-p50", "e2e-p99", "vs-xdt-p50", "vs-xdt-p99"}, rows))
}

// transferRounds reads BATON_XFER_ROUNDS.
func transferRounds(tb testing.TB) map[int]int {
	r := map[int]int{1 << 20: 20, 10 << 20: 10, 100 << 20: 4}
	if s := os.Getenv("BATON_XFER_ROUNDS"); s != "" {
		for _, kv := range strings.Split(s, ",") {
			k, v, ok := strings.Cut(kv, "=")
			n, err := strconv.Atoi(v)
			size := map[string]int{"1MB": 1 << 20, "10MB": 10 << 20, "100MB": 100 << 20}[k]
			if !ok || err != nil || n < 1 || size == 0 {
				tb.Fatalf("BATON_XFER_ROUNDS %q: want SIZE=N,... with SIZE 1MB, 10MB or 100MB", s)
			}
			r[size] = n
		}
	}
	return r
}

// transferDigest is the sha256 of testdata/transfer/xfer.py's data of n
// bytes.
func transferDigest(n int) string {
	sum := sha256.Sum256([]byte(strings.Repeat("0123456789abcdef", n/16+1)[:n]))
	return hex.EncodeToString(sum[:])
}

func sizeName(n int) string { return fmt.Sprintf("%dMB", n>>20) }
