package jsstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A failed revision check is a conflict whichever code the server uses:
// replicated streams may answer 10164 instead of 10071.
func TestWrongSequenceCodes(t *testing.T) {
	for _, code := range []jetstream.ErrorCode{jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant} {
		err := fmt.Errorf("update: %w", &jetstream.APIError{Code: 400, ErrorCode: code, Description: "wrong last sequence"})
		if !RevisionMismatch(err) {
			t.Errorf("error code %d is not taken for a revision conflict", code)
		}
	}
	if RevisionMismatch(&jetstream.APIError{Code: 503, ErrorCode: errCodeClusterNotAvail}) {
		t.Error("an unavailable cluster is taken for a revision conflict")
	}
}

// retryRead asks again after an unanswered request and stops at once on
// an answer, even a negative one.
func TestRetryRead(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	calls := 0
	v, err := retryRead(ctx, func(context.Context) (int, error) {
		calls++
		if calls < 3 {
			return 0, nats.ErrNoResponders
		}
		return 7, nil
	})
	if v != 7 || err != nil || calls != 3 {
		t.Errorf("got %d, %v after %d calls; want 7 after 3 calls", v, err, calls)
	}
	calls = 0
	_, err = retryRead(ctx, func(context.Context) (int, error) {
		calls++
		return 0, jetstream.ErrKeyNotFound
	})
	if !errors.Is(err, jetstream.ErrKeyNotFound) || calls != 1 {
		t.Errorf("not found: %v after %d calls; want it after 1", err, calls)
	}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	_, err = retryRead(short, func(context.Context) (int, error) { return 0, nats.ErrTimeout })
	if !errors.Is(err, nats.ErrTimeout) {
		t.Errorf("when ctx ends: %v, want the last error", err)
	}
}
