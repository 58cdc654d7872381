// Package journal records workflow executions on the global bus
// (JetStream KV `baton_executions`): status, input, output or error, and
// the resume point (the next top-level state and its input) after each
// finished step. Records are written by a background writer, off the
// steps' critical path, coalescing the updates of one execution, so a
// crash loses at most the steps finished since the last write: those
// steps run again when the execution resumes (steps are at least once).
package journal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/store/jsstore"
)

const (
	bucket = "baton_executions"
	// runningBucket lists the executions not finished (one key each), so
	// that looking for executions to resume does not read every
	// execution kept.
	runningBucket = "baton_executions_running"
)

// Statuses of an execution.
const (
	Running   = "RUNNING"
	Succeeded = "SUCCEEDED"
	Failed    = "FAILED"
)

// Errors of the journal.
var (
	ErrNotFound = errdefs.New(errdefs.NotFound, "execution_not_found", "execution not found")
	// ErrExists: Create found an execution of that id (an idempotent
	// start repeated).
	ErrExists = errdefs.New(errdefs.Conflict, "execution_exists", "execution exists")
	// ErrClaimed: another runner changed the execution first.
	ErrClaimed = errdefs.New(errdefs.Conflict, "execution_claimed", "execution claimed by another runner")
)

// Execution is what is kept of one execution.
type Execution struct {
	ID       string `json:"id"`
	Workflow string `json:"workflow"`
	Version  int    `json:"version"`
	// Definition is the version's definition: an execution runs to its
	// end on the version it started with.
	Definition json.RawMessage `json:"definition,omitempty"`
	Status     string          `json:"status"`
	Input      json.RawMessage `json:"input"`
	Output     json.RawMessage `json:"output,omitempty"`
	Error      string          `json:"error,omitempty"`
	Cause      string          `json:"cause,omitempty"`
	Started    time.Time       `json:"started"`
	Stopped    time.Time       `json:"stopped,omitzero"`
	// ResumeAt and ResumeInput are where a running execution goes on
	// after a crash: the next top-level state and its input.
	ResumeAt    string          `json:"resumeAt,omitempty"`
	ResumeInput json.RawMessage `json:"resumeInput,omitempty"`
	// ResumeAttempts counts the runs of the ResumeAt state that started:
	// a run after a crash is attempt ResumeAttempts+1.
	ResumeAttempts int `json:"resumeAttempts,omitempty"`
	// WaitUntil is when the top-level Wait state at ResumeAt ends.
	WaitUntil time.Time `json:"waitUntil,omitzero"`
	// Steps counts the top-level states finished.
	Steps int `json:"steps,omitempty"`
	// Holder is the runner (a controller's node id, or a server's boot
	// id) driving the execution; Epoch grows each time another runner
	// claims it, and Seq with each update its holder makes: a stored
	// state is replaced only by one with a greater (Epoch, Seq), so a
	// late write of a slower writer, or of a runner that lost the
	// execution, never goes back in time.
	Holder  string    `json:"holder,omitempty"`
	Epoch   int       `json:"epoch"`
	Seq     int       `json:"seq"`
	Updated time.Time `json:"updated"`
}

// newer says a replaces b.
func (a Execution) newer(b Execution) bool {
	if a.Epoch != b.Epoch {
		return a.Epoch > b.Epoch
	}
	return a.Seq > b.Seq
}

// Final says the execution ended.
func (e Execution) Final() bool { return e.Status == Succeeded || e.Status == Failed }

// Journal writes and reads execution records.
type Journal struct {
	kv      jetstream.KeyValue
	running jetstream.KeyValue
	log     *slog.Logger

	mu      sync.Mutex // guards pending and closed; a leaf
	pending map[string]Execution
	closed  bool
	wake    chan struct{}
	done    chan struct{}
}

