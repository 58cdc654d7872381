package transfer

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// StoreConfig bounds a worker's Store.
type StoreConfig struct {
	// MemoryBytes bounds the bytes kept in memory; a buffer that does not
	// fit is spilled to a file in SpillDir.
	MemoryBytes int64
	// SpillDir holds spilled buffers ("" disables spilling); SpillBytes
	// bounds them.
	SpillDir   string
	SpillBytes int64
	// TTL is how long a buffer is kept when not all its pulls come.
	TTL time.Duration
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// Store keeps the buffers a worker produced until their pulls are done or
// they expire. Buffers are immutable once kept: a pull in memory hands
// out the very slice, never a copy.
type Store struct {
	cfg StoreConfig
	log *slog.Logger

	mu    sync.Mutex
	bufs  map[string]*buffer
	mem   int64 // bytes of buffers in memory
	spill int64 // bytes of spilled buffers
}

type buffer struct {
	id, app string
	data    []byte // nil when spilled
	file    string // the spilled copy
	size    int64
	digest  string
	expires time.Time
	pulled  int
	// readers are pulls in progress; a freed buffer's file is removed
	// when the last one ends.
	readers int
	freed   bool
}

// Kept is what Put returns: what a Ref names, without the worker's part.
type Kept struct {
	ID      string
	Size    int64
	Digest  string
	Expires time.Time
	Spilled bool
}

// NewStore returns a store; it removes a previous run's buffer files
// from SpillDir.
func NewStore(cfg StoreConfig) (*Store, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 5 * time.Minute
	}
	if cfg.SpillDir != "" {
		if err := os.MkdirAll(cfg.SpillDir, 0o700); err != nil {
			return nil, fmt.Errorf("transfer spill directory: %w", err)
		}
		// Nothing of a previous run can be pulled: its references name
		// a process that is gone. Only buffer files go: the directory is
		// the operator's and may hold other things.
		entries, err := os.ReadDir(cfg.SpillDir)
		if err != nil {
			return nil, fmt.Errorf("transfer spill directory: %w", err)
		}
		for _, e := range entries {
			if e.Type().IsRegular() && isBufferID(e.Name()) {
				if err := os.Remove(filepath.Join(cfg.SpillDir, e.Name())); err != nil {
					return nil, fmt.Errorf("transfer spill directory: %w", err)
				}
			}
		}
	}
	return &Store{cfg: cfg, log: cfg.Logger, bufs: map[string]*buffer{}}, nil
}

// Put keeps data (which the caller no longer changes) for app, in memory
// when it fits, else in a spill file; ErrFull when neither has room.
func (s *Store) Put(app string, data []byte) (Kept, error) {
	sum := sha256.Sum256(data)
	b := &buffer{id: newBufferID(), app: app, size: int64(len(data)), digest: hex.EncodeToString(sum[:])}
	now := s.cfg.Now()
	b.expires = now.Add(s.cfg.TTL)
	s.Sweep()
	s.mu.Lock()
	if s.mem+b.size <= s.cfg.MemoryBytes {
		b.data = data
		s.mem += b.size
		s.bufs[b.id] = b
		s.mu.Unlock()
		return b.kept(), nil
	}
	if s.cfg.SpillDir == "" || s.spill+b.size > s.cfg.SpillBytes {
		mem, spill := s.mem, s.spill
		s.mu.Unlock()
		return Kept{}, fmt.Errorf("keep %d bytes (in memory %d of %d, spilled %d of %d): %w",
			b.size, mem, s.cfg.MemoryBytes, spill, s.cfg.SpillBytes, ErrFull)
	}
	// Reserve the spill room before writing, without the lock held.
	s.spill += b.size
	s.mu.Unlock()
	b.file = filepath.Join(s.cfg.SpillDir, b.id)
	if err := os.WriteFile(b.file, data, 0o600); err != nil {
		_ = os.Remove(b.file)
		s.mu.Lock()
		s.spill -= b.size
		s.mu.Unlock()
		return Kept{}, fmt.Errorf("spill a transfer buffer: %w", err)
	}
	s.mu.Lock()
	s.bufs[b.id] = b
	s.mu.Unlock()
	k := b.kept()
	k.Spilled = true
	return k, nil
}

func (b *buffer) kept() Kept {
	return Kept{ID: b.id, Size: b.size, Digest: b.digest, Expires: b.expires}
}

