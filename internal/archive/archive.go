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
// match either with errors.Is. The cause comes first: errdefs.Classify
// takes the first classified error, and a size limit (ErrTooLarge) is
// more specific than "invalid".
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrInvalid}
	}
	return []error{e.Err, ErrInvalid}
}

// ErrTooLarge is matched (besides ErrInvalid) by errors about an archive
// over a size limit: the API answers 413 for them.
var ErrTooLarge = errdefs.New(errdefs.TooLarge, "code_too_large", "code archive is over a size limit")

func invalid(entry, format string, args ...any) *Error {
	return &Error{Entry: entry, Reason: fmt.Sprintf(format, args...)}
}

func tooLarge(entry, format string, args ...any) *Error {
	return &Error{Entry: entry, Reason: fmt.Sprintf(format, args...), Err: ErrTooLarge}
}

// Limits bounds what an archive may contain. A zero or negative field means
// the corresponding value from DefaultLimits.
type Limits struct {
	// MaxFiles bounds the number of entries of any kind (files, directories
	// and symlinks), which bounds the inodes an archive can create.
	MaxFiles int
	// MaxTotalBytes bounds the sum of the decompressed sizes of all entries:
	// what one function's code may occupy on a host's disk.
	MaxTotalBytes int64
	// MaxFileBytes bounds the decompressed size of any single entry.
	MaxFileBytes int64
	// MaxRatio bounds the decompressed size to this multiple of the
	// archive's own size, so that a small upload cannot claim much disk
	// (a zip bomb under MaxTotalBytes). Archives may always unpack to
	// RatioFloorBytes, whatever their ratio.
	MaxRatio int

	// totalReason names the limit behind MaxTotalBytes once forSize has
	// applied the ratio.
	totalReason string
}

// RatioFloorBytes is what any archive may unpack to regardless of
// MaxRatio: small, very compressible code (a JSON fixture) is harmless.
const RatioFloorBytes = 8 << 20

// DefaultMaxTotalBytes is the default unpacked size limit of one
// function's code, near Lambda's 250 MB.
const DefaultMaxTotalBytes = 256 << 20

// DefaultLimits returns limits generous enough for real function code while
// still stopping zip bombs.
func DefaultLimits() Limits {
	return Limits{
		MaxFiles:      20000,
		MaxTotalBytes: DefaultMaxTotalBytes,
		MaxFileBytes:  DefaultMaxTotalBytes,
		// Source and node_modules compress 3-10x; 100x is far beyond code.
		MaxRatio: 100,
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
	if l.MaxRatio <= 0 {
		l.MaxRatio = d.MaxRatio
	}
	return l
}

// forSize returns the limits for an archive of size bytes: MaxTotalBytes
// lowered to what MaxRatio allows, with the reason kept for messages.
func (l Limits) forSize(size int64) Limits {
	if l.totalReason != "" {
		return l // already applied (Extract validates with its limits)
	}
	l = l.withDefaults()
	l.totalReason = fmt.Sprintf("limit of %s unpacked per function", FormatBytes(l.MaxTotalBytes))
	if size > 0 && size <= l.MaxTotalBytes/int64(l.MaxRatio) {
		if byRatio := max(size*int64(l.MaxRatio), RatioFloorBytes); byRatio < l.MaxTotalBytes {
			l.MaxTotalBytes = byRatio
			l.totalReason = fmt.Sprintf("limit of %d times the archive's size (%s unpacked for this %s archive)",
				l.MaxRatio, FormatBytes(byRatio), FormatBytes(size))
		}
	}
	return l
}

// totalExceeded is the error for contents over MaxTotalBytes.
func (l Limits) totalExceeded(entry string) *Error {
	reason := l.totalReason
	if reason == "" {
		reason = fmt.Sprintf("limit of %s unpacked per function", FormatBytes(l.MaxTotalBytes))
	}
	return tooLarge(entry, "archive contents exceed the %s", reason)
}

// FormatBytes writes a size for people: "256 MiB", "900 KiB", "12 bytes".
func FormatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		if n%(1<<20) == 0 {
			return fmt.Sprintf("%d MiB", n>>20)
		}
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// Summary describes a valid archive.
type Summary struct {
	// Files counts regular files and symlinks (directories are not counted).
	Files int
	// TotalBytes is the decompressed size of all regular files and symlink
	// targets, as actually measured rather than as declared in headers.
	TotalBytes int64
}
