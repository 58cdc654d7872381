package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/baton-faas/baton/client"
)

const (
	xdtDir     = "testdata/transfer"
	xdtProduce = "xdt-produce"
	xdtConsume = "xdt-consume"
	xdtMB      = 1 << 20
)

// xdtData is what testdata/transfer/app.py's produce returns for seed.
func xdtData(seed string, n int) string {
	unit := strings.Repeat(seed+"0123456789abcdef", 4)
	return strings.Repeat(unit, n/len(unit)+1)[:n]
}

func xdtDigest(seed string, n int) string {
	sum := sha256.Sum256([]byte(xdtData(seed, n)))
	return hex.EncodeToString(sum[:])
}

// consumed is what consume reports.
type consumed struct {
	SHA256       string `json:"sha256"`
	Len          int    `json:"len"`
	I            *int   `json:"i"`
	SawReference bool   `json:"sawReference"`
}

// TestTransfer runs workflows whose steps pass a 1 MB output on by
// reference (direct transfers) on one server: the consuming function gets
// the producer's exact bytes (checked by digest) while its request is the
// small reference, for a plain two-step hop, a Map fan-out of one buffer
// to several items, a Choice that must look inside the data (resolved by
// the controller first) and an execution whose output is the data.
func TestTransfer(t *testing.T) {
	requirePython(t)
	t.Parallel()
	srv := startServer(t, "--transfer-threshold", "262144")
	for name, handler := range map[string]string{xdtProduce: "produce", xdtConsume: "consume", "xdt-consume-other": "consume"} {
		spec := pySpec(handler)
		spec.App, spec.MemoryMB = "xdt", 256
		if name == "xdt-consume-other" {
			spec.App = "xdt-other"
		}
		deploy(t, srv, name, spec, xdtDir)
	}
	deployWF := func(name, def string) {
		t.Helper()
		if _, err := srv.Client.DeployWorkflow(ctx(t), name, []byte(def)); err != nil {
			t.Fatalf("deploy workflow %s: %v", name, err)
		}
	}
	run := func(name, input string) json.RawMessage {
		t.Helper()
		x, err := srv.Client.StartExecution(ctx(t), name, []byte(input), client.StartOptions{Sync: true})
		if err != nil {
			t.Fatalf("run %s: %v", name, err)
		}
		if x.Status != "SUCCEEDED" {
			t.Fatalf("execution %s: %s %s: %s", x.ID, x.Status, x.Error, x.Cause)
		}
		return x.Output
	}
	task := func(fn string) string { return "function:" + fn }

	t.Run("TwoSteps", func(t *testing.T) {
		deployWF("xdt-hop", fmt.Sprintf(`{"StartAt":"Produce","States":{
			"Produce":{"Type":"Task","Resource":%q,"Next":"Consume"},
			"Consume":{"Type":"Task","Resource":%q,"End":true}}}`, task(xdtProduce), task(xdtConsume)))
		out := run("xdt-hop", `{"n":1048576,"seed":"hop"}`)
		var got consumed
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("output %s: %v", out, err)
		}
		if got.SHA256 != xdtDigest("hop", xdtMB) || got.Len != xdtMB || got.SawReference {
			t.Fatalf("the consumer got %+v, want %d bytes with sha256 %s and no reference", got, xdtMB, xdtDigest("hop", xdtMB))
		}
		// The hop went by reference: the producer's record counts its
		// 1 MB result, the consumer's request was the small reference.
		waitFor(t, 10*time.Second, "the records of the hop", func() (bool, string) {
			p, c := recordsOf(t, srv, xdtProduce), recordsOf(t, srv, xdtConsume)
			if len(p) == 0 || len(c) == 0 {
				return false, "no records yet"
			}
			if p[0].ResponseBytes < xdtMB || c[0].RequestBytes > 4096 {
				return false, fmt.Sprintf("producer answered %d bytes, consumer was sent %d: not by reference", p[0].ResponseBytes, c[0].RequestBytes)
			}
			return true, ""
		})
	})

	t.Run("MapFanOut", func(t *testing.T) {
		deployWF("xdt-fan", fmt.Sprintf(`{"StartAt":"Produce","States":{
			"Produce":{"Type":"Task","Resource":%q,"ResultPath":"$.blob","Next":"Fan"},
			"Fan":{"Type":"Map","ItemsPath":"$.items","ItemSelector":{"i.$":"$$.Map.Item.Value","blob.$":"$.blob"},
				"ItemProcessor":{"StartAt":"Consume","States":{"Consume":{"Type":"Task","Resource":%q,"End":true}}},
				"End":true}}}`, task(xdtProduce), task(xdtConsume)))
		out := run("xdt-fan", `{"n":1048576,"seed":"fan","items":[0,1,2,3]}`)
		var got []consumed
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("output %s: %v", out, err)
		}
		if len(got) != 4 {
			t.Fatalf("%d map results, want 4", len(got))
		}
		for i, g := range got {
			if g.SHA256 != xdtDigest("fan", xdtMB) || g.Len != xdtMB || g.SawReference || g.I == nil || *g.I != i {
				t.Fatalf("item %d got %+v", i, g)
			}
		}
	})

	t.Run("ParallelFanOut", func(t *testing.T) {
		deployWF("xdt-par", fmt.Sprintf(`{"StartAt":"Produce","States":{
			"Produce":{"Type":"Task","Resource":%[1]q,"Next":"Both"},
			"Both":{"Type":"Parallel","End":true,"Branches":[
				{"StartAt":"C1","States":{"C1":{"Type":"Task","Resource":%[2]q,"End":true}}},
				{"StartAt":"C2","States":{"C2":{"Type":"Task","Resource":%[2]q,"End":true}}}]}}}`, task(xdtProduce), task(xdtConsume)))
		out := run("xdt-par", `{"n":1048576,"seed":"par"}`)
		var got []consumed
		if err := json.Unmarshal(out, &got); err != nil || len(got) != 2 {
			t.Fatalf("output %.200s: %v", out, err)
		}
		for i, g := range got {
			if g.SHA256 != xdtDigest("par", xdtMB) || g.SawReference {
				t.Fatalf("branch %d got %+v", i, g)
			}
		}
	})

	t.Run("ChoiceLooksInside", func(t *testing.T) {
		deployWF("xdt-choice", fmt.Sprintf(`{"StartAt":"Produce","States":{
			"Produce":{"Type":"Task","Resource":%q,"Next":"Big"},
			"Big":{"Type":"Choice","Choices":[{"Variable":"$.data","StringMatches":"choice*","Next":"Consume"}],"Default":"No"},
			"No":{"Type":"Fail","Error":"NoMatch"},
			"Consume":{"Type":"Task","Resource":%q,"End":true}}}`, task(xdtProduce), task(xdtConsume)))
		out := run("xdt-choice", `{"n":1048576,"seed":"choice"}`)
		var got consumed
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		if got.SHA256 != xdtDigest("choice", xdtMB) || got.SawReference {
			t.Fatalf("after a Choice on the data the consumer got %+v", got)
		}
	})

	t.Run("OutputIsData", func(t *testing.T) {
		deployWF("xdt-one", fmt.Sprintf(`{"StartAt":"Produce","States":{
			"Produce":{"Type":"Task","Resource":%q,"End":true}}}`, task(xdtProduce)))
		out := run("xdt-one", `{"n":300000,"seed":"one"}`)
		var got struct{ Data string }
		if err := json.Unmarshal(out, &got); err != nil || got.Data != xdtData("one", 300000) {
			t.Fatalf("the execution's output is not the produced data (%d bytes: %.80s)", len(out), out)
		}
	})

	t.Run("PlainInvokeIsInline", func(t *testing.T) {
		var got struct{ Data string }
		mustInvoke(t, srv, xdtProduce, map[string]any{"n": 300000, "seed": "plain"}, &got)
		if got.Data != xdtData("plain", 300000) {
			t.Fatalf("a plain invoke got %d bytes of data, not the produced ones", len(got.Data))
		}
	})

	t.Run("OtherAppGetsDataInline", func(t *testing.T) {
		// A worker refuses a reference of another app, so the controller
		// passes the data inline to a function of another app.
		deployWF("xdt-cross", fmt.Sprintf(`{"StartAt":"Produce","States":{
			"Produce":{"Type":"Task","Resource":%q,"Next":"Consume"},
			"Consume":{"Type":"Task","Resource":%q,"End":true}}}`, task(xdtProduce), task("xdt-consume-other")))
		out := run("xdt-cross", `{"n":1048576,"seed":"cross"}`)
		var got consumed
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		if got.SHA256 != xdtDigest("cross", xdtMB) || got.SawReference {
			t.Fatalf("the other app's function got %+v", got)
		}
		waitFor(t, 10*time.Second, "the other app's record", func() (bool, string) {
			c := recordsOf(t, srv, "xdt-consume-other")
			if len(c) == 0 {
				return false, "no record yet"
			}
			return c[0].RequestBytes >= xdtMB, fmt.Sprintf("it was sent %d bytes, not the data inline", c[0].RequestBytes)
		})
	})

	t.Run("ForgedReferenceRefused", func(t *testing.T) {
		deployWF("xdt-forged", fmt.Sprintf(`{"StartAt":"Consume","States":{
			"Consume":{"Type":"Task","Resource":%q,"End":true}}}`, task(xdtConsume)))
		forged := `{"$baton.transfer":{"worker":"w","id":"0123","size":5,"sha256":"00","expires":99999999999999999,"app":"xdt","pulls":9,"mac":"00ff"}}`
		x, err := srv.Client.StartExecution(ctx(t), "xdt-forged", []byte(forged), client.StartOptions{Sync: true})
		if err != nil {
			t.Fatal(err)
		}
		if x.Status != "FAILED" || x.Error != "Baton.TransferRefused" || !strings.Contains(x.Cause, "forged") {
			t.Fatalf("a forged reference as a step's input: %s %s: %s", x.Status, x.Error, x.Cause)
		}
		// Sent to a function directly, it is the caller's bad input.
		_, err = invoke(t, srv, xdtConsume, forged)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != 400 || ce.Body.Code != "transfer_ref_forged" {
			t.Fatalf("a forged reference as an invocation's payload: %v, want 400 transfer_ref_forged", err)
		}
		waitFor(t, 10*time.Second, "the refusal in the server's log", func() (bool, string) {
			return strings.Contains(srv.Logs(), "transfer reference refused"), "not logged"
		})
	})
}

