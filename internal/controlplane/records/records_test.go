package records

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

type memStore struct{ data [][]byte }

func (m *memStore) AppendRecord(_ context.Context, _ string, b []byte) error {
	m.data = append(m.data, b)
	return nil
}

func (m *memStore) RecentRecords(_ context.Context, limit int) ([][]byte, error) {
	if len(m.data) > limit {
		return m.data[len(m.data)-limit:], nil
	}
	return m.data, nil
}

func TestBoundedAndReloaded(t *testing.T) {
	st := &memStore{}
	l, err := Open(context.Background(), Options{Max: 3, Store: st})
	if err != nil {
		t.Fatal(err)
	}
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
	if len(st.data) != 5 {
		t.Fatalf("store has %d records, want 5", len(st.data))
	}
	l2, err := Open(context.Background(), Options{Max: 3, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if r, ok := l2.Get("3"); !ok || r.Function != "b" {
		t.Fatalf("reloaded record 3 = %+v, %v", r, ok)
	}
	if _, ok := l2.Get("0"); ok {
		t.Fatal("reload must keep only the newest Max records")
	}
}

// TestAddAfterClose adds records while and after the log closes: Add must
// not send on the closed queue (a panic), and the records stay queryable.
func TestAddAfterClose(t *testing.T) {
	l, err := Open(context.Background(), Options{Max: 100, Store: &lockedStore{}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				l.Add(&Record{ID: fmt.Sprintf("%d-%d", i, j), Function: "f"})
			}
		}()
	}
	l.Close()
	wg.Wait()
	l.Add(&Record{ID: "late", Function: "f"})
	l.Close()
	if _, ok := l.Get("late"); !ok {
		t.Fatal("a record added after Close is not kept in memory")
	}
}

// lockedStore is a memStore safe for the writer and the test at once.
type lockedStore struct {
	mu sync.Mutex
	memStore
}

func (s *lockedStore) AppendRecord(ctx context.Context, fn string, b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.memStore.AppendRecord(ctx, fn, b)
}

// TestAttemptsShareAnID: an async invocation's attempts are records with
// one id; evicting the first attempt keeps the id pointing at the newest.
func TestAttemptsShareAnID(t *testing.T) {
	l, err := Open(context.Background(), Options{Max: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
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
