package jsstore

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The record stream holds two kinds of messages. The current format is a
// batch: many records in one message on recordsBatchSubject, their number
// in the recordsCountHeader header, each record preceded by its length as
// a uvarint. Messages without that header hold one record each, as
// earlier releases wrote them (on recordsSubject.<function>); they are
// still read.
const (
	// recordsBatchSubject cannot be a function's subject: function names
	// are lower-case letters, digits and dashes.
	recordsBatchSubject = recordsSubject + "._batch"
	recordsCountHeader  = "Baton-Records"
	// headerRoom is kept free of records in a message for its headers,
	// which count against the server's payload limit.
	headerRoom = 256
)

// AppendRecords implements store.Records: the records go out in as few
// messages as the server's payload limit allows, each acknowledged once
// JetStream has stored it (written to its files, not fsynced: see
// Options.MaxRecords).
func (s *Store) AppendRecords(ctx context.Context, records [][]byte) error {
	limit := int(s.js.Conn().MaxPayload()) - headerRoom
	for sent := 0; sent < len(records); {
		n, data := frameRecords(records[sent:], limit)
		msg := &nats.Msg{Subject: recordsBatchSubject, Header: nats.Header{}, Data: data}
		msg.Header.Set(recordsCountHeader, strconv.Itoa(n))
		ack, err := s.js.PublishMsg(ctx, msg)
		if err != nil {
			return fmt.Errorf("append records: %d of %d stored: %w", sent, len(records), Unanswered(err))
		}
		sent += n
		s.trimRecords(ctx, ack.Sequence, n)
	}
	return nil
}

// AppendRecord stores one record in a message of its own, the format
// earlier releases wrote (and that RecentRecords still reads).
func (s *Store) AppendRecord(ctx context.Context, fn string, data []byte) error {
	ack, err := s.js.Publish(ctx, recordsSubject+"."+fn, data)
	if err != nil {
		return fmt.Errorf("append record: %w", Unanswered(err))
	}
	s.trimRecords(ctx, ack.Sequence, 1)
	return nil
}

// frameRecords encodes the first records that fit in limit bytes (at
// least one, whatever its size: the server then refuses it by name) and
// says how many it took.
func frameRecords(records [][]byte, limit int) (int, []byte) {
	size, n := 0, 0
	for _, r := range records {
		add := binary.MaxVarintLen64 + len(r)
		if n > 0 && size+add > limit {
			break
		}
		size += add
		n++
	}
	data := make([]byte, 0, size)
	for _, r := range records[:n] {
		data = binary.AppendUvarint(data, uint64(len(r)))
		data = append(data, r...)
	}
	return n, data
}

// unframeRecords splits a message's data into its records; they share
// data's memory.
func unframeRecords(data []byte, count int) ([][]byte, error) {
	out := make([][]byte, 0, count)
	for len(data) > 0 {
		size, n := binary.Uvarint(data)
		if n <= 0 || size > uint64(len(data)-n) {
			return nil, fmt.Errorf("record %d of %d: bad length", len(out)+1, count)
		}
		out = append(out, data[n:n+int(size)])
		data = data[n+int(size):]
	}
	if len(out) != count {
		return nil, fmt.Errorf("%d records, the header says %d", len(out), count)
	}
	return out, nil
}

// recordCount is the number of records a message holds: 1 for a message
// in the format of one record per message.
func recordCount(h nats.Header) (int, error) {
	v := h.Get(recordsCountHeader)
	if v == "" {
		return 1, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("bad %s header %q", recordsCountHeader, v)
	}
	return n, nil
}

// messageRecords returns the records a message holds.
func messageRecords(m jetstream.Msg) ([][]byte, error) {
	if m.Headers().Get(recordsCountHeader) == "" {
		return [][]byte{m.Data()}, nil
	}
	n, err := recordCount(m.Headers())
	if err != nil {
		return nil, err
	}
	return unframeRecords(m.Data(), n)
}

