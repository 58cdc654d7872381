// Package datalayer is SAND's pair of data layers, through which a
// workflow's functions pass data by reference instead of inline:
//
//   - Local: in memory on the host, per application, bounded (LRU by bytes
//     with a per-host and a per-app limit, and a TTL per entry). Fast, and
//     gone when the host's process ends.
//   - Global: JetStream KV (bucket baton_data), with values above
//     ObjectThreshold in the JetStream object store (baton_data_objects).
//     Replicated like Baton's other buckets; survives restarts and the loss
//     of a host.
//
// Layer combines them: a put to the global scope writes through to the
// local one, a get without a scope prefers the local copy and falls back
// to the global layer (caching what it finds), a delete without a scope
// removes both. Local copies are caches: a key changed or deleted on
// another host may be read from this host's copy until it expires.
//
// Every operation names its application. Functions reach the layers only
// through their instance's Runtime API endpoint, which holds an AppData
// bound to the instance's application: an app can never name another
// app's keys. Keys are stored under their app (a map per app locally, a
// key prefix globally).
package datalayer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/keyedlock"
)

// Defaults of Config.
const (
	DefaultLocalBytes    = 256 << 20
	DefaultLocalAppBytes = 64 << 20
	DefaultLocalTTL      = 10 * time.Minute
	// DefaultMaxValue bounds one value: well above what functions pass
	// between steps (images, documents), well below what one request may
	// hold in memory.
	DefaultMaxValue = 8 << 20
	// ObjectThreshold: larger values go to the object store. JetStream's
	// default largest message is 1 MiB, and a KV value is one message.
	ObjectThreshold = 256 << 10
	// MaxKeyBytes bounds a key.
	MaxKeyBytes = 512
	// MaxContentTypeBytes bounds the content type kept with a value.
	MaxContentTypeBytes = 255
	// DefaultContentType is a value's type when its writer gives none.
	DefaultContentType = "application/octet-stream"
)

// Scope selects a layer.
type Scope string

const (
	// ScopeAny: a get prefers the local copy and falls back to the global
	// layer; a delete removes both; a put means ScopeGlobal.
	ScopeAny    Scope = ""
	ScopeLocal  Scope = "local"
	ScopeGlobal Scope = "global"
)

// ParseScope reads a scope as functions name it ("", "local", "global").
func ParseScope(s string) (Scope, error) {
	switch Scope(s) {
	case ScopeAny, ScopeLocal, ScopeGlobal:
		return Scope(s), nil
	}
	return "", fmt.Errorf("%w: scope %q (want local or global, or none)", ErrInvalidScope, s)
}

// Value is what is stored under a key: its bytes and their content type.
// Data returned by the layers is shared with the local layer and must not
// be modified.
type Value struct {
	ContentType string
	Data        []byte
}

// Errors, classified for the Runtime API's answers.
var (
	ErrNotFound        = errdefs.New(errdefs.NotFound, "key_not_found", "key not found")
	ErrInvalidKey      = errdefs.New(errdefs.Invalid, "invalid_key", "invalid key")
	ErrInvalidScope    = errdefs.New(errdefs.Invalid, "invalid_scope", "invalid scope")
	ErrInvalidType     = errdefs.New(errdefs.Invalid, "invalid_content_type", "invalid content type")
	ErrTooLarge        = errdefs.New(errdefs.TooLarge, "value_too_large", "value too large")
	ErrNoGlobal        = errdefs.New(errdefs.NotImplemented, "global_data_unavailable", "the global data layer is not available on this node: it has no NATS connection")
	ErrGlobalUnreached = errdefs.New(errdefs.Unavailable, "global_data_unreachable", "the global data layer did not answer")
)

var keyChars = regexp.MustCompile(`^[A-Za-z0-9._/-]+$`)

// ValidKey checks a key: 1 to MaxKeyBytes of [A-Za-z0-9._/-], and as a
// path of '/'-separated segments none empty, "." or "..": HTTP clients
// normalise such paths, which would address another key than the one
// written.
func ValidKey(key string) error {
	if key == "" || len(key) > MaxKeyBytes {
		return fmt.Errorf("%w: a key has 1 to %d bytes, not %d", ErrInvalidKey, MaxKeyBytes, len(key))
	}
	if !keyChars.MatchString(key) {
		return fmt.Errorf("%w %q: a key is made of letters, digits and . _ / -", ErrInvalidKey, key)
	}
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w %q: a key's '/'-separated segments may not be empty, '.' or '..'", ErrInvalidKey, key)
		}
	}
	return nil
}

