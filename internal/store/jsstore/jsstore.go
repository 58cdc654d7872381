// Package jsstore implements Baton's stores on NATS JetStream: a KV bucket
// for functions, an object store for code, and a size-bounded stream for
// invocation records.
package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/store"
)

const (
	functionsBucket = "baton_functions"
	codeBucket      = "baton_code"
	recordsStream   = "BATON_RECORDS"
	recordsSubject  = "baton.records"
)

// AutoReplicas, as Options.Replicas (0 means the same), replicates each
// bucket and stream on min(3, servers) servers of the JetStream cluster the
// connection reaches, and keeps one copy on a server outside any cluster
// (`baton server`'s embedded one).
const AutoReplicas = -1

// Options set the replication and bound the record log.
type Options struct {
	// Replicas is the JetStream replication factor: 0 (or AutoReplicas)
	// chooses it from the server (1 for a single server, min(3, servers) in
	// a cluster, never fewer than a stream has), so that every process
	// opening the stores agrees on it; n > 0 asks for exactly n, which
	// may also lower an existing stream's copies.
	Replicas int
	// MaxRecords bounds the invocation record stream in records: it
	// keeps at least the newest MaxRecords (bytes permitting) and, once
	// this Store has appended 2×MaxRecords, purges what is older than its
	// own newest MaxRecords, so the stream holds about 1–2×MaxRecords
	// records per process writing them. It is also the stream's MaxMsgs,
	// a ceiling in messages, each holding one record or a batch of them.
	// MaxRecordBytes bounds the stream's size (MaxBytes).
	//
	// Records are not fsynced as they are appended: an append is
	// acknowledged once the embedded server (or, in a cluster, a quorum
	// of replicas) has written it to its files, and JetStream fsyncs
	// them on its own interval (nats-server's default, two minutes),
	// which Baton does not change for this or any other stream. A
	// machine crash may lose what was not synced yet; a process crash
	// loses nothing acknowledged.
	MaxRecords     int64
	MaxRecordBytes int64
	// Logger, when set, tells why Open waits (a cluster without a
	// JetStream leader yet) and reports a failed trim of the record
	// stream.
	Logger *slog.Logger
}

// Store implements store.Functions, store.Blobs and store.Records.
type Store struct {
	js      jetstream.JetStream
	fns     jetstream.KeyValue
	code    jetstream.ObjectStore
	records jetstream.Stream
	trim    recordTrim
	log     *slog.Logger
}

