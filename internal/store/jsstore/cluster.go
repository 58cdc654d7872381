package jsstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/store"
)

// One create-or-update waits first firstAttempt, then twice as long each
// time up to lastAttempt: a JetStream API request can go unanswered while
// the cluster changes leaders, and a clustered server does not answer a
// create that duplicates another one still in flight (controllers starting
// together). The next attempt finds the stream and updates it.
const (
	firstAttempt = 2 * time.Second
	lastAttempt  = 16 * time.Second
)

// maxAutoReplicas is the replication AutoReplicas aims for: three copies
// survive the loss of one server and keep a quorum.
const maxAutoReplicas = 3

// JetStream error codes (nats-server's jetstream_errors_generated.go) that
// Open handles; nats.go names only some of them.
const (
	errCodeNoPeers            jetstream.ErrorCode = 10005 // no suitable peers for placement
	errCodeClusterNotAvail    jetstream.ErrorCode = 10008 // JetStream system temporarily unavailable
	errCodeClusterNotLeader   jetstream.ErrorCode = 10009 // JetStream cluster can not handle request
	errCodeInsufficientRes    jetstream.ErrorCode = 10023 // insufficient resources
	errCodeReplicasNotSupport jetstream.ErrorCode = 10074 // replicas > 1 not supported in non-clustered mode
)

// opener creates or updates Baton's streams with the replication chosen.
type opener struct {
	js        jetstream.JetStream
	log       *slog.Logger
	want      int  // Options.Replicas
	clustered bool // the server the connection reached is in a cluster
}

// ensure runs create (a create-or-update of the bucket or stream whose
// backing stream is named stream) with the replica count to use, retrying
// what another process or a cluster that is still forming causes.
func (op opener) ensure(ctx context.Context, what, stream string, create func(ctx context.Context, replicas int) error) error {
	wait, attempt := 100*time.Millisecond, firstAttempt
	warned := false
	for {
		actx, cancel := context.WithTimeout(ctx, attempt)
		err := op.create(actx, what, stream, create)
		cancel()
		if err == nil {
			return nil
		}
		if !op.retryable(err) {
			return fmt.Errorf("open %s: %w", what, err)
		}
		if !warned {
			op.log.Warn("waiting for JetStream", "store", what, "err", err)
			warned = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("open %s: %w (%w)", what, err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
		attempt = min(2*attempt, lastAttempt)
	}
}

// create picks the replica count and runs create once. With AutoReplicas
// in a cluster it asks for three copies, or as many as the cluster can
// place now when fewer servers are up, but never fewer than the stream
// already has: an operator's choice stays, and a stream made while a
// server was down gets its missing copies on a later start.
func (op opener) create(ctx context.Context, what, stream string, create func(ctx context.Context, replicas int) error) error {
	if op.want > 0 {
		return create(ctx, op.want)
	}
	if !op.clustered {
		return create(ctx, 1)
	}
	floor := 1
	s, err := op.js.Stream(ctx, stream)
	switch {
	case err == nil:
		floor = s.CachedInfo().Config.Replicas
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return err
	}
	if floor >= maxAutoReplicas {
		return create(ctx, floor)
	}
	for r := maxAutoReplicas; ; r-- {
		err = create(ctx, r)
		if err == nil {
			if r < maxAutoReplicas {
				op.log.Warn("JetStream replicates on fewer servers than wanted: too few servers up; the next start adds copies",
					"store", what, "replicas", r, "want", maxAutoReplicas)
			}
			return nil
		}
		if r <= floor || !cannotPlace(err) {
			return err
		}
	}
}

// errCreating is retried: another process is creating the stream.
var errCreating = errors.New("another process is creating it")

// updateExisting checks that a stream a create found "in use with other
// settings" exists before it is updated. A clustered server answers
// neither an update of a stream whose creation another process has in
// flight nor that creation, so update first (create-or-update) stalls
// when controllers start together with different settings.
func updateExisting(ctx context.Context, js jetstream.JetStream, stream string) error {
	_, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return errCreating
	}
	return err
}

// firstRead bounds the first attempt of a read; each further attempt waits
// twice as long, up to lastAttempt. In a cluster a request can go
// unanswered: sent while the node of a stream's leader is gone, or while
// the connection moves to another server and the reply's route is not set
// up yet. A new request succeeds a moment later, so reads are asked again
// instead of holding their caller until its deadline. Writes are not: a
// write whose answer was lost may have been applied.
const firstRead = 3 * time.Second

// retryRead runs read with a bounded context until it succeeds, fails for
// a reason other than a lost or unanswered request, or ctx ends.
func retryRead[T any](ctx context.Context, read func(ctx context.Context) (T, error)) (T, error) {
	for wait := firstRead; ; wait = min(2*wait, lastAttempt) {
		actx, cancel := context.WithTimeout(ctx, wait)
		v, err := read(actx)
		cancel()
		if err == nil || ctx.Err() != nil || !lostRequest(err) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// lostRequest reports a request that went unanswered, or that found no
// server to answer it (the stream's servers changing).
func lostRequest(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoHeartbeat) ||
		apiCode(err) == errCodeClusterNotAvail
}

// Unanswered classifies a request the store did not answer as
// store.ErrUnavailable, so that clients get a retryable 503 rather than an
// internal error; other errors pass as they are.
func Unanswered(err error) error {
	if lostRequest(err) || errors.Is(err, jetstream.ErrNoStreamResponse) {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return err
}

// cannotPlace reports that the cluster has too few servers (up) for the
// replicas asked.
func cannotPlace(err error) bool {
	switch apiCode(err) {
	case errCodeNoPeers, errCodeInsufficientRes, errCodeReplicasNotSupport:
		return true
	}
	return false
}

// retryable reports errors that go away by themselves: another process
// created the stream at the same moment with other settings (its update
// wins or ours does; both are Baton's), or the cluster has no JetStream
// leader yet or the connection is between servers.
//
// A single server (`baton server`'s embedded one) retries only the first.
func (op opener) retryable(err error) bool {
	code := apiCode(err)
	if code == jetstream.JSErrCodeStreamNameInUse || errors.Is(err, errCreating) {
		return true
	}
	if !op.clustered && op.want > 0 {
		return false
	}
	if code == errCodeClusterNotAvail || code == errCodeClusterNotLeader {
		return true
	}
	if errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrConnectionReconnecting) {
		return true
	}
	// A clustered server answers nothing for JetStream until it has joined
	// the meta group, which nats.go reports as JetStream being disabled.
	return op.clustered && errors.Is(err, jetstream.ErrJetStreamNotEnabled)
}

func apiCode(err error) jetstream.ErrorCode {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode
	}
	return 0
}

// ReplicasFor is the replication for small buckets that must outlive one
// NATS server (membership, ownership leases) but are created outside
// Open: three copies in a cluster of three or more servers, as many as
// there are servers in a smaller one, one outside a cluster. It counts
// the servers the connection knows (given and discovered).
func ReplicasFor(nc *nats.Conn) int {
	if nc.ConnectedClusterName() == "" {
		return 1
	}
	return max(1, min(maxAutoReplicas, len(nc.Servers())))
}

// Retry runs f until it succeeds or fails for good, retrying what a
// JetStream cluster answers while it forms or elects leaders, and the
// "not found" a stream created a moment ago can give the next request in
// a cluster. For buckets created outside Open (membership, leases); ctx
// bounds the whole and each attempt gets at most lastAttempt.
func Retry(ctx context.Context, js jetstream.JetStream, what string, f func(ctx context.Context) error) error {
	op := opener{js: js, log: slog.New(slog.DiscardHandler), clustered: js.Conn().ConnectedClusterName() != ""}
	wait, attempt := 100*time.Millisecond, firstAttempt
	for {
		actx, cancel := context.WithTimeout(ctx, attempt)
		err := f(actx)
		cancel()
		if err == nil {
			return nil
		}
		fresh := op.clustered && (errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) ||
			apiCode(err) == jetstream.JSErrCodeStreamNotFound)
		if !fresh && !op.retryable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (%w)", what, err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
		attempt = min(2*attempt, lastAttempt)
	}
}

