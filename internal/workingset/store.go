package workingset

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// DefaultMaxRecords bounds how many records a host keeps; the oldest go
// first.
const DefaultMaxRecords = 256

// maxRecordFile refuses to read a record file larger than this (a record
// within DefaultLimits is well below).
const maxRecordFile = 4 << 20

// Store keeps one record per key as a small JSON file in a directory.
// Its lock guards the in-memory index only; files are read and written
// without it (a record is written once per key, by the one recording that
// holds the key, see Claim).
type Store struct {
	dir string
	max int

	mu        sync.Mutex
	index     map[string]Summary // by key
	recording map[string]bool
}

// Open opens (creating) the store in dir and indexes the records there;
// unreadable records are removed.
func Open(dir string, maxRecords int) (*Store, error) {
	if maxRecords <= 0 {
		maxRecords = DefaultMaxRecords
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, errorf("open store: %w", err)
	}
	s := &Store{dir: dir, max: maxRecords, index: map[string]Summary{}, recording: map[string]bool{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, errorf("open store: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		key, ok := strings.CutSuffix(name, ".json")
		if !ok || !validKey(key) {
			_ = os.Remove(filepath.Join(dir, name)) // a temporary file of a crashed write
			continue
		}
		rec, err := s.read(key)
		if err != nil {
			_ = os.Remove(filepath.Join(dir, name))
			continue
		}
		s.index[key] = rec.summary()
	}
	return s, nil
}

func (s *Store) path(key string) string { return filepath.Join(s.dir, key+".json") }

func (s *Store) read(key string) (Record, error) {
	f, err := os.Open(s.path(key))
	if err != nil {
		return Record{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Record{}, err
	}
	if st.Size() > maxRecordFile {
		return Record{}, fmt.Errorf("record %s is %d bytes, more than %d", key, st.Size(), maxRecordFile)
	}
	var rec Record
	if err := json.NewDecoder(f).Decode(&rec); err != nil {
		return Record{}, fmt.Errorf("record %s: %w", key, err)
	}
	if rec.Key != key || rec.Format != FormatVersion {
		return Record{}, fmt.Errorf("record %s: key %q, format %d", key, rec.Key, rec.Format)
	}
	return rec, nil
}

// Get returns key's record; ok is false when there is none (or it cannot
// be read, in which case it is dropped).
func (s *Store) Get(key string) (rec Record, ok bool) {
	if !validKey(key) {
		return Record{}, false
	}
	s.mu.Lock()
	_, known := s.index[key]
	s.mu.Unlock()
	if !known {
		return Record{}, false
	}
	rec, err := s.read(key)
	if err != nil {
		s.Delete(key)
		return Record{}, false
	}
	return rec, true
}

// Claim reserves key for one recording at a time; it returns false when
// another start records it already. done ends the claim.
func (s *Store) Claim(key string) (done func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.recording[key] {
		return nil, false
	}
	s.recording[key] = true
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.recording, key)
			s.mu.Unlock()
		})
	}, true
}

// Put stores rec under rec.Key (replacing what was there), then drops the
// oldest records beyond the store's bound.
func (s *Store) Put(rec Record) error {
	if !validKey(rec.Key) {
		return errorf("bad record key %q", rec.Key)
	}
	rec.Format = FormatVersion
	data, err := json.Marshal(rec)
	if err != nil {
		return errorf("encode record: %w", err)
	}
	tmp, err := os.CreateTemp(s.dir, ".rec-*")
	if err != nil {
		return errorf("store record: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return errorf("store record: %w", err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return errorf("store record: %w", err)
	}
	// Not fsynced: a record lost in a crash is recorded again.
	if err := os.Rename(tmp.Name(), s.path(rec.Key)); err != nil {
		os.Remove(tmp.Name())
		return errorf("store record: %w", err)
	}
	s.mu.Lock()
	s.index[rec.Key] = rec.summary()
	var evict []string
	if over := len(s.index) - s.max; over > 0 {
		all := make([]Summary, 0, len(s.index))
		for _, sum := range s.index {
			all = append(all, sum)
		}
		sort.Slice(all, func(i, j int) bool { return all[i].Recorded.Before(all[j].Recorded) })
		for _, sum := range all[:over] {
			delete(s.index, sum.Key)
			evict = append(evict, sum.Key)
		}
	}
	s.mu.Unlock()
	for _, k := range evict {
		if err := os.Remove(s.path(k)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return errorf("evict record: %w", err)
		}
	}
	return nil
}

// Delete drops key's record.
func (s *Store) Delete(key string) {
	s.mu.Lock()
	delete(s.index, key)
	s.mu.Unlock()
	if validKey(key) {
		_ = os.Remove(s.path(key))
	}
}

// Used counts one prefetch of key's record.
func (s *Store) Used(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sum, ok := s.index[key]; ok {
		sum.Prefetches++
		s.index[key] = sum
	}
}

// List summarises the records, newest first.
func (s *Store) List() []Summary {
	s.mu.Lock()
	out := make([]Summary, 0, len(s.index))
	for _, sum := range s.index {
		out = append(out, sum)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Recorded.After(out[j].Recorded) })
	return out
}