// TestTransferSpilledAndExpired: on a server that keeps no transferred
// data in memory, a step's output is spilled to a file and the next step
// still gets the right bytes; an output whose next step comes after the
// buffer's expiry is refused as expired.
func TestTransferSpilledAndExpired(t *testing.T) {
	requirePython(t)
	t.Parallel()
	srv := startServer(t, "--transfer-memory", "0", "--transfer-spill-bytes", "67108864", "--transfer-ttl", "10s")
	for name, handler := range map[string]string{xdtProduce: "produce", xdtConsume: "consume"} {
		spec := pySpec(handler)
		spec.App, spec.MemoryMB = "xdt", 256
		deploy(t, srv, name, spec, xdtDir)
	}
	for _, wf := range []struct{ name, between string }{
		{"xdt-spill", ""},
		{"xdt-late", `"Later":{"Type":"Wait","Seconds":12,"Next":"Consume"},`},
	} {
		next := "Consume"
		if wf.between != "" {
			next = "Later"
		}
		def := fmt.Sprintf(`{"StartAt":"Produce","States":{
			"Produce":{"Type":"Task","Resource":"function:%s","Next":%q},%s
			"Consume":{"Type":"Task","Resource":"function:%s","End":true}}}`, xdtProduce, next, wf.between, xdtConsume)
		if _, err := srv.Client.DeployWorkflow(ctx(t), wf.name, []byte(def)); err != nil {
			t.Fatal(err)
		}
	}
	x, err := srv.Client.StartExecution(ctx(t), "xdt-spill", []byte(`{"n":1048576,"seed":"spill"}`), client.StartOptions{Sync: true})
	if err != nil {
		t.Fatal(err)
	}
	var got consumed
	if x.Status != "SUCCEEDED" || json.Unmarshal(x.Output, &got) != nil || got.SHA256 != xdtDigest("spill", xdtMB) {
		t.Fatalf("spilled hop: %s %s %s, output %.200s", x.Status, x.Error, x.Cause, x.Output)
	}
	waitFor(t, 10*time.Second, "the hop by reference", func() (bool, string) {
		c := recordsOf(t, srv, xdtConsume)
		if len(c) == 0 {
			return false, "no record yet"
		}
		return c[0].RequestBytes < 4096, fmt.Sprintf("the consumer was sent %d bytes", c[0].RequestBytes)
	})
	x, err = srv.Client.StartExecution(ctx(t), "xdt-late", []byte(`{"n":1048576,"seed":"late"}`), client.StartOptions{Sync: true})
	if err != nil {
		t.Fatal(err)
	}
	if x.Status != "FAILED" || x.Error != "Baton.TransferRefused" || !strings.Contains(x.Cause, "expired") {
		t.Fatalf("a pull after the expiry: %s %s: %s", x.Status, x.Error, x.Cause)
	}
}
