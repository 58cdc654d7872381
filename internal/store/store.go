// Package store defines the durable state Baton keeps: what users created
// (functions and their code) and the bounded log of invocation records.
// Everything else (instances, scale, queues) lives in memory and is rebuilt.
package store

import (
	"context"
	"io"

	"github.com/baton-faas/baton/internal/function"

	"github.com/baton-faas/baton/internal/errdefs"
)

// ErrNotFound is returned for missing keys. Its API code names functions
// because functions (and their code) are what the API looks up here.
var ErrNotFound = errdefs.New(errdefs.NotFound, "function_not_found", "not found")

// ErrConflict is returned when an optimistic update lost a race.
var ErrConflict = errdefs.New(errdefs.Conflict, "conflict", "concurrent update")

// ErrUnavailable: the store did not answer (in a cluster, while servers
// change leaders). A write may or may not have been applied; retrying it
// is safe for Baton's writes, which are conditional or idempotent.
var ErrUnavailable = errdefs.New(errdefs.Unavailable, "store_unavailable", "the store did not answer; retry")

// Functions stores function definitions.
type Functions interface {
	// GetFunction returns the function and its revision for Put.
	GetFunction(ctx context.Context, name string) (function.Function, uint64, error)
	ListFunctions(ctx context.Context) ([]function.Function, error)
	// PutFunction writes fn if the stored revision still equals revision
	// (0: the function must not exist yet). It returns ErrConflict otherwise.
	PutFunction(ctx context.Context, fn function.Function, revision uint64) (uint64, error)
	DeleteFunction(ctx context.Context, name string) error
}

// Blobs stores content-addressed code archives.
type Blobs interface {
	PutBlob(ctx context.Context, name string, r io.Reader) error
	// GetBlob opens a blob; the caller closes it.
	GetBlob(ctx context.Context, name string) (io.ReadCloser, error)
	HasBlob(ctx context.Context, name string) (bool, error)
	DeleteBlob(ctx context.Context, name string) error
}

// Records is the durable, bounded log of invocation records.
type Records interface {
	// AppendRecords stores encoded records, oldest first, in as few writes
	// as the store allows (one per invocation would put a store write on
	// every invocation's account); the oldest records are dropped beyond
	// the store's bound. It does not keep records after it returns, so
	// the caller may reuse their memory.
	AppendRecords(ctx context.Context, records [][]byte) error
	// RecentRecords returns up to limit of the newest records, oldest first.
	RecentRecords(ctx context.Context, limit int) ([][]byte, error)
}
