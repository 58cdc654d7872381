package async

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/cluster/clustertest"
	"github.com/baton-faas/baton/internal/function"
)

// faultyKV is the states bucket with failures on demand, as when NATS
// does not answer for a while (a leader election, an overloaded host).
type faultyKV struct {
	jetstream.KeyValue

	mu        sync.Mutex
	failGets  int    // the next Gets that fail
	failPuts  int    // the next Puts of a value holding putsWith that fail
	putsWith  []byte // e.g. a final state
	getFailed int
	putFailed int
}

var errNoAnswer = errors.New("nats: timeout")

func (k *faultyKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	k.mu.Lock()
	if k.failGets > 0 {
		k.failGets--
		k.getFailed++
		k.mu.Unlock()
		return nil, errNoAnswer
	}
	k.mu.Unlock()
	return k.KeyValue.Get(ctx, key)
}

func (k *faultyKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	k.mu.Lock()
	if k.failPuts > 0 && bytes.Contains(value, k.putsWith) {
		k.failPuts--
		k.putFailed++
		k.mu.Unlock()
		return 0, errNoAnswer
	}
	k.mu.Unlock()
	return k.KeyValue.Put(ctx, key, value)
}

// awaitRaw is await reading the bucket under the faults.
func awaitRaw(t *testing.T, kv jetstream.KeyValue, id string) Invocation {
	t.Helper()
	var inv Invocation
	clustertest.Eventually(t, "invocation "+id+" to finish", func() bool {
		e, err := kv.Get(context.Background(), id)
		if err != nil {
			return false
		}
		inv = Invocation{}
		return json.Unmarshal(e.Value(), &inv) == nil && Final(inv.State)
	})
	return inv
}

// failingRunner is runner whose first run makes the next state reads
// fail.
type failingRunner struct {
	*runner
	once  sync.Once
	fault func()
}

func (r *failingRunner) Run(ctx context.Context, ev Event) Result {
	r.once.Do(r.fault)
	return r.runner.Run(ctx, ev)
}

// A delivery that cannot read the invocation's state waits: it does not
// start again from attempt 1 (running the event once more than the policy
// says, and losing the attempts so far).
func TestStateReadFailureDefersTheEvent(t *testing.T) {
	q := openQueue(t)
	raw := q.states
	kv := &faultyKV{KeyValue: raw}
	q.states = kv
	r := &failingRunner{runner: &runner{fns: map[string]function.Function{"f": testFunction(t, "f", nil)},
		fails: map[string]int{"f": 1}, runs: map[string]int{}}}
	// After the first attempt, the retry's reads of the state fail twice.
	r.fault = func() { kv.mu.Lock(); kv.failGets = 2; kv.mu.Unlock() }
	d, err := q.Dispatch(r, DispatchOptions{RetryBase: 10 * time.Millisecond, Scan: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	acc, err := q.Enqueue(clustertest.Context(t), "f", []byte(`{}`), "")
	if err != nil {
		t.Fatal(err)
	}
	inv := awaitRaw(t, raw, acc.ID)
	r.mu.Lock()
	runs := r.runs[acc.ID]
	r.mu.Unlock()
	kv.mu.Lock()
	failed := kv.getFailed
	kv.mu.Unlock()
	if failed == 0 {
		t.Fatal("no state read failed: the test tests nothing")
	}
	if inv.State != StateSucceeded || len(inv.Attempts) != 2 || inv.Attempts[0].Number != 1 || inv.Attempts[1].Number != 2 || runs != 2 {
		t.Fatalf("%s with attempts %+v after %d runs; want succeeded on attempt 2 after 2 runs", inv.State, inv.Attempts, runs)
	}
}

// A settled invocation whose state cannot be written at first is not
// acknowledged with its state left unsettled: the write is tried again
// until it holds, and the event does not run again.
func TestFinalStateWriteFailureIsTriedAgain(t *testing.T) {
	q := openQueue(t)
	raw := q.states
	kv := &faultyKV{KeyValue: raw, failPuts: 3, putsWith: []byte(`"state":"succeeded"`)}
	q.states = kv
	r := &runner{fns: map[string]function.Function{"f": testFunction(t, "f", nil)}, fails: map[string]int{}, runs: map[string]int{}}
	d, err := q.Dispatch(r, DispatchOptions{RetryBase: 10 * time.Millisecond, Scan: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := clustertest.Context(t)
	acc, err := q.Enqueue(ctx, "f", []byte(`{"z":3}`), "")
	if err != nil {
		t.Fatal(err)
	}
	inv := awaitRaw(t, raw, acc.ID)
	if inv.State != StateSucceeded || len(inv.Attempts) != 1 || string(inv.Result) != `{"z":3}` {
		t.Fatalf("%s with attempts %+v, result %s; want succeeded once with its event", inv.State, inv.Attempts, inv.Result)
	}
	kv.mu.Lock()
	failed := kv.putFailed
	kv.mu.Unlock()
	if failed != 3 {
		t.Fatalf("%d writes of the final state failed, want 3", failed)
	}
	clustertest.Eventually(t, "the event to leave the stream", func() bool {
		depth, err := q.Depth(ctx)
		return err == nil && depth["f"] == 0
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.runs[acc.ID] != 1 {
		t.Fatalf("ran %d times, want once", r.runs[acc.ID])
	}
}