var appChars = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$`)

// validApp checks an application name as function specs allow it; the
// global layer relies on it holding no '.' (its keys' separator).
func validApp(app string) error {
	if !appChars.MatchString(app) {
		return fmt.Errorf("datalayer: invalid application name %q", app)
	}
	return nil
}

// validValue checks a value's content type and size.
func validValue(v Value, maxValue int64) error {
	if int64(len(v.Data)) > maxValue {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(v.Data), maxValue)
	}
	if len(v.ContentType) > MaxContentTypeBytes {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidType, len(v.ContentType), MaxContentTypeBytes)
	}
	for i := 0; i < len(v.ContentType); i++ {
		if c := v.ContentType[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("%w %q: printable ASCII only", ErrInvalidType, v.ContentType)
		}
	}
	return nil
}

// Config sizes the layers; zero fields take the defaults. Each field is a
// flag of `baton server` and `baton worker` (named in Check's errors).
type Config struct {
	// LocalBytes bounds the local layer on this host; LocalAppBytes one
	// application's share of it.
	LocalBytes    int64
	LocalAppBytes int64
	// LocalTTL is how long a local entry lives after it was written.
	LocalTTL time.Duration
	// MaxValue bounds one value.
	MaxValue int64
	// GlobalTTL is how long global values are kept after they were
	// written; zero keeps them until deleted. The bucket's creator sets
	// it; later changes update the buckets.
	GlobalTTL time.Duration
	// Now is the local layer's clock (tests); nil means time.Now.
	Now func() time.Time
}

// WithDefaults fills the zero fields.
func (c Config) WithDefaults() Config {
	if c.LocalBytes <= 0 {
		c.LocalBytes = DefaultLocalBytes
	}
	if c.LocalAppBytes <= 0 {
		c.LocalAppBytes = DefaultLocalAppBytes
	}
	if c.LocalTTL <= 0 {
		c.LocalTTL = DefaultLocalTTL
	}
	if c.MaxValue <= 0 {
		c.MaxValue = DefaultMaxValue
	}
	return c
}

// Check refuses settings that cannot work together, naming the flags.
func (c Config) Check() error {
	for _, v := range []struct {
		flag string
		neg  bool
	}{
		{"data-local-bytes", c.LocalBytes < 0}, {"data-local-app-bytes", c.LocalAppBytes < 0},
		{"data-local-ttl", c.LocalTTL < 0}, {"data-max-value", c.MaxValue < 0},
	} {
		if v.neg {
			return fmt.Errorf("--%s: must not be negative (0 means the default)", v.flag)
		}
	}
	c = c.WithDefaults()
	if c.LocalAppBytes > c.LocalBytes {
		return fmt.Errorf("--data-local-app-bytes %d is more than --data-local-bytes %d", c.LocalAppBytes, c.LocalBytes)
	}
	if c.GlobalTTL < 0 {
		return fmt.Errorf("--data-global-ttl %s: must not be negative", c.GlobalTTL)
	}
	if c.GlobalTTL > 0 && c.GlobalTTL < time.Second {
		return fmt.Errorf("--data-global-ttl %s: at least 1s", c.GlobalTTL)
	}
	return nil
}

// Layer is the host's data layers: the local one, and the global one when
// the host has NATS.
//
// Writes of one key on this host, and the reads that fill its local copy
// from the global layer, take turns (keys is a lock per app and key), so
// that the local copy is always the newest value this host wrote or read:
// without that, a put racing another put or a fill could leave the local
// layer holding the older of two values until it expires. Reads the local
// layer answers take no turn.
type Layer struct {
	local    *Local
	global   *Global // nil without NATS
	maxValue int64
	log      *slog.Logger
	keys     keyedlock.Locks
}

// Open makes the host's layers: the local layer, and the global one on nc
// (nil: none, and the global scope answers ErrNoGlobal).
func Open(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger) (*Layer, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var global *Global
	if nc != nil {
		var err error
		if global, err = OpenGlobal(ctx, nc, GlobalConfig{TTL: cfg.GlobalTTL, MaxValue: cfg.MaxValue}, log); err != nil {
			return nil, err
		}
	}
	return New(NewLocal(cfg), global, cfg.MaxValue, log), nil
}

// New combines layers; global may be nil.
func New(local *Local, global *Global, maxValue int64, log *slog.Logger) *Layer {
	if maxValue <= 0 {
		maxValue = DefaultMaxValue
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Layer{local: local, global: global, maxValue: maxValue, log: log}
}

// MaxValue is the largest value a put accepts.
func (l *Layer) MaxValue() int64 { return l.maxValue }

// Local is the host's local layer.
func (l *Layer) Local() *Local { return l.local }

// Global is the global layer, nil when the host has none.
func (l *Layer) Global() *Global { return l.global }

// Put stores v under app's key in scope (ScopeAny means ScopeGlobal). A
// global put keeps a local copy too, or drops a stale one when v does not
// fit the local layer or the global write failed (it may have been applied
// all the same).
func (l *Layer) Put(ctx context.Context, app, key string, scope Scope, v Value) error {
	if err := l.check(app, key, scope); err != nil {
		return err
	}
	if v.ContentType == "" {
		v.ContentType = DefaultContentType
	}
	if err := validValue(v, l.maxValue); err != nil {
		return err
	}
	if scope != ScopeLocal && l.global == nil {
		return ErrNoGlobal
	}
	defer l.keys.Lock(app + "/" + key)()
	if scope == ScopeLocal {
		return l.local.Put(app, key, v)
	}
	if err := l.global.Put(ctx, app, key, v); err != nil {
		l.local.Delete(app, key)
		return err
	}
	l.cache(app, key, v)
	return nil
}

// cache keeps a local copy of a global value; Put has dropped the old copy
// even when the new one does not fit.
func (l *Layer) cache(app, key string, v Value) {
	if err := l.local.Put(app, key, v); err != nil && !errors.Is(err, ErrTooLarge) {
		l.log.Debug("data layer: no local copy", "app", app, "key", key, "err", err)
	}
}

// Get reads app's key from scope; ScopeAny prefers the local copy and falls
// back to the global layer, whose value it then keeps locally. The
// returned scope is the layer that answered.
func (l *Layer) Get(ctx context.Context, app, key string, scope Scope) (Value, Scope, error) {
	if err := l.check(app, key, scope); err != nil {
		return Value{}, "", err
	}
	if scope != ScopeGlobal {
		if v, ok := l.local.Get(app, key); ok {
			return v, ScopeLocal, nil
		}
		if scope == ScopeLocal || l.global == nil {
			return Value{}, "", ErrNotFound
		}
	}
	if l.global == nil {
		return Value{}, "", ErrNoGlobal
	}
	if scope == ScopeGlobal {
		v, err := l.global.Get(ctx, app, key)
		return v, ScopeGlobal, err
	}
	defer l.keys.Lock(app + "/" + key)()
	// A put of this host may have filled the local copy meanwhile.
	if v, ok := l.local.Get(app, key); ok {
		return v, ScopeLocal, nil
	}
	v, err := l.global.Get(ctx, app, key)
	if err != nil {
		return Value{}, "", err
	}
	l.cache(app, key, v)
	return v, ScopeGlobal, nil
}

// Delete removes app's key from scope; ScopeAny removes it from both layers
// (the global one only when the host has it). Deleting a missing key is
// not an error.
func (l *Layer) Delete(ctx context.Context, app, key string, scope Scope) error {
	if err := l.check(app, key, scope); err != nil {
		return err
	}
	if scope == ScopeGlobal && l.global == nil {
		return ErrNoGlobal
	}
	defer l.keys.Lock(app + "/" + key)()
	if scope != ScopeGlobal {
		l.local.Delete(app, key)
	}
	if scope == ScopeLocal || l.global == nil {
		return nil
	}
	return l.global.Delete(ctx, app, key)
}

func (l *Layer) check(app, key string, scope Scope) error {
	if err := validApp(app); err != nil {
		return err
	}
	if _, err := ParseScope(string(scope)); err != nil {
		return err
	}
	return ValidKey(key)
}

// App returns the layers as one application sees them.
func (l *Layer) App(app string) *AppData { return &AppData{layer: l, app: app} }

// AppData is the data layers bound to one application: what a Runtime API
// endpoint holds, so that the app a request reaches is its instance's and
// never one the request names.
type AppData struct {
	layer *Layer
	app   string
}

// Put is Layer.Put for the bound app.
func (a *AppData) Put(ctx context.Context, key string, scope Scope, v Value) error {
	return a.layer.Put(ctx, a.app, key, scope, v)
}

// Get is Layer.Get for the bound app.
func (a *AppData) Get(ctx context.Context, key string, scope Scope) (Value, Scope, error) {
	return a.layer.Get(ctx, a.app, key, scope)
}

// Delete is Layer.Delete for the bound app.
func (a *AppData) Delete(ctx context.Context, key string, scope Scope) error {
	return a.layer.Delete(ctx, a.app, key, scope)
}

// MaxValue is the largest value a put accepts.
func (a *AppData) MaxValue() int64 { return a.layer.maxValue }
