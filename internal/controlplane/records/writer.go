package records

import (
	"bytes"
	"context"
	"encoding/json"
	"time"
)

const (
	// writeTimeout bounds one store write.
	writeTimeout = 5 * time.Second
	// reportEvery spaces the log lines about records kept in memory only.
	reportEvery = 10 * time.Second
)

// batch is the records of one store write, encoded one after another in
// buf (each followed by the newline json.Encoder ends it with).
type batch struct {
	buf  bytes.Buffer
	enc  *json.Encoder
	ends []int    // where each record ends in buf, its newline excluded
	recs [][]byte // the records, slices of buf, for the store
	next *Record  // a record that would have made buf too big: the next batch's first
}

// write runs on the Log's goroutine until the queue is closed and
// drained: it gathers batches and stores each in one write.
func (l *Log) write() {
	defer close(l.done)
	b := &batch{}
	b.enc = json.NewEncoder(&b.buf)
	linger := time.NewTimer(l.opts.Linger)
	linger.Stop()
	var (
		lastErr    error
		reported   uint64
		reportedAt time.Time
		down       bool // the last write failed
	)
	for open := true; open; {
		open = l.collect(b, linger)
		if n := len(b.ends); n > 0 {
			// While closing, a store that just failed is not waited for
			// batch after batch.
			if down && l.closed.Load() {
				l.notStored.Add(uint64(n))
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
				err := l.opts.Store.AppendRecords(ctx, b.records())
				cancel()
				if down = err != nil; down {
					l.notStored.Add(uint64(n))
					lastErr = err
				}
			}
		}
		if n := l.notStored.Load(); n > reported && (!open || time.Since(reportedAt) >= reportEvery) {
			args := []any{"records", n - reported, "total", n}
			if lastErr != nil {
				args = append(args, "lastStoreErr", lastErr)
			}
			l.log.Warn("invocation records kept in memory only, not stored", args...)
			reported, reportedAt, lastErr = n, time.Now(), nil
		}
	}
}

// collect fills b with the next batch: it waits for a first record, then
// takes more until the batch is full, Linger has passed or the queue is
// closed and drained. It reports whether the queue is still open.
func (l *Log) collect(b *batch, linger *time.Timer) bool {
	b.reset(4 * l.opts.BatchBytes)
	if r := b.next; r != nil {
		b.next = nil
		l.encode(b, r)
	} else {
		r, ok := <-l.queue
		if !ok {
			return false
		}
		l.encode(b, r)
	}
	linger.Reset(l.opts.Linger)
	defer linger.Stop()
	for len(b.ends) < l.opts.BatchRecords && b.next == nil {
		select {
		case r, ok := <-l.queue:
			if !ok {
				return false
			}
			l.encode(b, r)
		case <-linger.C:
			return true
		}
	}
	return true
}

// encode adds r to the batch, or makes it the next batch's first if it
// would take the batch past BatchBytes. A record that cannot be encoded
// (none can fail today) is counted as not stored.
func (l *Log) encode(b *batch, r *Record) {
	start := b.buf.Len()
	if err := b.enc.Encode(r); err != nil {
		b.buf.Truncate(start)
		l.notStored.Add(1)
		l.log.Warn("encode invocation record", "id", r.ID, "err", err)
		return
	}
	if len(b.ends) > 0 && b.buf.Len() > l.opts.BatchBytes {
		b.buf.Truncate(start)
		b.next = r
		return
	}
	b.ends = append(b.ends, b.buf.Len()-1)
}

// records returns the batch's records as slices of its buffer.
func (b *batch) records() [][]byte {
	b.recs = b.recs[:0]
	data, start := b.buf.Bytes(), 0
	for _, end := range b.ends {
		b.recs = append(b.recs, data[start:end])
		start = end + 1
	}
	return b.recs
}

// reset empties the batch, keeping its memory unless one huge record
// grew it beyond keep bytes.
func (b *batch) reset(keep int) {
	if b.buf.Cap() > keep {
		b.buf = bytes.Buffer{} // the encoder writes to &b.buf, still this one
	}
	b.buf.Reset()
	b.ends = b.ends[:0]
}
