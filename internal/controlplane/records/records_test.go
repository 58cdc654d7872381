package records

import (
	"context"
	"fmt"
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