// Open creates or opens the buckets and stream. It is safe for several
// processes to open the same stores at once (controller replicas
// starting together): creation is create-or-update, and conflicts between
// them, as well as a cluster still electing its JetStream leader, are
// retried until ctx ends.
func Open(ctx context.Context, nc *nats.Conn, o Options) (*Store, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	op := opener{js: js, log: log, want: o.Replicas, clustered: nc.ConnectedClusterName() != ""}
	st := &Store{js: js, trim: recordTrim{max: o.MaxRecords}, log: log}
	// Create first (identical creates are idempotent) and update only what
	// exists with other settings: see updateExisting.
	st.fns, err = ensureKV(ctx, op, "functions bucket", jetstream.KeyValueConfig{
		Bucket: functionsBucket, History: 1, Storage: jetstream.FileStorage, Description: "Baton function definitions",
	})
	if err != nil {
		return nil, err
	}
	err = op.ensure(ctx, "code object store", "OBJ_"+codeBucket, func(ctx context.Context, replicas int) error {
		cfg := jetstream.ObjectStoreConfig{
			Bucket: codeBucket, Storage: jetstream.FileStorage, Replicas: replicas,
			Description: "Baton function code archives by digest",
		}
		obj, err := js.CreateObjectStore(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			if err = updateExisting(ctx, js, "OBJ_"+codeBucket); err == nil {
				obj, err = js.UpdateObjectStore(ctx, cfg)
			}
		}
		st.code = obj
		return err
	})
	if err != nil {
		return nil, err
	}
	st.records, err = ensureStream(ctx, op, "records stream", jetstream.StreamConfig{
		Name: recordsStream, Subjects: []string{recordsSubject + ".>"}, Storage: jetstream.FileStorage,
		MaxMsgs: o.MaxRecords, MaxBytes: o.MaxRecordBytes, Discard: jetstream.DiscardOld,
		Description: "Baton invocation records (bounded)",
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

// GetFunction implements store.Functions.
func (s *Store) GetFunction(ctx context.Context, name string) (function.Function, uint64, error) {
	e, err := retryRead(ctx, func(ctx context.Context) (jetstream.KeyValueEntry, error) {
		// From the leader: a function read right after its deploy (or
		// read back to be updated) must be the one written.
		return LatestGet(ctx, s.js, s.fns, name)
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return function.Function{}, 0, fmt.Errorf("function %q: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return function.Function{}, 0, fmt.Errorf("get function %q: %w", name, Unanswered(err))
	}
	var fn function.Function
	if err := json.Unmarshal(e.Value(), &fn); err != nil {
		return function.Function{}, 0, fmt.Errorf("decode function %q: %w", name, err)
	}
	return fn, e.Revision(), nil
}

// ListFunctions implements store.Functions.
func (s *Store) ListFunctions(ctx context.Context) ([]function.Function, error) {
	keys, err := retryRead(ctx, func(ctx context.Context) ([]string, error) {
		lister, err := s.fns.ListKeys(ctx)
		if err != nil {
			return nil, err
		}
		var keys []string
		for key := range lister.Keys() {
			keys = append(keys, key)
		}
		// The lister ends its list early, without an error, when ctx
		// ends.
		return keys, ctx.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list functions: %w", Unanswered(err))
	}
	var out []function.Function
	for _, key := range keys {
		fn, _, err := s.GetFunction(ctx, key)
		if errors.Is(err, store.ErrNotFound) {
			continue // deleted while listing
		}
		if err != nil {
			return nil, err
		}
		out = append(out, fn)
	}
	return out, nil
}

// PutFunction implements store.Functions.
func (s *Store) PutFunction(ctx context.Context, fn function.Function, revision uint64) (uint64, error) {
	data, err := json.Marshal(fn)
	if err != nil {
		return 0, fmt.Errorf("encode function %q: %w", fn.Name, err)
	}
	var rev uint64
	if revision == 0 {
		rev, err = s.fns.Create(ctx, fn.Name, data)
	} else {
		rev, err = s.fns.Update(ctx, fn.Name, data, revision)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || RevisionMismatch(err) {
		return 0, fmt.Errorf("function %q: %w", fn.Name, store.ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("store function %q: %w", fn.Name, Unanswered(err))
	}
	return rev, nil
}

// RevisionMismatch reports a failed revision check (a compare-and-set lost). Replicated (R>1)
// streams report it with another code than single-server ones.
func RevisionMismatch(err error) bool {
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// DeleteFunction implements store.Functions.
func (s *Store) DeleteFunction(ctx context.Context, name string) error {
	if err := s.fns.Purge(ctx, name); err != nil {
		return fmt.Errorf("delete function %q: %w", name, Unanswered(err))
	}
	return nil
}

// PutBlob implements store.Blobs. What was stored is read back and
// checked against the digest the object store keeps: in a cluster, a
// chunk whose acknowledgement was lost while leaders changed can be
// stored twice, which leaves an object that can never be read. Such an
// object is written again when r can be rewound (an io.Seeker), else
// reported as store_unavailable for the caller to retry.
func (s *Store) PutBlob(ctx context.Context, name string, r io.Reader) error {
	for attempt := 1; ; attempt++ {
		if _, err := s.code.Put(ctx, jetstream.ObjectMeta{Name: name}, r); err != nil {
			return fmt.Errorf("store blob %s: %w", name, Unanswered(err))
		}
		// Only a corrupt object matters here: a replica that has yet to
		// see the write may answer not-found, and the write itself was
		// acknowledged by a majority.
		err := s.checkBlob(ctx, name)
		if !errors.Is(err, jetstream.ErrDigestMismatch) {
			return nil
		}
		seeker, ok := r.(io.Seeker)
		if !ok || attempt == 3 {
			return fmt.Errorf("store blob %s: stored corrupt: %w", name, Unanswered(err))
		}
		if _, serr := seeker.Seek(0, io.SeekStart); serr != nil {
			return fmt.Errorf("store blob %s: stored corrupt, and cannot rewrite it: %w", name, serr)
		}
	}
}

// checkBlob reads a blob through, which checks it against its digest.
func (s *Store) checkBlob(ctx context.Context, name string) error {
	rc, err := s.GetBlob(ctx, name)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err
}

// GetBlob implements store.Blobs. Opening a blob creates a consumer, which
// the stream's leader and the meta leader must answer; like a read (see
// retryRead) it is asked again when the answer does not come.
func (s *Store) GetBlob(ctx context.Context, name string) (io.ReadCloser, error) {
	for wait := firstRead; ; wait = min(2*wait, lastAttempt) {
		// The context of Get also governs the read that follows, so it
		// is cancelled on a timer only until Get returns.
		rctx, cancel := context.WithCancel(ctx)
		timer := time.AfterFunc(wait, cancel)
		res, err := s.code.Get(rctx, name)
		answered := timer.Stop()
		if answered && err == nil {
			return blobReader{ObjectResult: res, cancel: cancel}, nil
		}
		cancel()
		if err == nil {
			res.Close() // opened just as the timer fired
		}
		switch {
		case ctx.Err() != nil:
			return nil, fmt.Errorf("get blob %s: %w", name, ctx.Err())
		case errors.Is(err, jetstream.ErrObjectNotFound):
			return nil, fmt.Errorf("blob %s: %w", name, store.ErrNotFound)
		case answered && !lostRequest(err):
			return nil, fmt.Errorf("get blob %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("get blob %s: %w", name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// blobReader ends the read's context when the reader is closed.
type blobReader struct {
	jetstream.ObjectResult
	cancel context.CancelFunc
}

func (b blobReader) Close() error {
	err := b.ObjectResult.Close()
	b.cancel()
	return err
}

// HasBlob implements store.Blobs.
func (s *Store) HasBlob(ctx context.Context, name string) (bool, error) {
	_, err := retryRead(ctx, func(ctx context.Context) (*jetstream.ObjectInfo, error) { return s.code.GetInfo(ctx, name) })
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat blob %s: %w", name, Unanswered(err))
	}
	return true, nil
}

// DeleteBlob implements store.Blobs.
func (s *Store) DeleteBlob(ctx context.Context, name string) error {
	err := s.code.Delete(ctx, name)
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("delete blob %s: %w", name, Unanswered(err))
	}
	return nil
}

var (
	_ store.Functions = (*Store)(nil)
	_ store.Blobs     = (*Store)(nil)
	_ store.Records   = (*Store)(nil)
)
