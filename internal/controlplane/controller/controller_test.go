package controller

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/controlplane/metrics"
	"github.com/baton-faas/baton/internal/controlplane/registry"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/store"
	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/fake"
)

// noFunctions is a function store without functions.
type noFunctions struct{}

func (noFunctions) GetFunction(context.Context, string) (function.Function, uint64, error) {
	return function.Function{}, 0, store.ErrNotFound
}
func (noFunctions) ListFunctions(context.Context) ([]function.Function, error) { return nil, nil }
func (noFunctions) PutFunction(context.Context, function.Function, uint64) (uint64, error) {
	return 0, store.ErrConflict
}
func (noFunctions) DeleteFunction(context.Context, string) error { return store.ErrNotFound }

// breakingWorker ends every event stream after one event, as a network
// transport's stream may end, and records where readers resume.
type breakingWorker struct {
	*fake.Worker
	mu     sync.Mutex
	afters []uint64
	open   int
}

func (b *breakingWorker) Events(ctx context.Context, after uint64) (<-chan workerapi.Event, error) {
	ctx, cancel := context.WithCancel(ctx)
	in, err := b.Worker.Events(ctx, after)
	if err != nil {
		cancel()
		return nil, err
	}
	b.mu.Lock()
	b.afters = append(b.afters, after)
	b.open++
	b.mu.Unlock()
	out := make(chan workerapi.Event)
	go func() {
		defer func() {
			cancel()
			b.mu.Lock()
			b.open--
			b.mu.Unlock()
			close(out)
		}()
		select {
		case ev, ok := <-in:
			if ok {
				select {
				case out <- ev:
				case <-ctx.Done():
				}
			}
		case <-ctx.Done():
		}
	}()
	return out, nil
}

func (b *breakingWorker) state() ([]uint64, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]uint64(nil), b.afters...), b.open
}

// The events loop resumes a stream that ended after the last event it
// saw, and Shutdown stops it and waits for it.
func TestEventsLoopResumesAndStops(t *testing.T) {
	fw := fake.New(fake.Options{ID: "w1"})
	defer fw.Close()
	w := &breakingWorker{Worker: fw}
	c := New(Options{Registry: registry.New(noFunctions{}, nil, archive.DefaultLimits(), nil), Worker: w, Metrics: metrics.New()})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var last uint64
	for range 3 {
		in, err := fw.StartInstance(ctx, workerapi.InstanceSpec{Function: "f", Version: 1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fw.WaitInstance(ctx, in.ID); err != nil {
			t.Fatal(err)
		}
		last++
		deadline := time.Now().Add(time.Minute)
		for {
			afters, _ := w.state()
			if afters[len(afters)-1] == last {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the events loop resumed after %v; want after %d", afters, last)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := c.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if _, open := w.state(); open != 0 {
		t.Fatalf("%d event streams still open after Shutdown", open)
	}
}
