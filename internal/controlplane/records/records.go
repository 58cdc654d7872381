// Package records keeps a bounded log of invocation records (OpenWhisk's
// "activations"): what every invocation did, for `baton logs` and the API.
// Records are held in memory for queries and written to a durable store
// by a writer goroutine, in batches, so that recording adds no store
// write (and no encoding) to the invocation path; on start the newest
// records are loaded back.
//
// What a crash may lose: the records not stored yet, that is those
// waiting in the queue (at most Options.QueueRecords) and those the
// writer is gathering or writing (at most Options.BatchRecords, for at
// most Options.Linger plus one store write). Nothing is fsynced per
// invocation: a stored record is on the store's files, which it syncs on
// its own interval (see jsstore.Options.MaxRecords). Records that find
// the queue full (the store is behind) or that the store refused are
// kept in memory only, counted (NotStored) and reported in one log line
// at most every ten seconds.
package records

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
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
	// QueueRecords bounds the records waiting for the writer (default
	// 4096); beyond it they are kept in memory only.
	QueueRecords int
	// BatchRecords and BatchBytes bound one store write, in records
	// (default 256) and encoded bytes (default 256 KiB; a larger record
	// goes alone).
	BatchRecords int
	BatchBytes   int
	// Linger is how long the writer waits for more records after the
	// first of a batch (default 5 ms).
	Linger time.Duration
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
	// and while !closed, so it never sends on the closed channel. The
	// writer reads it without mu.
	closed atomic.Bool
	queue  chan *Record
	done   chan struct{}
	// notStored counts the records kept in memory only.
	notStored atomic.Uint64
}

// Open loads the newest records from the store and starts the writer.
func Open(ctx context.Context, opts Options) (*Log, error) {
	if opts.Max <= 0 {
		opts.Max = 5000
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.QueueRecords <= 0 {
		opts.QueueRecords = 4096
	}
	if opts.BatchRecords <= 0 {
		opts.BatchRecords = 256
	}
	if opts.BatchBytes <= 0 {
		opts.BatchBytes = 256 << 10
	}
	if opts.Linger <= 0 {
		opts.Linger = 5 * time.Millisecond
	}
	l := &Log{opts: opts, log: opts.Logger, byID: map[string]*Record{}, queue: make(chan *Record, opts.QueueRecords), done: make(chan struct{})}
	if opts.Store == nil {
		close(l.done)
		return l, nil
	}
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

// Add records an invocation. It never blocks on the store, nor encodes:
// the record is queued for the writer, or, if the queue is full (the
// store is behind) or the log closed, kept in memory only and counted.
// The caller must not change r afterwards.
func (l *Log) Add(r *Record) {
	l.mu.Lock()
	l.insert(r)
	if l.opts.Store != nil {
		queued := false
		if !l.closed.Load() {
			select {
			case l.queue <- r: // never blocks: the lock is not held across a wait
				queued = true
			default:
			}
		}
		if !queued {
			l.notStored.Add(1)
		}
	}
	l.mu.Unlock()
}

// NotStored is the number of records kept in memory only: they found the
// queue full or the log closed, or the store refused them.
func (l *Log) NotStored() uint64 {
	return l.notStored.Load()
}

// Close writes what is queued to the store and stops the writer. Records
// added afterwards stay in memory only; closing twice is harmless.
func (l *Log) Close() {
	l.mu.Lock()
	if !l.closed.Load() {
		l.closed.Store(true)
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