// isBufferID says whether name is a buffer id (newBufferID's form).
func isBufferID(name string) bool {
	if len(name) != 32 {
		return false
	}
	_, err := hex.DecodeString(name)
	return err == nil && strings.ToLower(name) == name
}

func newBufferID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Pull is one pull of a buffer: Bytes for a buffer in memory (shared,
// read-only), else Open for its spilled copy. Close ends it.
type Pull struct {
	s    *Store
	b    *buffer
	file string // the spilled copy, read by this pull ("" in memory)
	once sync.Once
}

// Take counts one pull of the buffer r names; r must have been verified
// (Signer.Verify). A buffer whose pulls are all done is freed when the
// last pull in progress closes.
func (s *Store) Take(r Ref) (*Pull, error) {
	s.Sweep()
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.bufs[r.ID]
	if !ok {
		return nil, fmt.Errorf("buffer %s: %w", r.ID, ErrSourceLost)
	}
	if b.app != r.App || b.digest != r.Digest || b.size != r.Size {
		// A valid MAC over other fields than the buffer's: another
		// worker's reference, or a key shared wrongly.
		return nil, fmt.Errorf("buffer %s does not match the reference: %w", r.ID, ErrForged)
	}
	if b.pulled >= r.Pulls {
		return nil, fmt.Errorf("buffer %s: pull %d of %d allowed: %w", r.ID, b.pulled+1, r.Pulls, ErrReplayed)
	}
	b.pulled++
	b.readers++
	if b.pulled >= r.Pulls {
		// No file to remove yet: this pull reads it.
		s.freeLocked(b)
	}
	return &Pull{s: s, b: b, file: b.file}, nil
}

// Bytes is the buffer in memory (nil when it was spilled).
func (p *Pull) Bytes() []byte { return p.b.data }

// Open reads the buffer, from memory or its spilled copy.
func (p *Pull) Open() (io.ReadCloser, error) {
	if p.file == "" {
		return io.NopCloser(bytes.NewReader(p.b.data)), nil
	}
	f, err := os.Open(p.file)
	if err != nil {
		return nil, fmt.Errorf("buffer %s: %w: %w", p.b.id, ErrSourceLost, err)
	}
	return f, nil
}

// Close ends the pull.
func (p *Pull) Close() {
	p.once.Do(func() {
		p.s.mu.Lock()
		p.b.readers--
		var remove string
		if p.b.freed && p.b.readers == 0 {
			remove = p.s.dropFileLocked(p.b)
		}
		p.s.mu.Unlock()
		p.s.removeFile(remove)
	})
}

// freeLocked drops b from the table and its bytes from the bounds; it
// returns the spilled file to remove once the lock is released ("" when
// none, or while a pull still reads it). s.mu is held.
func (s *Store) freeLocked(b *buffer) string {
	if b.freed {
		return ""
	}
	b.freed = true
	delete(s.bufs, b.id)
	if b.file == "" {
		s.mem -= b.size
		return ""
	}
	if b.readers > 0 {
		return ""
	}
	return s.dropFileLocked(b)
}

// dropFileLocked forgets b's spilled file and returns its path.
func (s *Store) dropFileLocked(b *buffer) string {
	f := b.file
	if f != "" {
		b.file = ""
		s.spill -= b.size
	}
	return f
}

// removeFile removes a spilled file (no lock held: it is disk I/O).
func (s *Store) removeFile(path string) {
	if path == "" {
		return
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("remove a spilled transfer buffer", "file", filepath.Base(path), "err", err)
	}
}

// Sweep frees the buffers that expired.
func (s *Store) Sweep() {
	now := s.cfg.Now()
	var files []string
	s.mu.Lock()
	for _, b := range s.bufs {
		if !now.Before(b.expires) {
			s.log.Debug("transfer buffer expired", "buffer", b.id, "app", b.app, "size", b.size, "pulled", b.pulled)
			files = append(files, s.freeLocked(b))
		}
	}
	s.mu.Unlock()
	for _, f := range files {
		s.removeFile(f)
	}
}

// Usage is what the store holds: buffers, bytes in memory, bytes spilled.
func (s *Store) Usage() (buffers int, memory, spilled int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.bufs), s.mem, s.spill
}

// Free drops every buffer (the worker is closing).
func (s *Store) Free() {
	var files []string
	s.mu.Lock()
	for _, b := range s.bufs {
		files = append(files, s.freeLocked(b))
	}
	s.mu.Unlock()
	for _, f := range files {
		s.removeFile(f)
	}
}
