package async

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/store/jsstore"
)

// DeadLetter is one entry of a dead-letter queue.
type DeadLetter struct {
	Seq       uint64    `json:"seq"`
	ID        string    `json:"id"`
	Function  string    `json:"function"`
	Condition string    `json:"condition"`
	Time      time.Time `json:"time"`
	// Record is the destination record (event, last error).
	Record json.RawMessage `json:"record"`
}

// ErrNoDeadLetter: no such entry in the queue.
var ErrNoDeadLetter = errdefs.New(errdefs.NotFound, "dead_letter_not_found", "no such dead-letter entry")

// DeadLetters lists a dead-letter queue, oldest first, at most limit.
func (q *Queue) DeadLetters(ctx context.Context, name string, limit int) ([]DeadLetter, error) {
	var out []DeadLetter
	err := q.eachDeadLetter(ctx, name, func(dl DeadLetter) bool {
		out = append(out, dl)
		return limit <= 0 || len(out) < limit
	})
	return out, err
}

// DeadLetter returns one entry by its sequence number.
func (q *Queue) DeadLetter(ctx context.Context, name string, seq uint64) (DeadLetter, error) {
	m, err := q.dlq.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) || (err == nil && m.Subject != dlqPrefix+name) {
		return DeadLetter{}, fmt.Errorf("%w: %s #%d", ErrNoDeadLetter, name, seq)
	}
	if err != nil {
		return DeadLetter{}, jsstore.Unanswered(err)
	}
	return DeadLetter{Seq: m.Sequence, ID: m.Header.Get(hdrID), Function: m.Header.Get(hdrOrigin),
		Condition: m.Header.Get(hdrReason), Time: m.Time.UTC(), Record: m.Data}, nil
}

// Redrive sends every entry of a dead-letter queue back to its function
// as a new asynchronous invocation of the original event, and removes it
// from the queue once accepted. It returns the new invocations' ids.
func (q *Queue) Redrive(ctx context.Context, name string) ([]string, error) {
	entries, err := q.DeadLetters(ctx, name, 0)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, dl := range entries {
		var rec Record
		if err := json.Unmarshal(dl.Record, &rec); err != nil || dl.Function == "" {
			return ids, fmt.Errorf("dead-letter %s #%d is not a destination record: %v", name, dl.Seq, err)
		}
		// The key makes a redrive that is repeated after a failure send
		// each entry once.
		acc, err := q.Enqueue(ctx, dl.Function, rec.RequestPayload, fmt.Sprintf("redrive-%s-%d", name, dl.Seq))
		if err != nil {
			return ids, fmt.Errorf("redrive %s #%d: %w", name, dl.Seq, err)
		}
		if err := q.dlq.DeleteMsg(ctx, dl.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return ids, fmt.Errorf("redrive %s #%d: remove it: %w", name, dl.Seq, jsstore.Unanswered(err))
		}
		ids = append(ids, acc.ID)
	}
	return ids, nil
}

func (q *Queue) eachDeadLetter(ctx context.Context, name string, f func(DeadLetter) bool) error {
	cons, err := q.dlq.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{dlqPrefix + name}})
	if err != nil {
		return jsstore.Unanswered(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return jsstore.Unanswered(err)
	}
	pending := info.NumPending
	for pending > 0 {
		batch, err := cons.Fetch(int(min(pending, 256)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return jsstore.Unanswered(err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			pending--
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			dl := DeadLetter{Seq: meta.Sequence.Stream, ID: m.Headers().Get(hdrID), Function: m.Headers().Get(hdrOrigin),
				Condition: m.Headers().Get(hdrReason), Time: meta.Timestamp.UTC(), Record: m.Data()}
			if !f(dl) {
				return nil
			}
		}
		if err := batch.Error(); err != nil {
			return jsstore.Unanswered(err)
		}
		if got == 0 {
			break
		}
	}
	return nil
}