// Open opens (or makes) the executions bucket and starts the writer.
func Open(ctx context.Context, nc *nats.Conn, retention time.Duration, log *slog.Logger) (*Journal, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("executions: %w", err)
	}
	kv, err := jsstore.EnsureKV(ctx, js, log, "executions bucket", jetstream.KeyValueConfig{
		Bucket: bucket, History: 1, TTL: retention, Storage: jetstream.FileStorage,
		Description: "Baton workflow executions",
	})
	if err != nil {
		return nil, err
	}
	running, err := jsstore.EnsureKV(ctx, js, log, "running executions bucket", jetstream.KeyValueConfig{
		Bucket: runningBucket, History: 1, Storage: jetstream.FileStorage, Description: "Baton workflow executions not finished",
	})
	if err != nil {
		return nil, err
	}
	j := &Journal{kv: kv, running: running, log: log, pending: map[string]Execution{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go j.write()
	return j, nil
}

// Record queues an execution's new state; the writer stores the newest
// state of each execution. It never blocks on the store.
func (j *Journal) Record(e Execution) {
	e.Updated = time.Now().UTC()
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		j.log.Warn("workflow journal closed; an execution's state was not recorded", "execution", e.ID, "status", e.Status)
		return
	}
	j.pending[e.ID] = e
	j.mu.Unlock()
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

// Store writes an execution's state now, for the moments that must be
// durable before they are acknowledged (an execution accepted, ended).
func (j *Journal) Store(ctx context.Context, e Execution) error {
	e.Updated = time.Now().UTC()
	if err := j.put(ctx, e); err != nil {
		return err
	}
	if e.Final() {
		// Not needed for correctness (Unfinished skips what ended), only
		// to keep the list short.
		if err := j.running.Delete(ctx, e.ID); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			j.log.Debug("workflow journal: unlist an ended execution", "execution", e.ID, "err", err)
		}
	}
	return nil
}

// put stores e unless a newer state of the execution is stored already
// (the writer and Store may race): compare-and-set on the key's revision.
func (j *Journal) put(ctx context.Context, e Execution) error {
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode execution %s: %w", e.ID, err)
	}
	for {
		cur, err := j.kv.Get(ctx, e.ID)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			_, err = j.kv.Create(ctx, e.ID, data)
		case err != nil:
			return fmt.Errorf("store execution %s: %w", e.ID, jsstore.Unanswered(err))
		default:
			var stored Execution
			if json.Unmarshal(cur.Value(), &stored) == nil && !e.newer(stored) {
				return nil // a newer state is there
			}
			_, err = j.kv.Update(ctx, e.ID, data, cur.Revision())
		}
		if errors.Is(err, jetstream.ErrKeyExists) || jsstore.RevisionMismatch(err) {
			continue // someone wrote meanwhile: compare again
		}
		if err != nil {
			return fmt.Errorf("store execution %s: %w", e.ID, jsstore.Unanswered(err))
		}
		return nil
	}
}

func (j *Journal) write() {
	defer close(j.done)
	for {
		j.mu.Lock()
		batch := j.pending
		j.pending = map[string]Execution{}
		closed := j.closed
		j.mu.Unlock()
		for _, e := range batch {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := j.put(ctx, e); err != nil {
				j.log.Warn("workflow journal: record an execution", "execution", e.ID, "err", err)
			}
			cancel()
		}
		if closed {
			return
		}
		<-j.wake
	}
}

// Close writes what is queued and stops the writer.
func (j *Journal) Close() {
	j.mu.Lock()
	already := j.closed
	j.closed = true
	j.mu.Unlock()
	if !already {
		select {
		case j.wake <- struct{}{}:
		default:
		}
	}
	<-j.done
}

