// Package workingset records which pages of which files a function's cold
// start reads, and reads them back in one pass on later cold starts (REAP).
//
// Why page-cache residency (mincore) before and after init: the files a
// sandbox reads are few, known directories (its image's layers, its code
// layer and Baton's runtime clients), so a walk of them
// with mincore(2) sees every page the start brought into the page cache,
// whatever read it (read(2), mmap faults, the dynamic loader, Python's
// bytecode), with no tracing on the instance's path and no kernel feature
// beyond what every Linux has. fanotify would name the files but not the
// pages; page-fault tracing (userfaultfd, as REAP does for VM memory) does
// not apply to the page cache. The price: a page that was already resident
// before the recording start is not recorded (it was not read then), and a
// page another process read meanwhile is; the record is a hint, never a
// correctness matter.
//
// Why ranges and fadvise rather than a contiguous copy: the pages stay
// where the kernel expects them (the files' own page cache, shared by
// every sandbox on the host through the layer mounts), so nothing is
// duplicated on disk and a changed file is detected by its identity
// (size, mtime, inode) instead of being served stale. Ranges are coalesced
// across small gaps, so that one readahead request covers what would have
// been many page faults.
package workingset

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"
)

// FormatVersion is the version of the record's encoding; a record of
// another version is ignored (and recorded again).
const FormatVersion = 1

// PageSize is the granularity of ranges. Records store page numbers of
// this size whatever the host's page size, so that a record stays valid
// when read back.
const PageSize = 4096

// Root is a directory (or a single file) a sandbox reads from.
type Root struct {
	// ID identifies the root's content across restarts: a layer's diff
	// ID ("layer:sha256:…") or a host path ("host:/usr/lib/python3.11").
	ID string
	// Path is where the root is on this host now.
	Path string
}

// Range is a run of pages of one file: Start and Len in PageSize pages.
type Range struct {
	Start uint32
	Len   uint32
}

// File is one file of the working set, with the identity it had when
// recorded: a file whose identity changed is not prefetched.
type File struct {
	// Root indexes Record.Roots; Path is relative to that root ("" when
	// the root is the file itself).
	Root    int    `json:"root"`
	Path    string `json:"path"`
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtimeNs"`
	Ino     uint64 `json:"ino"`
	// Ranges are flattened (start, length) pairs in pages, ascending and
	// disjoint: compact in JSON.
	Ranges []uint32 `json:"ranges"`
}

// Pairs returns f's ranges.
func (f File) Pairs() []Range {
	out := make([]Range, 0, len(f.Ranges)/2)
	for i := 0; i+1 < len(f.Ranges); i += 2 {
		out = append(out, Range{Start: f.Ranges[i], Len: f.Ranges[i+1]})
	}
	return out
}

// Record is the working set of one function version's cold start on one
// host.
type Record struct {
	Format int    `json:"format"`
	Key    string `json:"key"`
	// Function and Version name what was recorded, for `baton get`.
	Function string    `json:"function"`
	Version  int       `json:"version"`
	Recorded time.Time `json:"recorded"`
	// Roots are the IDs of the roots the files are in.
	Roots []string `json:"roots"`
	Files []File   `json:"files"`
}

// Pages is the number of pages the record names.
func (r Record) Pages() int64 {
	var n int64
	for _, f := range r.Files {
		for i := 1; i < len(f.Ranges); i += 2 {
			n += int64(f.Ranges[i])
		}
	}
	return n
}

// Bytes is the size of the working set.
func (r Record) Bytes() int64 { return r.Pages() * PageSize }

// RangeCount is the number of ranges (readahead requests) in the record.
func (r Record) RangeCount() int {
	n := 0
	for _, f := range r.Files {
		n += len(f.Ranges) / 2
	}
	return n
}

// Summary describes a record without its ranges.
type Summary struct {
	Key      string
	Function string
	Version  int
	Bytes    int64
	Ranges   int
	Files    int
	Recorded time.Time
	// Prefetches counts the cold starts that prefetched this record
	// since the worker started.
	Prefetches int64
}

func (r Record) summary() Summary {
	return Summary{Key: r.Key, Function: r.Function, Version: r.Version, Bytes: r.Bytes(),
		Ranges: r.RangeCount(), Files: len(r.Files), Recorded: r.Recorded}
}

// Key identifies what a working set belongs to: a function version with
// its code, runtime and image. A change of any of them is a different
// key, and so a new recording. image is the image's name (empty for the
// host's runtimes); which layers it has now is checked against the
// record's roots when the sandbox is known.
func Key(function string, version int, codeDigest, runtime, image string) string {
	h := sha256.New()
	for _, s := range []string{function, strconv.Itoa(version), codeDigest, runtime, image} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// validKey says whether k is a key as Key makes them (it names a file).
func validKey(k string) bool {
	if len(k) != 32 {
		return false
	}
	_, err := hex.DecodeString(k)
	return err == nil
}

// Limits bound a record.
type Limits struct {
	// MaxFiles and MaxRanges bound the record; a larger working set is
	// coalesced across wider gaps, then cut (largest ranges kept).
	MaxFiles  int
	MaxRanges int
	// GapPages: ranges closer than this are merged (reading the pages in
	// between costs less than another request).
	GapPages int
}

// DefaultLimits keep a record under about 1 MiB of JSON.
func DefaultLimits() Limits { return Limits{MaxFiles: 8192, MaxRanges: 32768, GapPages: 8} }

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxFiles <= 0 {
		l.MaxFiles = d.MaxFiles
	}
	if l.MaxRanges <= 0 {
		l.MaxRanges = d.MaxRanges
	}
	if l.GapPages < 0 {
		l.GapPages = 0
	}
	return l
}

// errorf prefixes the package's errors.
func errorf(format string, args ...any) error {
	return fmt.Errorf("working set: "+format, args...)
}