// OpenKV creates a KV bucket, or opens it as it is when it exists (its
// settings are whoever created it first's), and reads its status, with
// Retry.
func OpenKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, jetstream.KeyValueStatus, error) {
	var kv jetstream.KeyValue
	var st jetstream.KeyValueStatus
	err := Retry(ctx, js, "open bucket "+cfg.Bucket, func(ctx context.Context) error {
		var err error
		kv, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		}
		if err != nil {
			return fmt.Errorf("open bucket %s: %w", cfg.Bucket, err)
		}
		if st, err = kv.Status(ctx); err != nil {
			return fmt.Errorf("bucket %s status: %w", cfg.Bucket, err)
		}
		return nil
	})
	return kv, st, err
}

// EnsureStream creates a stream of Baton's, or updates it to cfg, with
// the replication Open chooses (cfg.Replicas is set here) and its
// retries: for streams that other packages own (async invocations).
func EnsureStream(ctx context.Context, js jetstream.JetStream, log *slog.Logger, what string, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return ensureStream(ctx, newOpener(js, log), what, cfg)
}

// EnsureKV is EnsureStream for a KV bucket.
func EnsureKV(ctx context.Context, js jetstream.JetStream, log *slog.Logger, what string, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return ensureKV(ctx, newOpener(js, log), what, cfg)
}

func newOpener(js jetstream.JetStream, log *slog.Logger) opener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return opener{js: js, log: log, clustered: js.Conn().ConnectedClusterName() != ""}
}

func ensureStream(ctx context.Context, op opener, what string, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	var stream jetstream.Stream
	err := op.ensure(ctx, what, cfg.Name, func(ctx context.Context, replicas int) error {
		cfg.Replicas = replicas
		var err error
		stream, err = op.js.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			if err = updateExisting(ctx, op.js, cfg.Name); err == nil {
				stream, err = op.js.UpdateStream(ctx, cfg)
			}
		}
		return err
	})
	return stream, err
}

func ensureKV(ctx context.Context, op opener, what string, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	var kv jetstream.KeyValue
	err := op.ensure(ctx, what, "KV_"+cfg.Bucket, func(ctx context.Context, replicas int) error {
		cfg.Replicas = replicas
		var err error
		kv, err = op.js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			if err = updateExisting(ctx, op.js, "KV_"+cfg.Bucket); err == nil {
				kv, err = op.js.UpdateKeyValue(ctx, cfg)
			}
		}
		return err
	})
	return kv, err
}

// EnsureObjectStore is EnsureStream for an object store: for object
// stores that other packages own (the data layer's).
func EnsureObjectStore(ctx context.Context, js jetstream.JetStream, log *slog.Logger, what string, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	op := newOpener(js, log)
	var obj jetstream.ObjectStore
	err := op.ensure(ctx, what, "OBJ_"+cfg.Bucket, func(ctx context.Context, replicas int) error {
		cfg.Replicas = replicas
		var err error
		obj, err = op.js.CreateObjectStore(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			if err = updateExisting(ctx, op.js, "OBJ_"+cfg.Bucket); err == nil {
				obj, err = op.js.UpdateObjectStore(ctx, cfg)
			}
		}
		return err
	})
	return obj, err
}
