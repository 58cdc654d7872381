package eventlog

import (
	"context"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/workerapi"
)

func next(t *testing.T, ch <-chan workerapi.Event) workerapi.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("stream closed")
		}
		return ev
	case <-time.After(time.Minute):
		t.Fatal("no event")
	}
	return workerapi.Event{}
}

// A reader that stops reading while the writer goes on gets a Resync once
// its next event was dropped, then the oldest event kept; the writer never
// waits for it.
func TestSlowReaderGetsResync(t *testing.T) {
	l := New("w1", 3)
	defer l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := l.Stream(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	l.Append(workerapi.Event{Kind: workerapi.InstanceReady, Instance: "a"})
	if ev := next(t, ch); ev.Seq != 1 || ev.Instance != "a" || ev.Worker != "w1" {
		t.Fatalf("first event %+v", ev)
	}
	for _, id := range []string{"b", "c", "d", "e", "f"} {
		l.Append(workerapi.Event{Kind: workerapi.InstanceExited, Instance: id})
	}
	// The feeder may hold event 2 ("b") already; after it, 3 ("c") was
	// dropped: the ring keeps 4..6.
	ev := next(t, ch)
	if ev.Seq == 2 {
		ev = next(t, ch)
	}
	if ev.Kind != workerapi.Resync || ev.Seq != 3 {
		t.Fatalf("after falling behind: %+v; want a resync with Seq 3", ev)
	}
	for want := uint64(4); want <= 6; want++ {
		if ev := next(t, ch); ev.Seq != want {
			t.Fatalf("event %+v; want Seq %d", ev, want)
		}
	}
}

// Close ends the streams and waits for their goroutines.
func TestCloseEndsStreams(t *testing.T) {
	l := New("w1", 0)
	ch, err := l.Stream(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, ok := <-ch; ok {
		t.Fatal("an event after Close")
	}
	if _, err := l.Stream(context.Background(), 0); err == nil {
		t.Fatal("a stream of a closed log")
	}
}
