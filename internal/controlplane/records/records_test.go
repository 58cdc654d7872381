package records

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/cluster/clustertest"
)

// memStore keeps what is appended, each write as one batch, safe for the
// writer and the test at once.
type memStore struct {
	mu      sync.Mutex
	batches [][][]byte
}

func (m *memStore) AppendRecords(_ context.Context, recs [][]byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	batch := make([][]byte, len(recs))
	for i, r := range recs {
		batch[i] = bytes.Clone(r) // the writer reuses its memory
	}
	m.batches = append(m.batches, batch)
	return nil
}

func (m *memStore) RecentRecords(_ context.Context, limit int) ([][]byte, error) {
	data := m.all()
	if len(data) > limit {
		return data[len(data)-limit:], nil
	}
	return data, nil
}

func (m *memStore) all() [][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Concat(m.batches...)
}

// sizes is the number of records of each write.
func (m *memStore) sizes() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []int
	for _, b := range m.batches {
		out = append(out, len(b))
	}
	return out
}

// ids decodes stored records' ids.
func ids(t *testing.T, raw [][]byte) []string {
	t.Helper()
	out := []string{}
	for _, b := range raw {
		var r Record
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("stored record %q: %v", b, err)
		}
		out = append(out, r.ID)
	}
	return out
}

func seqIDs(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprint(i))
	}
	return out
}

func open(t *testing.T, o Options) *Log {
	t.Helper()
	l, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

// never is a linger that does not end a batch within a test.
const never = time.Hour

func TestBoundedAndReloaded(t *testing.T) {
	st := &memStore{}
	l := open(t, Options{Max: 3, Store: st})
	for i := 0; i < 5; i++ {
		fn := "a"
		if i%2 == 1 {
			fn = "b"
		}
		l.Add(&Record{ID: fmt.Sprint(i), Function: fn})
	}
	if _, ok := l.Get("1"); ok {
		t.Fatal("record 1 should have been evicted")
	}
	got := l.Query("", 10)
	if len(got) != 3 || got[0].ID != "4" || got[2].ID != "2" {
		t.Fatalf("Query = %+v, want ids 4,3,2", got)
	}
	if a := l.Query("a", 10); len(a) != 2 || a[0].ID != "4" || a[1].ID != "2" {
		t.Fatalf("Query(a) = %+v", a)
	}
	l.Close()
	if got := ids(t, st.all()); !slices.Equal(got, seqIDs(0, 5)) {
		t.Fatalf("store holds %v, want the 5 records in order", got)
	}
	l2 := open(t, Options{Max: 3, Store: st})
	if r, ok := l2.Get("3"); !ok || r.Function != "b" {
		t.Fatalf("reloaded record 3 = %+v, %v", r, ok)
	}
	if _, ok := l2.Get("0"); ok {
		t.Fatal("reload must keep only the newest Max records")
	}
}

// Records leave in batches of at most BatchRecords, in order, and Close
// writes the batch still lingering.
func TestBatchesAndCloseFlushes(t *testing.T) {
	st := &memStore{}
	l := open(t, Options{Max: 100, Store: st, BatchRecords: 3, Linger: never})
	for i := range 7 {
		l.Add(&Record{ID: fmt.Sprint(i), Function: "f"})
	}
	clustertest.Eventually(t, "two full batches", func() bool { return len(st.sizes()) == 2 })
	l.Close()
	if got := st.sizes(); !slices.Equal(got, []int{3, 3, 1}) {
		t.Fatalf("batch sizes %v, want [3 3 1]", got)
	}
	if got := ids(t, st.all()); !slices.Equal(got, seqIDs(0, 7)) {
		t.Fatalf("stored %v, want 0..6 in order", got)
	}
	if n := l.NotStored(); n != 0 {
		t.Fatalf("NotStored = %d, want 0", n)
	}
}

// A batch ends before the record that would take it past BatchBytes; a
// record larger than that goes alone.
func TestBatchBytes(t *testing.T) {
	one, err := json.Marshal(&Record{ID: "0", Function: "f"})
	if err != nil {
		t.Fatal(err)
	}
	st := &memStore{}
	l := open(t, Options{Max: 100, Store: st, BatchBytes: 2*(len(one)+1) + 1, Linger: never})
	for i := range 3 {
		l.Add(&Record{ID: fmt.Sprint(i), Function: "f"})
	}
	l.Add(&Record{ID: "3", Function: "f", Logs: string(bytes.Repeat([]byte("x"), 10*len(one)))})
	l.Add(&Record{ID: "4", Function: "f"})
	l.Close()
	if got := st.sizes(); !slices.Equal(got, []int{2, 1, 1, 1}) {
		t.Fatalf("batch sizes %v, want [2 1 1 1]", got)
	}
	if got := ids(t, st.all()); !slices.Equal(got, seqIDs(0, 5)) {
		t.Fatalf("stored %v, want 0..4 in order", got)
	}
}

// blockingStore holds every write until released.
type blockingStore struct {
	memStore
	entered chan struct{}
	release chan struct{}
}

func (s *blockingStore) AppendRecords(ctx context.Context, recs [][]byte) error {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-s.release // not ctx: the test decides when the store catches up
	return s.memStore.AppendRecords(ctx, recs)
}

// While the store is stuck, the queue holds QueueRecords and the writer
// one batch; what comes on top is kept in memory only and counted, and
// Add never waits.
func TestBoundWhenStoreBlocks(t *testing.T) {
	st := &blockingStore{entered: make(chan struct{}, 1), release: make(chan struct{})}
	l := open(t, Options{Max: 100, Store: st, QueueRecords: 4, BatchRecords: 2, Linger: never})
	release := sync.OnceFunc(func() { close(st.release) })
	t.Cleanup(release) // before the log's Close, also if the test fails
	l.Add(&Record{ID: "0", Function: "f"})
	l.Add(&Record{ID: "1", Function: "f"})
	<-st.entered // the writer holds records 0 and 1
	for i := 2; i < 22; i++ {
		l.Add(&Record{ID: fmt.Sprint(i), Function: "f"})
	}
	if n := l.NotStored(); n != 16 {
		t.Fatalf("NotStored = %d with 4 queued and 2 being written of 22, want 16", n)
	}
	if got := len(l.Query("f", 100)); got != 22 {
		t.Fatalf("%d records in memory, want all 22", got)
	}
	release()
	l.Close()
	if got := ids(t, st.all()); !slices.Equal(got, seqIDs(0, 6)) {
		t.Fatalf("stored %v, want 0..5", got)
	}
}

// failingStore refuses every write.
type failingStore struct{}

func (failingStore) AppendRecords(context.Context, [][]byte) error {
	return errors.New("disk on fire")
}

func (failingStore) RecentRecords(context.Context, int) ([][]byte, error) { return nil, nil }

// countingHandler counts log records and keeps the last one's attributes.
type countingHandler struct {
	mu    sync.Mutex
	n     int
	attrs map[string]string
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countingHandler) WithGroup(string) slog.Handler            { return h }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n++
	h.attrs = map[string]string{"msg": r.Message}
	r.Attrs(func(a slog.Attr) bool {
		h.attrs[a.Key] = a.Value.String()
		return true
	})
	return nil
}