// Get reads an execution.
func (j *Journal) Get(ctx context.Context, id string) (Execution, error) {
	e, err := j.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Execution{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if err != nil {
		return Execution{}, fmt.Errorf("read execution %s: %w", id, jsstore.Unanswered(err))
	}
	var x Execution
	if err := json.Unmarshal(e.Value(), &x); err != nil {
		return Execution{}, fmt.Errorf("decode execution %s: %w", id, err)
	}
	return x, nil
}

// Create stores a new execution, durably, unless one of its id exists
// (ErrExists, with the stored one).
func (j *Journal) Create(ctx context.Context, e Execution) (Execution, error) {
	e.Updated = time.Now().UTC()
	data, err := json.Marshal(e)
	if err != nil {
		return Execution{}, fmt.Errorf("encode execution %s: %w", e.ID, err)
	}
	// Listed as running first: a crash in between leaves a listed id
	// without an execution, which Unfinished drops.
	if _, err := j.running.Put(ctx, e.ID, nil); err != nil {
		return Execution{}, fmt.Errorf("store execution %s: %w", e.ID, jsstore.Unanswered(err))
	}
	if _, err := j.kv.Create(ctx, e.ID, data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			x, gerr := j.Get(ctx, e.ID)
			if gerr != nil {
				return Execution{}, gerr
			}
			return x, fmt.Errorf("%w: %s", ErrExists, e.ID)
		}
		return Execution{}, fmt.Errorf("store execution %s: %w", e.ID, jsstore.Unanswered(err))
	}
	return e, nil
}

// Claim makes holder the runner of an unfinished execution, in a new
// epoch, if it is still as seen (same epoch and holder): of several
// runners claiming a lost execution, one wins; the others get
// ErrClaimed.
func (j *Journal) Claim(ctx context.Context, seen Execution, holder string) (Execution, error) {
	cur, err := j.kv.Get(ctx, seen.ID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Execution{}, fmt.Errorf("%w: %q", ErrNotFound, seen.ID)
	}
	if err != nil {
		return Execution{}, fmt.Errorf("read execution %s: %w", seen.ID, jsstore.Unanswered(err))
	}
	var x Execution
	if err := json.Unmarshal(cur.Value(), &x); err != nil {
		return Execution{}, fmt.Errorf("decode execution %s: %w", seen.ID, err)
	}
	if x.Final() || x.Epoch != seen.Epoch || x.Holder != seen.Holder {
		return Execution{}, fmt.Errorf("%w: %s", ErrClaimed, seen.ID)
	}
	x.Holder, x.Epoch, x.Seq, x.Updated = holder, x.Epoch+1, 0, time.Now().UTC()
	data, err := json.Marshal(x)
	if err != nil {
		return Execution{}, fmt.Errorf("encode execution %s: %w", x.ID, err)
	}
	if _, err := j.kv.Update(ctx, x.ID, data, cur.Revision()); err != nil {
		if jsstore.RevisionMismatch(err) {
			return Execution{}, fmt.Errorf("%w: %s", ErrClaimed, seen.ID)
		}
		return Execution{}, fmt.Errorf("claim execution %s: %w", seen.ID, jsstore.Unanswered(err))
	}
	return x, nil
}

// List returns the executions of one workflow (ids are WORKFLOW.ID),
// newest first, at most limit (0: all).
func (j *Journal) List(ctx context.Context, workflow string, limit int) ([]Execution, error) {
	lister, err := j.kv.ListKeysFiltered(ctx, workflow+".*")
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("list executions: %w", jsstore.Unanswered(err))
	}
	var out []Execution
	for k := range lister.Keys() {
		x, err := j.Get(ctx, k)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			_ = lister.Stop()
			return nil, err
		}
		out = append(out, x)
	}
	slices.SortFunc(out, func(a, b Execution) int { return b.Started.Compare(a.Started) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// Unfinished lists the executions still running: those to resume when
// their runner is gone.
func (j *Journal) Unfinished(ctx context.Context) ([]Execution, error) {
	lister, err := j.running.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("list executions: %w", jsstore.Unanswered(err))
	}
	var ids []string
	for k := range lister.Keys() {
		ids = append(ids, k)
	}
	var out []Execution
	for _, k := range ids {
		x, err := j.Get(ctx, k)
		if errors.Is(err, ErrNotFound) || err == nil && x.Final() {
			if time.Since(x.Updated) > time.Minute || errors.Is(err, ErrNotFound) && j.staleListing(ctx, k) {
				_ = j.running.Delete(ctx, k)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, nil
}

// staleListing says a running entry without an execution is old enough
// that its Create will not come (a crash between the two writes).
func (j *Journal) staleListing(ctx context.Context, id string) bool {
	e, err := j.running.Get(ctx, id)
	return err == nil && time.Since(e.Created()) > time.Minute
}
