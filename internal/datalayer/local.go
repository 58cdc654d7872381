package datalayer

import (
	"container/list"
	"fmt"
	"sync"
	"time"
)

// entryOverhead approximates what an entry costs beyond its key, value and
// content type (the entry, its list elements, the map slot), so that many
// tiny values are bounded too.
const entryOverhead = 192

// Local is the local data layer: values in this process's memory, per
// application. It is bounded by bytes, least recently used first: a put
// that takes an app over its share evicts that app's least recently used
// entries, one that takes the host over its limit evicts the host's. An
// entry expires TTL after it was written. Expired entries are dropped as
// every call passes by, oldest first (entries expire in the order they were
// written, since the TTL is one for all), so the layer needs no goroutine.
type Local struct {
	hostLimit, appLimit int64
	ttl                 time.Duration
	now                 func() time.Time

	mu    sync.Mutex // guards everything below; a leaf
	bytes int64
	lru   list.List // of *entry, most recently used first
	ages  list.List // of *entry, oldest write first
	apps  map[string]*appEntries
}

type appEntries struct {
	bytes   int64
	lru     list.List // of *entry, most recently used first
	entries map[string]*entry
}

type entry struct {
	app, key string
	v        Value
	size     int64
	expires  time.Time
	// Elements of the entry in Local.lru, appEntries.lru and Local.ages.
	hostEl, appEl, ageEl *list.Element
}

// LocalStats describes the local layer's content.
type LocalStats struct {
	Entries int
	Bytes   int64
	Apps    int
}

// NewLocal makes a local layer with cfg's limits and TTL (zero fields: the
// defaults).
func NewLocal(cfg Config) *Local {
	cfg = cfg.WithDefaults()
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Local{hostLimit: cfg.LocalBytes, appLimit: cfg.LocalAppBytes, ttl: cfg.LocalTTL, now: now, apps: map[string]*appEntries{}}
}

func entrySize(key string, v Value) int64 {
	return int64(len(key)+len(v.ContentType)+len(v.Data)) + entryOverhead
}

// Put stores v under app's key, replacing what was there. A value that
// cannot fit the app's share (or the host's limit) is refused with
// ErrTooLarge, and the key's old value is dropped all the same: a reader
// must never get an older value after a newer one was written. The layer
// keeps v.Data; the caller must not modify it afterwards.
func (l *Local) Put(app, key string, v Value) error {
	size := entrySize(key, v)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expireLocked(now)
	a := l.apps[app]
	if a != nil {
		if old := a.entries[key]; old != nil {
			l.removeLocked(old)
		}
	}
	if size > l.appLimit || size > l.hostLimit {
		return fmt.Errorf("%w for the local layer: %d bytes, an application may hold %d", ErrTooLarge, size, min(l.appLimit, l.hostLimit))
	}
	if a = l.apps[app]; a == nil {
		a = &appEntries{entries: map[string]*entry{}}
		l.apps[app] = a
	}
	e := &entry{app: app, key: key, v: v, size: size, expires: now.Add(l.ttl)}
	e.hostEl = l.lru.PushFront(e)
	e.appEl = a.lru.PushFront(e)
	e.ageEl = l.ages.PushBack(e)
	a.entries[key] = e
	a.bytes += size
	l.bytes += size
	for a.bytes > l.appLimit {
		l.removeLocked(a.lru.Back().Value.(*entry))
	}
	for l.bytes > l.hostLimit {
		l.removeLocked(l.lru.Back().Value.(*entry))
	}
	return nil
}

// Get returns app's value under key, if it is there and not expired, and
// marks it used.
func (l *Local) Get(app, key string) (Value, bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expireLocked(now)
	a := l.apps[app]
	if a == nil {
		return Value{}, false
	}
	e := a.entries[key]
	if e == nil {
		return Value{}, false
	}
	l.lru.MoveToFront(e.hostEl)
	a.lru.MoveToFront(e.appEl)
	return e.v, true
}

// Delete removes app's key, if present.
func (l *Local) Delete(app, key string) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expireLocked(now)
	if a := l.apps[app]; a != nil {
		if e := a.entries[key]; e != nil {
			l.removeLocked(e)
		}
	}
}

// Stats returns the layer's content now (expired entries dropped first).
func (l *Local) Stats() LocalStats {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expireLocked(now)
	return LocalStats{Entries: l.lru.Len(), Bytes: l.bytes, Apps: len(l.apps)}
}

// AppBytes is what app holds in the layer now.
func (l *Local) AppBytes(app string) int64 {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expireLocked(now)
	if a := l.apps[app]; a != nil {
		return a.bytes
	}
	return 0
}

// expireLocked drops the entries whose time is up, oldest first.
func (l *Local) expireLocked(now time.Time) {
	for el := l.ages.Front(); el != nil; el = l.ages.Front() {
		e := el.Value.(*entry)
		if now.Before(e.expires) {
			return
		}
		l.removeLocked(e)
	}
}

func (l *Local) removeLocked(e *entry) {
	a := l.apps[e.app]
	l.lru.Remove(e.hostEl)
	l.ages.Remove(e.ageEl)
	a.lru.Remove(e.appEl)
	delete(a.entries, e.key)
	a.bytes -= e.size
	l.bytes -= e.size
	if len(a.entries) == 0 {
		delete(l.apps, e.app)
	}
}
