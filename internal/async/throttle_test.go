package async

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/function"
)

// throttler refuses a third of the runs as overloaded.
type throttler struct{ runner }

func (r *throttler) Run(ctx context.Context, ev Event) Result {
	if rand.IntN(3) == 0 {
		return Result{Err: errdefs.New(errdefs.Overloaded, "queue_full", "full")}
	}
	time.Sleep(time.Millisecond)
	return r.runner.Run(ctx, ev)
}

// A saturated function throttles a third of the deliveries: every event
// still runs (throttling is retried in place, not parked on a delayed
// redelivery that would hold the function's slots).
func TestThrottledEventsDoNotStallTheQueue(t *testing.T) {
	q := openQueue(t)
	r := &throttler{runner{fns: map[string]function.Function{"f": testFunction(t, "f", nil)}, fails: map[string]int{}, runs: map[string]int{}}}
	d, err := q.Dispatch(r, DispatchOptions{Scan: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	var mu sync.Mutex
	var ids []string
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				acc, err := q.Enqueue(ctx, "f", []byte(`{}`), "")
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				ids = append(ids, acc.ID)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(2 * time.Minute)
	for _, id := range ids {
		for {
			inv, err := q.Get(ctx, id)
			if err == nil && Final(inv.State) {
				break
			}
			if time.Now().After(deadline) {
				cons, _ := q.events.Consumer(ctx, "async-f")
				info, _ := cons.Info(ctx)
				t.Fatalf("stuck %s: %+v %v; consumer %+v", id, inv, err, info)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