// RecentRecords implements store.Records. It reads the stream twice: the
// headers of the newest messages to find where its newest limit records
// begin (a message holds one or more, so the newest limit messages hold
// enough), then the messages from there.
func (s *Store) RecentRecords(ctx context.Context, limit int) ([][]byte, error) {
	info, err := s.records.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("records stream info: %w", err)
	}
	if info.State.Msgs == 0 || limit <= 0 {
		return nil, nil
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	if info.State.Msgs > uint64(limit) {
		first = last - uint64(limit) + 1
	}
	type counted struct {
		seq uint64
		n   int
	}
	var counts []counted
	err = s.readRecordMsgs(ctx, first, last, true, func(seq uint64, m jetstream.Msg) error {
		n, err := recordCount(m.Headers())
		if err != nil {
			return fmt.Errorf("records message %d: %w", seq, err)
		}
		counts = append(counts, counted{seq, n})
		return nil
	})
	if err != nil || len(counts) == 0 {
		return nil, err
	}
	from, held := counts[len(counts)-1].seq, 0
	for i := len(counts) - 1; i >= 0 && held < limit; i-- {
		from, held = counts[i].seq, held+counts[i].n
	}
	out := make([][]byte, 0, held)
	err = s.readRecordMsgs(ctx, from, last, false, func(seq uint64, m jetstream.Msg) error {
		recs, err := messageRecords(m)
		if err != nil {
			return fmt.Errorf("records message %d: %w", seq, err)
		}
		out = append(out, recs...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, nil
}

// readRecordMsgs hands each message of the record stream from sequence
// first through last to each, in order (only their headers if
// headersOnly). Messages dropped meanwhile are skipped.
func (s *Store) readRecordMsgs(ctx context.Context, first, last uint64, headersOnly bool, each func(seq uint64, m jetstream.Msg) error) error {
	cons, err := s.records.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: first, HeadersOnly: headersOnly,
	})
	if err != nil {
		return fmt.Errorf("read records: %w", err)
	}
	for next := first; next <= last; {
		batch, err := cons.Fetch(int(min(last-next+1, 4096)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return fmt.Errorf("fetch records: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			meta, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("fetch records: %w", err)
			}
			seq := meta.Sequence.Stream
			if seq > last {
				return nil
			}
			if err := each(seq, m); err != nil {
				return err
			}
			if next = seq + 1; next > last {
				return nil
			}
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("fetch records: %w", err)
		}
		if got == 0 {
			return nil // the rest was dropped while reading
		}
	}
	return nil
}

// recordTrim bounds the record stream in records. JetStream bounds a
// stream in messages (MaxMsgs, kept as a ceiling), and a message holds
// many records, so the store remembers the sequence and record count of
// its own appends, and once it has appended twice the bound it purges
// the messages before the one where its newest max records begin. What
// other processes appended meanwhile is only ever older than what it
// keeps or among it, so the newest max records of the stream survive.
type recordTrim struct {
	max int64

	mu      sync.Mutex
	appends []appended // oldest first
	held    int64      // records in appends
	cut     uint64     // the last purge's sequence
}

type appended struct {
	seq uint64
	n   int64
}

// add notes an append and returns the sequence to purge below, or 0.
func (t *recordTrim) add(seq uint64, n int) uint64 {
	if t.max <= 0 {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.appends = append(t.appends, appended{seq, int64(n)})
	t.held += int64(n)
	if t.held < 2*t.max {
		return 0
	}
	keep, held := len(t.appends)-1, int64(0)
	for ; keep > 0; keep-- {
		if held += t.appends[keep].n; held >= t.max {
			break
		}
	}
	t.appends = append(t.appends[:0], t.appends[keep:]...)
	t.held = 0
	for _, a := range t.appends {
		t.held += a.n
	}
	if cut := t.appends[0].seq; cut > t.cut {
		t.cut = cut
		return cut
	}
	return 0 // one append alone holds more than max: nothing more to cut
}

// trimRecords notes an append and purges what falls beyond the bound. A
// failed purge is only logged: the append succeeded, MaxMsgs and MaxBytes
// still bound the stream, and the next purge cuts at least as far.
func (s *Store) trimRecords(ctx context.Context, seq uint64, n int) {
	cut := s.trim.add(seq, n)
	if cut == 0 {
		return
	}
	if err := s.records.Purge(ctx, jetstream.WithPurgeSequence(cut)); err != nil {
		s.log.Warn("trim the invocation record stream", "below", cut, "err", err)
	}
}
