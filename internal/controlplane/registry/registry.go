// Package registry keeps the durable catalogue of functions: specs, versions
// and code archives. It validates everything before writing, and writes code
// before the definition that references it, so a failed deploy never leaves
// a function pointing at missing or half-written code.
package registry

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"strings"
	"time"

	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/keyedlock"
	"github.com/baton-faas/baton/internal/runtimes"
	"github.com/baton-faas/baton/internal/store"
)

// ErrNotFound is returned for unknown functions.
var ErrNotFound = store.ErrNotFound

// Registry is the function catalogue.
type Registry struct {
	fns    store.Functions
	blobs  store.Blobs
	limits archive.Limits
	log    *slog.Logger
	// perDigest orders "store code, then reference it" against "find no
	// reference, then delete the code", so that collection never removes
	// code a concurrent deploy of another function is about to use.
	perDigest keyedlock.Locks
}

// New returns a registry over the given stores.
func New(fns store.Functions, blobs store.Blobs, limits archive.Limits, log *slog.Logger) *Registry {
	return &Registry{fns: fns, blobs: blobs, limits: limits, log: log}
}

// DeployResult says what a deploy did.
type DeployResult struct {
	Function function.Function
	// Created is true for a new function, NewVersion when the version changed.
	Created    bool
	NewVersion bool
}

// Deploy validates and stores a function. A change to anything that shapes
// an instance (code, runtime, handler, env, limits) makes a new version;
// scaling-only changes update the current version in place.
func (r *Registry) Deploy(ctx context.Context, name string, spec function.Spec, code []byte) (DeployResult, error) {
	if err := function.ValidateName(name); err != nil {
		return DeployResult{}, err
	}
	spec, err := spec.Normalize()
	if err != nil {
		return DeployResult{}, err
	}
	if len(code) == 0 {
		return DeployResult{}, fmt.Errorf("%w: code is required (base64 of a zip archive)", function.ErrInvalid)
	}
	if _, err := archive.Validate(bytes.NewReader(code), int64(len(code)), r.limits); err != nil {
		return DeployResult{}, fmt.Errorf("invalid function spec: code archive: %w", err) // archive errors are classified (invalid, or too large)
	}
	if drv, ok := runtimes.Lookup(spec.Runtime); ok && drv.Executable() != "" {
		if err := checkExecutable(code, spec.Runtime, drv.Executable()); err != nil {
			return DeployResult{}, err
		}
	}
	sum := sha256.Sum256(code)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	res, old, err := r.store(ctx, name, spec, digest, code)
	if err != nil {
		return DeployResult{}, err
	}
	if old != "" && old != digest {
		r.collectBlob(ctx, old)
	}
	return res, nil
}

// store writes the code and then the definition, holding the digest lock.
func (r *Registry) store(ctx context.Context, name string, spec function.Spec, digest string, code []byte) (DeployResult, string, error) {
	defer r.perDigest.Lock(digest)()
	if err := r.ensureBlob(ctx, digest, code); err != nil {
		return DeployResult{}, "", err
	}
	for attempt := 0; attempt < 5; attempt++ {
		res, old, err := r.put(ctx, name, spec, digest, int64(len(code)))
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		return res, old, err
	}
	return DeployResult{}, "", fmt.Errorf("deploy %s: too many concurrent updates, try again: %w", name, store.ErrConflict)
}

// checkExecutable insists that the archive of a runtime that executes a
// file of its own (provided: bootstrap) holds it, executable, at its root,
// as Lambda custom runtimes do.
func checkExecutable(code []byte, runtime, name string) error {
	zr, err := zip.NewReader(bytes.NewReader(code), int64(len(code)))
	if err != nil {
		return fmt.Errorf("%w: code archive: %w", function.ErrInvalid, err)
	}
	for _, f := range zr.File {
		if strings.TrimPrefix(f.Name, "./") != name {
			continue
		}
		mode := f.Mode()
		if mode.IsDir() {
			break
		}
		if mode&0o111 == 0 && mode&fs.ModeSymlink == 0 {
			return fmt.Errorf("%w: runtime %s: %s is not executable (set its x bit before zipping)", function.ErrInvalid, runtime, name)
		}
		return nil
	}
	return fmt.Errorf("%w: runtime %s needs an executable file named %s at the root of the code archive", function.ErrInvalid, runtime, name)
}

// put writes the definition; it returns the digest the function used before.
func (r *Registry) put(ctx context.Context, name string, spec function.Spec, digest string, size int64) (DeployResult, string, error) {
	now := time.Now().UTC()
	old, rev, err := r.fns.GetFunction(ctx, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		fn := function.Function{Name: name, Version: 1, Spec: spec, CodeDigest: digest, CodeSize: size, CreatedAt: now, UpdatedAt: now}
		if _, err := r.fns.PutFunction(ctx, fn, 0); err != nil {
			return DeployResult{}, "", err
		}
		return DeployResult{Function: fn, Created: true, NewVersion: true}, "", nil
	case err != nil:
		return DeployResult{}, "", err
	}
	fn := old
	fn.Spec = spec
	fn.UpdatedAt = now
	newVersion := old.CodeDigest != digest || !old.Spec.InstanceEqual(spec)
	if newVersion {
		fn.Version = old.Version + 1
		fn.CodeDigest, fn.CodeSize = digest, size
	}
	if _, err := r.fns.PutFunction(ctx, fn, rev); err != nil {
		return DeployResult{}, "", err
	}
	return DeployResult{Function: fn, NewVersion: newVersion}, old.CodeDigest, nil
}

func (r *Registry) ensureBlob(ctx context.Context, digest string, code []byte) error {
	ok, err := r.blobs.HasBlob(ctx, digest)
	if err != nil {
		return err
	}
	if ok {
		return nil
	}
	return r.blobs.PutBlob(ctx, digest, bytes.NewReader(code))
}

// collectBlob deletes a code archive no function references any more.
// Workers keep their own unpacked copy, so draining instances of an old
// version are unaffected.
func (r *Registry) collectBlob(ctx context.Context, digest string) {
	defer r.perDigest.Lock(digest)()
	fns, err := r.fns.ListFunctions(ctx)
	if err != nil {
		r.log.Warn("code garbage collection skipped", "digest", digest, "err", err)
		return
	}
	for _, f := range fns {
		if f.CodeDigest == digest {
			return
		}
	}
	if err := r.blobs.DeleteBlob(ctx, digest); err != nil {
		r.log.Warn("delete unused code", "digest", digest, "err", err)
	}
}

// Get returns a function.
func (r *Registry) Get(ctx context.Context, name string) (function.Function, error) {
	fn, _, err := r.fns.GetFunction(ctx, name)
	return fn, err
}

// List returns all functions.
func (r *Registry) List(ctx context.Context) ([]function.Function, error) {
	return r.fns.ListFunctions(ctx)
}

// Delete removes a function and, if unused, its code.
func (r *Registry) Delete(ctx context.Context, name string) (function.Function, error) {
	fn, _, err := r.fns.GetFunction(ctx, name)
	if err != nil {
		return fn, err
	}
	if err := r.fns.DeleteFunction(ctx, name); err != nil {
		return fn, err
	}
	r.collectBlob(ctx, fn.CodeDigest)
	return fn, nil
}

// Code opens a code archive by digest.
func (r *Registry) Code(ctx context.Context, digest string) (io.ReadCloser, error) {
	return r.blobs.GetBlob(ctx, digest)
}
