package keyedlock

import (
	"sync"
	"testing"
	"time"
)

func TestSerialisesOneKeyOnly(t *testing.T) {
	var l Locks
	unlockA := l.Lock("a")
	// Another key is free.
	done := make(chan struct{})
	go func() { l.Lock("b")(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("lock on b blocked behind a")
	}
	// The same key waits.
	got := make(chan struct{})
	go func() { l.Lock("a")(); close(got) }()
	select {
	case <-got:
		t.Fatal("second lock on a did not wait")
	case <-time.After(50 * time.Millisecond):
	}
	unlockA()
	<-got
	var wg sync.WaitGroup
	counter := 0
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); u := l.Lock("c"); counter++; u() }()
	}
	wg.Wait()
	if counter != 100 || len(l.locks) != 0 {
		t.Fatalf("counter=%d, leftover locks=%d", counter, len(l.locks))
	}
}
