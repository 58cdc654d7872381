package datalayer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/store"
	"github.com/baton-faas/baton/internal/store/jsstore"
)

// Buckets of the global layer.
const (
	Bucket        = "baton_data"
	ObjectsBucket = "baton_data_objects"
)

// Entry kinds, the first byte of a KV entry: the value itself, or the name
// of the object that holds it.
const (
	kindInline byte = 'v'
	kindObject byte = 'o'
)

// casAttempts bounds the compare-and-set loop of one put or delete; each
// lost race means another writer finished in between, so a few suffice
// short of a pathological storm.
const casAttempts = 16

// GlobalConfig configures the global layer.
type GlobalConfig struct {
	// TTL is how long values are kept after they were written; zero keeps
	// them until deleted.
	TTL time.Duration
	// MaxValue bounds one value (zero: DefaultMaxValue).
	MaxValue int64
	// ObjectThreshold: larger values go to the object store (zero: the
	// package's ObjectThreshold).
	ObjectThreshold int
}

// Global is the global data layer on JetStream. A KV entry (key
// "APP.KEY", the key's dots escaped) holds a value of up to
// ObjectThreshold bytes itself, or the name of an object holding a larger
// one. An object is named afresh on every put, and the KV entry that names
// it is written with compare-and-set on the revision read before, so that
// the previous object can be deleted without a reader ever following a
// name to another put's bytes and without objects left behind by racing
// writers.
type Global struct {
	kv        jetstream.KeyValue
	objects   jetstream.ObjectStore
	log       *slog.Logger
	maxValue  int64
	threshold int
	// verify reads an object back after writing it: in a cluster, a
	// chunk whose acknowledgement was lost while leaders changed can be
	// stored twice, which leaves an object that cannot be read (see
	// jsstore's PutBlob).
	verify bool
}

// OpenGlobal opens (or makes) the global layer's buckets on nc, replicated
// as Baton's other buckets are.
func OpenGlobal(ctx context.Context, nc *nats.Conn, cfg GlobalConfig, log *slog.Logger) (*Global, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxValue <= 0 {
		cfg.MaxValue = DefaultMaxValue
	}
	if cfg.ObjectThreshold <= 0 {
		cfg.ObjectThreshold = ObjectThreshold
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("data layer: %w", err)
	}
	kv, err := jsstore.EnsureKV(ctx, js, log, "data bucket", jetstream.KeyValueConfig{
		Bucket: Bucket, History: 1, TTL: cfg.TTL, Storage: jetstream.FileStorage,
		Description: "Baton data layer: functions' values by application and key",
	})
	if err != nil {
		return nil, err
	}
	objects, err := jsstore.EnsureObjectStore(ctx, js, log, "data object store", jetstream.ObjectStoreConfig{
		Bucket: ObjectsBucket, TTL: cfg.TTL, Storage: jetstream.FileStorage,
		Description: "Baton data layer: values too large for the data bucket",
	})
	if err != nil {
		return nil, err
	}
	return &Global{kv: kv, objects: objects, log: log, maxValue: cfg.MaxValue, threshold: cfg.ObjectThreshold,
		verify: nc.ConnectedClusterName() != ""}, nil
}

// kvKey is app's key in the bucket: KV keys are '.'-separated tokens, so
// the key's dots are escaped ('=' is not a key character, so the escape is
// unambiguous), and the app, which has no dots, is the first token.
func kvKey(app, key string) string {
	return app + "." + strings.ReplaceAll(key, ".", "=2E")
}

// entryData encodes a KV entry: kind, content type (length byte first),
// then the value or the object's name.
func entryData(kind byte, contentType string, rest []byte) []byte {
	b := make([]byte, 0, 2+len(contentType)+len(rest))
	b = append(b, kind, byte(len(contentType)))
	b = append(b, contentType...)
	return append(b, rest...)
}

// decodedEntry is a KV entry read back.
type decodedEntry struct {
	kind        byte
	contentType string
	rest        []byte // the value, or the object's name
}

func decodeEntry(b []byte) (decodedEntry, error) {
	if len(b) < 2 || (b[0] != kindInline && b[0] != kindObject) || len(b) < 2+int(b[1]) {
		return decodedEntry{}, errors.New("malformed data entry")
	}
	n := int(b[1])
	return decodedEntry{kind: b[0], contentType: string(b[2 : 2+n]), rest: b[2+n:]}, nil
}

// Put stores v under app's key.
func (g *Global) Put(ctx context.Context, app, key string, v Value) error {
	if err := validApp(app); err != nil {
		return err
	}
	if err := ValidKey(key); err != nil {
		return err
	}
	if err := validValue(v, g.maxValue); err != nil {
		return err
	}
	k := kvKey(app, key)
	var data []byte
	var object string
	if len(v.Data) > g.threshold {
		var err error
		if object, err = g.putObject(ctx, app, v.Data); err != nil {
			return err
		}
		data = entryData(kindObject, v.ContentType, []byte(object))
	} else {
		data = entryData(kindInline, v.ContentType, v.Data)
	}
	// Most keys are new (a step's output under a fresh name): one create
	// is the whole put. A key that exists is updated on the revision read,
	// so that the object it named, if any, is known and deleted.
	_, err := g.kv.Create(ctx, k, data)
	for attempt := 0; exists(err) && attempt < casAttempts; attempt++ {
		cur, gerr := g.kv.Get(ctx, k)
		switch {
		case errors.Is(gerr, jetstream.ErrKeyNotFound):
			_, err = g.kv.Create(ctx, k, data)
		case gerr != nil:
			err = gerr
		default:
			// A lost race leaves err a revision mismatch: read again.
			if _, err = g.kv.Update(ctx, k, data, cur.Revision()); err == nil {
				g.dropObjectOf(app, cur.Value())
			}
		}
	}
	if err != nil {
		if object != "" {
			g.deleteObject(object)
		}
		return g.failed("put", app, key, err)
	}
	return nil
}

