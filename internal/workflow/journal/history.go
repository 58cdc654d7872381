package journal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/store/jsstore"
)

const (
	historyStream = "BATON_WF_HISTORY"
	historyPrefix = "baton.wfh."
	// maxHistoryInFlight bounds the events published and not yet
	// acknowledged: beyond it Append drops events (and counts them)
	// rather than slow the steps down.
	maxHistoryInFlight = 4096
)

// HistoryEvent is one entry of an execution's history.
type HistoryEvent struct {
	Kind    string    `json:"kind"` // ExecutionStarted, StateEntered, StateExited, TaskScheduled, TaskSucceeded, TaskFailed, ...
	State   string    `json:"state,omitempty"`
	Path    string    `json:"path,omitempty"`
	Time    time.Time `json:"time"`
	Attempt int       `json:"attempt,omitempty"`
	// Millis is how long the state (StateExited) or the task's
	// invocation (TaskSucceeded, TaskFailed) took, or how long a retry
	// waits (StateRetrying).
	Millis float64 `json:"millis,omitempty"`
	// Host is the worker a task ran on; Bus says how its event got
	// there: "local" (handed over in the process that runs the
	// execution) or "global" (through JetStream, to the controller that
	// serves the function).
	Host    string `json:"host,omitempty"`
	Bus     string `json:"bus,omitempty"`
	Error   string `json:"error,omitempty"`
	Cause   string `json:"cause,omitempty"`
	Runner  string `json:"runner,omitempty"`  // who ran this part of the execution
	Version int    `json:"version,omitempty"` // the workflow's version (ExecutionStarted)
}

// History appends executions' events to the stream BATON_WF_HISTORY (one
// subject per execution) without waiting for them to be stored, and
// reads them back.
type History struct {
	js  jetstream.JetStream
	log *slog.Logger

	mu      sync.Mutex // guards dropped; a leaf
	dropped int
}

// OpenHistory opens (or makes) the history stream; events are kept for
// retention.
func OpenHistory(ctx context.Context, nc *nats.Conn, retention time.Duration, log *slog.Logger) (*History, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(maxHistoryInFlight))
	if err != nil {
		return nil, fmt.Errorf("execution history: %w", err)
	}
	if _, err := jsstore.EnsureStream(ctx, js, log, "execution history stream", jetstream.StreamConfig{
		Name: historyStream, Subjects: []string{historyPrefix + ">"}, Storage: jetstream.FileStorage,
		MaxAge: retention, Description: "Baton workflow execution histories",
	}); err != nil {
		return nil, err
	}
	return &History{js: js, log: log}, nil
}

// Append publishes an event of an execution; it does not wait for the
// store (order is kept: one connection publishes them in turn).
func (h *History) Append(id string, ev HistoryEvent) {
	data, err := json.Marshal(ev)
	if err != nil {
		return
	}
	if _, err := h.js.PublishAsync(historyPrefix+id, data); err != nil {
		h.mu.Lock()
		h.dropped++
		n := h.dropped
		h.mu.Unlock()
		if n == 1 || n%1000 == 0 {
			h.log.Warn("execution history: events dropped", "dropped", n, "err", err)
		}
	}
}

// Flush waits until the events appended so far are stored (or ctx ends).
func (h *History) Flush(ctx context.Context) {
	select {
	case <-h.js.PublishAsyncComplete():
	case <-ctx.Done():
	}
}

// Read returns an execution's events in order, at most limit (0: all).
func (h *History) Read(ctx context.Context, id string, limit int) ([]HistoryEvent, error) {
	// An ephemeral consumer of its own, deleted when read (and by the
	// server if this reader dies first).
	c, err := h.js.CreateConsumer(ctx, historyStream, jetstream.ConsumerConfig{
		FilterSubject: historyPrefix + id, DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: 30 * time.Second, MemoryStorage: true,
	})
	if err != nil {
		return nil, fmt.Errorf("read history of %s: %w", id, jsstore.Unanswered(err))
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = h.js.DeleteConsumer(dctx, historyStream, c.CachedInfo().Name)
	}()
	info, err := c.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read history of %s: %w", id, jsstore.Unanswered(err))
	}
	want := int(info.NumPending)
	if limit > 0 && want > limit {
		want = limit
	}
	out := make([]HistoryEvent, 0, want)
	for len(out) < want {
		batch, err := c.Fetch(min(want-len(out), 500), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("read history of %s: %w", id, jsstore.Unanswered(err))
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var ev HistoryEvent
			if json.Unmarshal(m.Data(), &ev) == nil {
				out = append(out, ev)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("read history of %s: %w", id, jsstore.Unanswered(err))
		}
		if n == 0 {
			break // expired meanwhile
		}
	}
	return out, nil
}
