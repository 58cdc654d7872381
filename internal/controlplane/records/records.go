// Package records keeps a bounded log of invocation records (OpenWhisk's
// "activations"): what every invocation did, for `baton logs` and the API.
// Records are held in memory for queries and written asynchronously to a
// durable store, so recording never adds a persistent write to the
// invocation path; on start the newest records are loaded back.
package records

import (
	"context"
	"encoding/json"
	apiv1 "github.com/baton-faas/baton/api/v1"
	"log/slog"
	"sync"
	"time"

	"github.com/baton-faas/baton/internal/store"
	"github.com/baton-faas/baton/internal/workerapi"
)

// Status values of a record.
const (
	StatusSuccess       = apiv1.StatusSuccess
	StatusFunctionError = apiv1.StatusFunctionError
	StatusTimeout       = apiv1.StatusTimeout
	StatusCrash         = apiv1.StatusCrash
	StatusTooLarge      = apiv1.StatusTooLarge
	StatusOutOfMemory   = apiv1.StatusOutOfMemory
	StatusInitError     = apiv1.StatusInitError
	StatusFailed        = apiv1.StatusFailed
	StatusWorkerLost    = apiv1.StatusWorkerLost
)

// Record describes one invocation.
type Record struct {
	ID            string                   `json:"id"`
	Function      string                   `json:"function"`
	Version       int                      `json:"version,omitempty"`
	Start         time.Time                `json:"start"`
	End           time.Time                `json:"end"`
	DurationMs    float64                  `json:"durationMs"`
	WaitMs        float64                  `json:"waitMs"`
	InitMs        float64                  `json:"initMs,omitempty"`
	ExecMs        float64                  `json:"execMs"`
	Cold          bool                     `json:"cold"`
	Status        string                   `json:"status"`
	Error         *workerapi.FunctionError `json:"error,omitempty"`
	Instance      string                   `json:"instance,omitempty"`
	Logs          string                   `json:"logs,omitempty"`
	LogsTruncated bool                     `json:"logsTruncated,omitempty"`
	ResponseBytes int                      `json:"responseBytes"`
	RequestBytes  int                      `json:"requestBytes"`
	// Attempt is an asynchronous invocation's attempt (1-based); all its
	// attempts share the invocation's id. Zero for synchronous calls.
	Attempt int `json:"attempt,omitempty"`
}

// Options bound the log.
type Options struct {
	// Max is the number of records kept (in memory and in the store).
	Max    int
	Store  store.Records
	Logger *slog.Logger
}

// Log is the bounded record log.
type Log struct {
	opts Options
	log  *slog.Logger

	mu   sync.RWMutex
	ring []*Record // oldest first, at most Max
	head int       // index of the oldest record once the ring is full
	byID map[string]*Record
	// closed is set by Close under mu; Add sends on queue only under mu
	// and while !closed, so it never sends on the closed channel.
	closed bool
	queue  chan *Record
	done   chan struct{}
}

// Open loads the newest records from the store and starts the writer.
func Open(ctx context.Context, opts Options) (*Log, error) {
	if opts.Max <= 0 {
		opts.Max = 5000
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Log{opts: opts, log: opts.Logger, byID: map[string]*Record{}, queue: make(chan *Record, 4096), done: make(chan struct{})}
	if opts.Store != nil {
		raw, err := opts.Store.RecentRecords(ctx, opts.Max)
		if err != nil {
			l.log.Warn("could not load invocation records", "err", err)
		}
		for _, b := range raw {
			var r Record
			if json.Unmarshal(b, &r) == nil && r.ID != "" {
				l.insert(&r)
			}
		}
	}
	go l.write()
	return l, nil
}

func (l *Log) insert(r *Record) {
	if len(l.ring) < l.opts.Max {
		l.ring = append(l.ring, r)
	} else {
		// An async invocation's attempts share an id: evicting an older
		// attempt must not forget the newer one.
		if old := l.ring[l.head]; l.byID[old.ID] == old {
			delete(l.byID, old.ID)
		}
		l.ring[l.head] = r
		l.head = (l.head + 1) % len(l.ring)
	}
	l.byID[r.ID] = r
}

// Add records an invocation. It never blocks on the store: if the writer
// is far behind, or the log is closed, the record is kept in memory only
// and a warning logged.
func (l *Log) Add(r *Record) {
	l.mu.Lock()
	l.insert(r)
	queued := l.opts.Store == nil
	if !queued && !l.closed {
		select {
		case l.queue <- r: // never blocks: the lock is not held across a wait
			queued = true
		default:
		}
	}
	closed := l.closed
	l.mu.Unlock()
	switch {
	case queued:
	case closed:
		l.log.Warn("invocation record log is closed; record kept in memory only", "id", r.ID)
	default:
		l.log.Warn("invocation record store is behind; record kept in memory only", "id", r.ID)
	}
}

func (l *Log) write() {
	defer close(l.done)
	for r := range l.queue {
		b, err := json.Marshal(r)
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := l.opts.Store.AppendRecord(ctx, r.Function, b); err != nil {
			l.log.Warn("store invocation record", "id", r.ID, "err", err)
		}
		cancel()
	}
}

// Close flushes pending records to the store. Records added afterwards
// stay in memory only; closing twice is harmless.
func (l *Log) Close() {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.queue)
	}
	l.mu.Unlock()
	<-l.done
}

// Get returns a record by id.
func (l *Log) Get(id string) (Record, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	r, ok := l.byID[id]
	if !ok {
		return Record{}, false
	}
	return *r, true
}

// Query returns the newest records, newest first, optionally of one
// function, at most limit.
func (l *Log) Query(fn string, limit int) []Record {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := []Record{}
	n := len(l.ring)
	for i := n - 1; i >= 0 && len(out) < limit; i-- {
		r := l.ring[(l.head+i)%n]
		if fn == "" || r.Function == fn {
			out = append(out, *r)
		}
	}
	return out
}