// exists reports a create or update that lost to another writer (a
// replicated stream reports it with another code than a single server).
func exists(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || jsstore.RevisionMismatch(err)
}

// putObject stores data as a new object and returns its name.
func (g *Global) putObject(ctx context.Context, app string, data []byte) (string, error) {
	for attempt := 1; ; attempt++ {
		name := app + "/" + randomName()
		if _, err := g.objects.PutBytes(ctx, name, data); err != nil {
			return "", fmt.Errorf("%w: storing a value's object: %w", ErrGlobalUnreached, err)
		}
		if !g.verify {
			return name, nil
		}
		_, err := g.objects.GetBytes(ctx, name)
		if !errors.Is(err, jetstream.ErrDigestMismatch) {
			// Only a corrupt object matters: a replica yet to see the
			// write may answer not-found, and a majority acknowledged it.
			return name, nil
		}
		g.deleteObject(name)
		if attempt == 3 {
			return "", fmt.Errorf("%w: a value's object was stored corrupt: %w", ErrGlobalUnreached, err)
		}
	}
}

func randomName() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails, per crypto/rand
	return hex.EncodeToString(b[:])
}

// dropObjectOf deletes the object an overwritten or deleted entry named.
// Only this writer's compare-and-set replaced that entry, so no other
// writer deletes it too, and readers that followed the old name get
// not-found and read the key again.
func (g *Global) dropObjectOf(app string, old []byte) {
	e, err := decodeEntry(old)
	if err != nil || e.kind != kindObject {
		return
	}
	// An entry can only name an object of its own app; a malformed one
	// naming another's is left alone.
	if name := string(e.rest); strings.HasPrefix(name, app+"/") {
		g.deleteObject(name)
	}
}

// deleteObject removes an object nobody names any longer. It runs even
// when the request that caused it was cancelled: a leftover object is
// storage nobody can reach.
func (g *Global) deleteObject(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.objects.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		g.log.Warn("data layer: deleting an unused object failed; it stays until the bucket's TTL, if any", "object", name, "err", err)
	}
}

// Get reads app's key.
func (g *Global) Get(ctx context.Context, app, key string) (Value, error) {
	if err := validApp(app); err != nil {
		return Value{}, err
	}
	if err := ValidKey(key); err != nil {
		return Value{}, err
	}
	k := kvKey(app, key)
	for attempt := 0; attempt < casAttempts; attempt++ {
		ent, err := g.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return Value{}, ErrNotFound
		}
		if err != nil {
			return Value{}, g.failed("get", app, key, err)
		}
		e, err := decodeEntry(ent.Value())
		if err != nil {
			return Value{}, fmt.Errorf("data layer: key %q of app %s: %w", key, app, err)
		}
		if e.kind == kindInline {
			return Value{ContentType: e.contentType, Data: e.rest}, nil
		}
		data, err := g.objects.GetBytes(ctx, string(e.rest))
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			// Overwritten or deleted since the entry was read (or the
			// object expired first): the entry now says what is there.
			continue
		}
		if err != nil {
			return Value{}, g.failed("get", app, key, err)
		}
		return Value{ContentType: e.contentType, Data: data}, nil
	}
	return Value{}, ErrNotFound
}

// Delete removes app's key; a missing key is not an error.
func (g *Global) Delete(ctx context.Context, app, key string) error {
	if err := validApp(app); err != nil {
		return err
	}
	if err := ValidKey(key); err != nil {
		return err
	}
	k := kvKey(app, key)
	for attempt := 0; attempt < casAttempts; attempt++ {
		cur, err := g.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return g.failed("delete", app, key, err)
		}
		err = g.kv.Delete(ctx, k, jetstream.LastRevision(cur.Revision()))
		if jsstore.RevisionMismatch(err) {
			continue
		}
		if err != nil {
			return g.failed("delete", app, key, err)
		}
		g.dropObjectOf(app, cur.Value())
		return nil
	}
	return g.failed("delete", app, key, errors.New("too many concurrent writers"))
}

// failed wraps a JetStream error: unanswered requests and cancellations
// as ErrGlobalUnreached (retryable), the rest as they are.
func (g *Global) failed(op, app, key string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(jsstore.Unanswered(err), store.ErrUnavailable) || errors.Is(err, nats.ErrConnectionClosed) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected) {
		return fmt.Errorf("%w: %s %q of app %s: %w", ErrGlobalUnreached, op, key, app, err)
	}
	return fmt.Errorf("data layer: %s %q of app %s: %w", op, key, app, err)
}
