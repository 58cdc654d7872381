// Package archive validates, extracts and creates the zip archives that carry
// function code.
//
// Archives come from users, so everything in them is treated as hostile:
// paths, entry types, symlink targets and the sizes declared in headers are
// all checked before anything touches the file system, and extraction only
// ever writes below the destination directory.
package archive

import (
	"fmt"

	"github.com/baton-faas/baton/internal/errdefs"
)

// ErrInvalid is matched (via errors.Is) by every error caused by the content
// of an archive, as opposed to I/O failures on the caller's side. The API
// layer maps it to HTTP 400.
var ErrInvalid = errdefs.New(errdefs.Invalid, "invalid_spec", "invalid archive")

// Error describes why an archive was refused.
type Error struct {
	// Entry is the entry name exactly as stored in the archive, or "" when
	// the problem concerns the archive as a whole.
	Entry string
	// Reason is a human-readable explanation suitable for showing to users.
	Reason string
	// Err is the underlying cause, if any (for example zip.ErrChecksum).
	Err error
}

func (e *Error) Error() string {
	if e.Entry == "" {
		return "archive: " + e.Reason
	}
	return fmt.Sprintf("archive entry %q: %s", e.Entry, e.Reason)
}

// Unwrap exposes both ErrInvalid and the underlying cause so callers can
// match either with errors.Is.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrInvalid}
	}
	return []error{ErrInvalid, e.Err}
}

func invalid(entry, format string, args ...any) *Error {
	return &Error{Entry: entry, Reason: fmt.Sprintf(format, args...)}
}

// Limits bounds what an archive may contain. A zero or negative field means
// the corresponding value from DefaultLimits.
type Limits struct {
	// MaxFiles bounds the number of entries of any kind (files, directories
	// and symlinks), which bounds the inodes an archive can create.
	MaxFiles int
	// MaxTotalBytes bounds the sum of the decompressed sizes of all entries.
	MaxTotalBytes int64
	// MaxFileBytes bounds the decompressed size of any single entry.
	MaxFileBytes int64
}

// DefaultLimits returns limits generous enough for real function code while
// still stopping zip bombs.
func DefaultLimits() Limits {
	return Limits{
		MaxFiles:      20000,
		MaxTotalBytes: 1 << 30,
		MaxFileBytes:  512 << 20,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxFiles <= 0 {
		l.MaxFiles = d.MaxFiles
	}
	if l.MaxTotalBytes <= 0 {
		l.MaxTotalBytes = d.MaxTotalBytes
	}
	if l.MaxFileBytes <= 0 {
		l.MaxFileBytes = d.MaxFileBytes
	}
	return l
}

// Summary describes a valid archive.
type Summary struct {
	// Files counts regular files and symlinks (directories are not counted).
	Files int
	// TotalBytes is the decompressed size of all regular files and symlink
	// targets, as actually measured rather than as declared in headers.
	TotalBytes int64
}
