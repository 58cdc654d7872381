package jsstore_test

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/baton-faas/baton/internal/cluster/clustertest"
	"github.com/baton-faas/baton/internal/store/jsstore"
	"github.com/baton-faas/baton/internal/store/natsd"
)

func recs(prefix string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "%s%d", prefix, i)
	}
	return out
}

func strs(b [][]byte) []string {
	out := make([]string, len(b))
	for i, r := range b {
		out[i] = string(r)
	}
	return out
}

func recent(t *testing.T, st *jsstore.Store, limit int) []string {
	t.Helper()
	got, err := st.RecentRecords(clustertest.Context(t), limit)
	if err != nil {
		t.Fatalf("RecentRecords(%d): %v", limit, err)
	}
	return strs(got)
}

// Batches and single-record messages (as the previous release wrote
// them) read back together, in order, after the server restarts; the
// newest records may begin inside a batch.
func TestRecordsBatchesAndSinglesAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := clustertest.Context(t)
	start := func() (*natsd.Server, *nats.Conn, *jsstore.Store) {
		t.Helper()
		ns, err := natsd.Start(ctx, natsd.Options{DataDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(ns.Shutdown)
		nc, err := ns.Connect()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return ns, nc, open(t, nc, jsstore.Options{MaxRecords: 1000, MaxRecordBytes: 8 << 20})
	}
	ns, nc, st := start()
	var want []string
	for i, r := range recs("single", 3) {
		if err := st.AppendRecord(ctx, fmt.Sprintf("fn%d", i), r); err != nil {
			t.Fatal(err)
		}
	}
	want = append(want, strs(recs("single", 3))...)
	if err := st.AppendRecords(ctx, recs("batch", 5)); err != nil {
		t.Fatal(err)
	}
	want = append(want, strs(recs("batch", 5))...)
	for _, r := range recs("raw", 2) { // a plain publish, as the previous release did
		if _, err := nc.Request("baton.records.hello", r, clustertest.Deadline); err != nil {
			t.Fatal(err)
		}
	}
	want = append(want, strs(recs("raw", 2))...)
	if err := st.AppendRecords(ctx, recs("last", 4)); err != nil {
		t.Fatal(err)
	}
	want = append(want, strs(recs("last", 4))...)

	ns.Shutdown()
	_, _, st = start()
	if got := recent(t, st, 100); !slices.Equal(got, want) {
		t.Fatalf("RecentRecords(100) = %v, want %v", got, want)
	}
	for _, limit := range []int{1, 4, 6, 7, 14} {
		if got := recent(t, st, limit); !slices.Equal(got, want[len(want)-limit:]) {
			t.Errorf("RecentRecords(%d) = %v, want %v", limit, got, want[len(want)-limit:])
		}
	}
}

// The stream is bounded in records: once a store has appended twice
// MaxRecords, what precedes its newest MaxRecords goes.
func TestRecordsTrimmedInRecords(t *testing.T) {
	nc, js := clustertest.Connect(t, clustertest.Server(t))
	st := open(t, nc, jsstore.Options{MaxRecords: 10, MaxRecordBytes: 8 << 20})
	ctx := clustertest.Context(t)
	var all []string
	for i := range 25 {
		batch := recs(fmt.Sprintf("b%d-", i), 3)
		if err := st.AppendRecords(ctx, batch); err != nil {
			t.Fatal(err)
		}
		all = append(all, strs(batch)...)
	}
	got := recent(t, st, 1000)
	if len(got) < 10 || len(got) > 2*10+3 {
		t.Fatalf("the stream holds %d records, want 10 to 23", len(got))
	}
	if !slices.Equal(got, all[len(all)-len(got):]) {
		t.Fatalf("the stream holds %v, want the newest of %v", got, all)
	}
	s, err := js.Stream(ctx, "BATON_RECORDS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs*3 != uint64(len(got)) {
		t.Fatalf("%d messages for %d records of batches of 3", info.State.Msgs, len(got))
	}
}

// A batch larger than the server takes in one message goes in several.
func TestRecordsSplitAtPayloadLimit(t *testing.T) {
	nc, js := clustertest.Connect(t, clustertest.Server(t))
	st := open(t, nc, jsstore.Options{MaxRecords: 100, MaxRecordBytes: 64 << 20})
	ctx := clustertest.Context(t)
	big := make([][]byte, 5)
	for i := range big {
		big[i] = bytes.Repeat([]byte{byte('a' + i)}, int(nc.MaxPayload())/3)
	}
	if err := st.AppendRecords(ctx, big); err != nil {
		t.Fatal(err)
	}
	got, err := st.RecentRecords(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(big) {
		t.Fatalf("%d records read back, want %d", len(got), len(big))
	}
	for i := range big {
		if !bytes.Equal(got[i], big[i]) {
			t.Fatalf("record %d differs", i)
		}
	}
	s, err := js.Stream(ctx, "BATON_RECORDS")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(ctx); err != nil || info.State.Msgs != 3 {
		t.Fatalf("stream info %+v, %v: want 3 messages of at most 2 records", info.State, err)
	}
}

// A batch whose framing disagrees with its count is reported, by its
// sequence, not taken for fewer records.
func TestRecordsCorruptBatch(t *testing.T) {
	nc, js := clustertest.Connect(t, clustertest.Server(t))
	st := open(t, nc, jsstore.Options{MaxRecords: 100})
	ctx := clustertest.Context(t)
	msg := &nats.Msg{Subject: "baton.records._batch", Header: nats.Header{"Baton-Records": {"3"}}, Data: []byte{1, 'x', 1, 'y'}}
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	_, err := st.RecentRecords(ctx, 10)
	if err == nil || !strings.Contains(err.Error(), "records message 1") {
		t.Fatalf("RecentRecords = %v, want an error naming message 1", err)
	}
}
