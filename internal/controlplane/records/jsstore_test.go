package records

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/baton-faas/baton/internal/cluster/clustertest"
	"github.com/baton-faas/baton/internal/store/jsstore"
	"github.com/baton-faas/baton/internal/store/natsd"
)

// Records written in batches to JetStream come back in order after the
// log and the server restart: Open loads the newest Max of them.
func TestJetStreamAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	ctx := clustertest.Context(t)
	start := func() (*natsd.Server, *jsstore.Store) {
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
		st, err := jsstore.Open(ctx, nc, jsstore.Options{MaxRecords: 1000, MaxRecordBytes: 64 << 20})
		if err != nil {
			t.Fatal(err)
		}
		return ns, st
	}
	ns, st := start()
	l := open(t, Options{Max: 50, Store: st, BatchRecords: 16})
	for i := range 120 {
		l.Add(&Record{ID: fmt.Sprint(i), Function: fmt.Sprintf("f%d", i%3)})
	}
	l.Close()
	if n := l.NotStored(); n != 0 {
		t.Fatalf("NotStored = %d, want 0", n)
	}
	ns.Shutdown()

	_, st = start()
	l = open(t, Options{Max: 50, Store: st})
	var got []string
	for _, r := range slices.Backward(l.Query("", 100)) {
		got = append(got, r.ID)
	}
	if want := seqIDs(70, 120); !slices.Equal(got, want) {
		t.Fatalf("reloaded %v, want %v", got, want)
	}
	raw, err := st.RecentRecords(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if all := ids(t, raw); !slices.Equal(all, seqIDs(0, 120)) {
		t.Fatalf("the stream holds %v, want 0..119 in order", all)
	}
}
