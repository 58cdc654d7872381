// Package image is the per-host layered image store (DESIGN idea 4).
//
// Every image layer is converted once per host into a read-only EROFS file,
// content-addressed by its OCI diffID. Each layer file is mounted once per
// host (the kernel mounts an EROFS file directly, no loop device) and that
// one mount serves as an overlay lowerdir for every sandbox using the layer,
// so all of them share one copy in the page cache.
//
// On-disk layout under the root directory:
//
//	lock                          held (flock) by the one process using the store
//	layers/sha256/<hex>.erofs     the layer as an EROFS image
//	layers/sha256/<hex>.json      its metadata: diffID, sha256 and size of the .erofs
//	images/<name>.json            image records ('/' in names escaped)
//	refs/<name>.json              named references to layers outside images (code layers)
//	mnt/<hex>                     read-only mount point of a layer while in use
//	views/<id>/<name>             views: layers attached by name (a sandbox's /var/task)
//	tmp/                          files being written; emptied at Open
package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/keyedlock"

	"github.com/baton-faas/baton/internal/errdefs"
)

// Errors callers can test for with errors.Is.
var (
	ErrNotFound    = errdefs.New(errdefs.NotFound, "image_not_found", "not found")
	ErrInUse       = errdefs.New(errdefs.Conflict, "image_in_use", "in use")
	ErrCorrupt     = errdefs.New(errdefs.Internal, "image_corrupt", "layer file corrupt")
	ErrInvalidName = errdefs.New(errdefs.Invalid, "invalid_image_name", "invalid image name")
	ErrClosed      = errdefs.New(errdefs.Unavailable, "image_store_closed", "image store closed")
)

// Store is the image store of one host. It is safe for concurrent use.
type Store struct {
	root string
	log  *slog.Logger
	lock *os.File // flock'ed for the store's lifetime

	// layerLocks serialises commit, verification, mount, unmount and
	// deletion of one layer; different layers proceed in parallel.
	layerLocks keyedlock.Locks
	// gcMu keeps GC from deleting layers that an import or add has written
	// but not yet referenced from an image: adders hold it shared.
	gcMu sync.RWMutex
	// imgMu serialises writes of image records.
	imgMu sync.Mutex

	mu     sync.Mutex
	mounts map[string]*layerMount // by layer hex digest
	// verified remembers the file stamp of each layer's last successful
	// digest check.
	verified map[string]fileStamp
	views    map[string]*View // open views by id
	closed   bool
}

// layerMount is one kernel mount of a layer file, shared by all users.
type layerMount struct {
	dir  string
	refs int
}

// Open opens (creating if needed) the store under root. Only one process may
// use a store at a time: the mounts it finds under root/mnt are therefore
// leftovers of a crashed run and are unmounted here.
func Open(root string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("image store %s: %w", root, err)
	}
	for _, d := range []string{abs, filepath.Join(abs, "layers", "sha256"), filepath.Join(abs, "images"),
		filepath.Join(abs, "mnt"), filepath.Join(abs, "tmp"), filepath.Join(abs, "refs"), filepath.Join(abs, "views")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("image store: create %s: %w", d, err)
		}
	}
	// Mount points in /proc/self/mountinfo are canonical paths; resolve
	// symlinks so that stale mounts are recognised.
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return nil, fmt.Errorf("image store %s: %w", root, err)
	}
	lock, err := os.OpenFile(filepath.Join(abs, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("image store: open lock: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		owner, _ := io.ReadAll(io.LimitReader(lock, 32))
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("image store %s is in use by another process (pid %s)", abs, string(owner))
		}
		return nil, fmt.Errorf("image store %s: lock: %w", abs, err)
	}
	// The pid is only a hint for the error above.
	_ = lock.Truncate(0)
	_, _ = lock.WriteAt([]byte(strconv.Itoa(os.Getpid())), 0)

	s := &Store{root: abs, log: log.With("component", "image"), lock: lock, mounts: map[string]*layerMount{}, verified: map[string]fileStamp{},
		views: map[string]*View{}}
	if err := s.cleanStale(); err != nil {
		lock.Close()
		return nil, err
	}
	return s, nil
}

// Root returns the store's root directory.
func (s *Store) Root() string { return s.root }

// Close closes the views still open, unmounts every layer the store
// mounted and releases the store. Release functions handed out earlier
// become no-ops. Overlays built on the layers keep working: the unmount is
// lazy.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	views := make([]*View, 0, len(s.views))
	for _, v := range s.views {
		views = append(views, v)
	}
	s.mu.Unlock()

	var errs []error
	for _, v := range views {
		if err := v.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	s.mu.Lock()
	mounts := s.mounts
	s.mounts = map[string]*layerMount{}
	s.mu.Unlock()
	for hex, m := range mounts {
		unlock := s.layerLocks.Lock(hex)
		if err := s.unmount(m.dir); err != nil {
			errs = append(errs, err)
		}
		unlock()
	}
	if err := s.lock.Close(); err != nil {
		errs = append(errs, fmt.Errorf("image store: close lock: %w", err))
	}
	return errors.Join(errs...)
}

func (s *Store) checkOpen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	return nil
}

func (s *Store) layerDir() string            { return filepath.Join(s.root, "layers", "sha256") }
func (s *Store) layerFile(hex string) string { return filepath.Join(s.layerDir(), hex+".erofs") }
func (s *Store) layerMeta(hex string) string { return filepath.Join(s.layerDir(), hex+".json") }
func (s *Store) mountDir(hex string) string  { return filepath.Join(s.root, "mnt", hex) }
func (s *Store) tmpDir() string              { return filepath.Join(s.root, "tmp") }
func (s *Store) imageDir() string            { return filepath.Join(s.root, "images") }

// cleanStale unmounts layer mounts and views and removes temporary files
// left by a crashed run.
func (s *Store) cleanStale() error {
	mntRoot, viewRoot := filepath.Join(s.root, "mnt"), filepath.Join(s.root, "views")
	// Views first: their binds hold layer mounts.
	for _, dir := range []string{viewRoot, mntRoot} {
		points, err := mountPointsUnder(dir)
		if err != nil {
			return fmt.Errorf("image store: find stale mounts: %w", err)
		}
		for _, p := range points {
			if p == dir {
				continue
			}
			s.log.Warn("unmounting what a previous run left mounted", "path", p)
		}
		if err := unmountTree(dir); err != nil {
			return fmt.Errorf("image store: %w", err)
		}
	}
	for _, dir := range []string{viewRoot, mntRoot, s.tmpDir()} {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("image store: %w", err)
		}
		for _, e := range ents {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("image store: remove stale %s: %w", e.Name(), err)
			}
		}
	}
	return nil
}

// writeFileAtomic writes data to path through a temporary file and a
// rename, so readers see either the old or the new content. durable syncs
// the file and the directory, so that the content also survives a crash.
func (s *Store) writeFileAtomic(path string, data []byte, durable bool) error {
	f, err := os.CreateTemp(s.tmpDir(), "write-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if durable {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if !durable {
		return nil
	}
	return syncDir(filepath.Dir(path))
}

func (s *Store) writeJSON(path string, v any, durable bool) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return s.writeFileAtomic(path, append(data, '\n'), durable)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ctxReader fails reads once ctx is done, so long copies stop promptly.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