// Records the store refuses are counted and reported in a few log lines,
// not one per record; they stay queryable.
func TestBoundWhenStoreFails(t *testing.T) {
	h := &countingHandler{}
	l := open(t, Options{Max: 100, Store: failingStore{}, BatchRecords: 8, Logger: slog.New(h)})
	const n = 50
	for i := range n {
		l.Add(&Record{ID: fmt.Sprint(i), Function: "f"})
	}
	l.Close()
	if got := l.NotStored(); got != n {
		t.Fatalf("NotStored = %d, want %d", got, n)
	}
	if got := len(l.Query("f", 100)); got != n {
		t.Fatalf("%d records in memory, want %d", got, n)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == 0 || h.n >= n {
		t.Fatalf("%d log lines for %d records not stored, want a few", h.n, n)
	}
	if h.attrs["total"] != fmt.Sprint(n) {
		t.Fatalf("last log line %v, want total=%d", h.attrs, n)
	}
}

// TestAddAfterClose adds records while and after the log closes: Add must
// not send on the closed queue (a panic), and the records stay queryable.
func TestAddAfterClose(t *testing.T) {
	st := &memStore{}
	l := open(t, Options{Max: 100, Store: st})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 20 {
				l.Add(&Record{ID: fmt.Sprintf("%d-%d", i, j), Function: "f"})
			}
		})
	}
	l.Close()
	wg.Wait()
	l.Add(&Record{ID: "late", Function: "f"})
	l.Close()
	if _, ok := l.Get("late"); !ok {
		t.Fatal("a record added after Close is not kept in memory")
	}
	if stored := uint64(len(st.all())); stored+l.NotStored() != 81 {
		t.Fatalf("%d stored + %d not stored, want the 81 added", stored, l.NotStored())
	}
}

// Add neither encodes nor allocates: the writer does the encoding.
func TestAddDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	l := open(t, Options{Max: 100, Store: &memStore{}})
	recs := make([]*Record, 10000)
	for i := range recs {
		recs[i] = &Record{ID: fmt.Sprint(i), Function: "f"}
	}
	i := 0
	for ; i < 200; i++ { // fill the ring
		l.Add(recs[i])
	}
	if a := testing.AllocsPerRun(5000, func() { l.Add(recs[i%len(recs)]); i++ }); a != 0 {
		t.Fatalf("Add allocates %v times per call, want 0", a)
	}
}

// TestAttemptsShareAnID: an async invocation's attempts are records with
// one id; evicting the first attempt keeps the id pointing at the newest.
func TestAttemptsShareAnID(t *testing.T) {
	l := open(t, Options{Max: 2})
	l.Add(&Record{ID: "a", Function: "f", Attempt: 1})
	l.Add(&Record{ID: "a", Function: "f", Attempt: 2})
	l.Add(&Record{ID: "b", Function: "f"}) // evicts attempt 1
	if r, ok := l.Get("a"); !ok || r.Attempt != 2 {
		t.Fatalf("Get(a) = %+v, %v after the first attempt was evicted, want attempt 2", r, ok)
	}
	if got := l.Query("f", 10); len(got) != 2 || got[0].ID != "b" || got[1].Attempt != 2 {
		t.Fatalf("Query = %+v", got)
	}
}
