package image

import (
	"golang.org/x/sys/unix"

	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Layer describes one stored layer.
type Layer struct {
	// DiffID is the OCI diffID: "sha256:<hex>" of the uncompressed tar.
	// It is the layer's identity in the store.
	DiffID string `json:"diffID"`
	// Digest is "sha256:<hex>" of the EROFS file; it is checked before the
	// file is first mounted.
	Digest string `json:"digest"`
	// Size is the EROFS file's size in bytes.
	Size int64 `json:"size"`
}

// parseDigest accepts "sha256:<hex>" or a bare 64-digit hex digest and
// returns the lower-case hex.
func parseDigest(d string) (string, error) {
	h := strings.TrimPrefix(d, "sha256:")
	if len(h) != 64 {
		return "", fmt.Errorf("invalid layer digest %q: want sha256:<64 hex digits>", d)
	}
	if _, err := hex.DecodeString(h); err != nil || strings.ToLower(h) != h {
		return "", fmt.Errorf("invalid layer digest %q: want sha256:<64 lower-case hex digits>", d)
	}
	return h, nil
}

// Layer returns the metadata of a stored layer.
func (s *Store) Layer(diffID string) (Layer, error) {
	h, err := parseDigest(diffID)
	if err != nil {
		return Layer{}, err
	}
	return s.readLayer(h)
}

// Layers lists the stored layers, sorted by diffID.
func (s *Store) Layers() ([]Layer, error) {
	ents, err := os.ReadDir(s.layerDir())
	if err != nil {
		return nil, fmt.Errorf("list layers: %w", err)
	}
	var out []Layer
	for _, e := range ents {
		h, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		l, err := s.readLayer(h)
		if errors.Is(err, ErrNotFound) {
			continue // half-written or being deleted
		}
		if err != nil {
			// One damaged layer must not hide the others.
			s.log.Warn("skipping unreadable layer", "diffID", "sha256:"+h, "err", err)
			continue
		}
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].DiffID < out[j].DiffID })
	return out, nil
}

// readLayer loads a layer's metadata. A layer counts as present only when
// its metadata and an EROFS file of the recorded size both exist; anything
// else is a leftover of an interrupted write and reads as ErrNotFound.
func (s *Store) readLayer(h string) (Layer, error) {
	data, err := os.ReadFile(s.layerMeta(h))
	if errors.Is(err, fs.ErrNotExist) {
		return Layer{}, fmt.Errorf("layer sha256:%s: %w", h, ErrNotFound)
	}
	if err != nil {
		return Layer{}, fmt.Errorf("layer sha256:%s: %w", h, err)
	}
	var l Layer
	if err := json.Unmarshal(data, &l); err != nil {
		return Layer{}, fmt.Errorf("layer sha256:%s: metadata: %w", h, err)
	}
	if l.DiffID != "sha256:"+h {
		return Layer{}, fmt.Errorf("layer sha256:%s: metadata names %s", h, l.DiffID)
	}
	fi, err := os.Stat(s.layerFile(h))
	if errors.Is(err, fs.ErrNotExist) {
		return Layer{}, fmt.Errorf("layer sha256:%s: EROFS file missing: %w", h, ErrNotFound)
	}
	if err != nil {
		return Layer{}, fmt.Errorf("layer sha256:%s: %w", h, err)
	}
	if fi.Size() != l.Size {
		return Layer{}, fmt.Errorf("layer sha256:%s: EROFS file is %d bytes, recorded %d: %w", h, fi.Size(), l.Size, ErrCorrupt)
	}
	return l, nil
}

// verifyLayer checks the EROFS file against its recorded digest.
func (s *Store) verifyLayer(ctx context.Context, h string) (Layer, error) {
	l, err := s.readLayer(h)
	if err != nil {
		return Layer{}, err
	}
	f, err := os.Open(s.layerFile(h))
	if err != nil {
		return Layer{}, fmt.Errorf("layer %s: %w", l.DiffID, err)
	}
	defer f.Close()
	// Hashing a base layer costs tens of milliseconds per cold sandbox; a
	// file whose identity and change time are those of its last successful
	// check has not been written since, so it is not hashed again.
	stamp, stampErr := stampOf(f)
	if stampErr == nil {
		s.mu.Lock()
		ok := s.verified[h] == stamp
		s.mu.Unlock()
		if ok {
			return l, nil
		}
	}
	sum := sha256.New()
	if _, err := io.Copy(sum, ctxReader{ctx, f}); err != nil {
		return Layer{}, fmt.Errorf("layer %s: hash EROFS file: %w", l.DiffID, err)
	}
	if got := "sha256:" + hex.EncodeToString(sum.Sum(nil)); got != l.Digest {
		return Layer{}, fmt.Errorf("layer %s: EROFS file %s has digest %s, recorded %s; re-import the image to repair it: %w",
			l.DiffID, s.layerFile(h), got, l.Digest, ErrCorrupt)
	}
	if stampErr == nil {
		s.mu.Lock()
		s.verified[h] = stamp
		s.mu.Unlock()
	}
	return l, nil
}

// fileStamp identifies a file's content version: any write changes its
// ctime (which user space cannot set back), a replacement its inode.
type fileStamp struct {
	dev, ino  uint64
	size      int64
	ctimeSec  int64
	ctimeNsec int64
	mtimeSec  int64
	mtimeNsec int64
}

func stampOf(f *os.File) (fileStamp, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fileStamp{}, err
	}
	return fileStamp{dev: uint64(st.Dev), ino: st.Ino, size: st.Size,
		ctimeSec: st.Ctim.Sec, ctimeNsec: st.Ctim.Nsec, mtimeSec: st.Mtim.Sec, mtimeNsec: st.Mtim.Nsec}, nil
}

// AddLayerFromTar stores the layer read from r, an uncompressed tar
// (an OCI layer changeset). The diffID is computed while reading. Adding a
// layer that is already stored rewrites it with identical content, which
// also repairs a damaged file.
//
// A layer that no image references may be deleted by GC; pass its diffID
// to GC's keep list while it is needed otherwise.
func (s *Store) AddLayerFromTar(ctx context.Context, r io.Reader) (Layer, error) {
	if err := s.checkOpen(); err != nil {
		return Layer{}, err
	}
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	return s.addLayer(ctx, r, true)
}

// DirOption adjusts AddLayerFromDir.
type DirOption func(*dirOptions)

type dirOptions struct {
	prefix      string
	ref         string
	rebuildable bool
}

// Rebuildable says the caller can build the layer again from its source
// (a function's code archive), so it is not forced to disk: the fsyncs
// of a durable layer cost more than writing a small layer does. After a
// crash such a layer may be torn or missing; the digest check before its
// first mount refuses a torn file, and a missing or unreadable layer or
// ref reads as absent or as an error, upon which the caller builds the
// layer again.
func Rebuildable() DirOption {
	return func(o *dirOptions) { o.rebuildable = true }
}

// WithPrefix places the directory's content at prefix inside the layer
// (for example "/var/task"), so that the layer can be stacked on an image
// as an overlay lowerdir. Missing parents are created as 0755 root:root.
func WithPrefix(prefix string) DirOption {
	return func(o *dirOptions) { o.prefix = prefix }
}

// AddLayerFromDir stores the content of dir (a function's code) as a
// layer. The layer is deterministic: files are ordered by name, owned by
// root and dated to the epoch, so the same content always has the same
// diffID whatever the files' times and owners. Permission bits and
// symlinks are kept; hard links become copies. The top directory (and any
// prefix directories) are 0755 so code stays readable by unprivileged users.
// Without WithRef, the layer may be collected by GC unless an image uses it.
func (s *Store) AddLayerFromDir(ctx context.Context, dir string, opts ...DirOption) (Layer, error) {
	var o dirOptions
	for _, opt := range opts {
		opt(&o)
	}
	prefix := strings.Trim(path.Clean("/"+o.prefix), "/")
	if o.ref != "" {
		if err := validRef(o.ref); err != nil {
			return Layer{}, err
		}
	}
	// WalkDir does not descend into a root that is a symlink.
	dir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return Layer{}, fmt.Errorf("layer from directory: %w", err)
	}
	if fi, err := os.Stat(dir); err != nil {
		return Layer{}, fmt.Errorf("layer from directory: %w", err)
	} else if !fi.IsDir() {
		return Layer{}, fmt.Errorf("layer from directory: %s is not a directory", dir)
	}
	if err := s.checkOpen(); err != nil {
		return Layer{}, err
	}
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()

	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeDirTar(ctx, pw, dir, prefix))
	}()
	l, err := s.addLayer(ctx, pr, !o.rebuildable)
	pr.CloseWithError(errors.New("layer conversion stopped")) // unblocks the writer on failure
	if err != nil {
		return Layer{}, fmt.Errorf("layer from directory %s: %w", dir, err)
	}
	if o.ref != "" {
		if err := s.putRef(o.ref, l, !o.rebuildable); err != nil {
			return Layer{}, err
		}
	}
	return l, nil
}

// writeDirTar writes dir as a normalised tar stream: entries in lexical
// order, uid/gid 0, mtime 0, no user/group names, no xattrs.
func writeDirTar(ctx context.Context, w io.Writer, dir, prefix string) error {
	tw := tar.NewWriter(w)
	epoch := time.Unix(0, 0)
	if prefix != "" {
		parts := strings.Split(prefix, "/")
		for i := range parts {
			hdr := &tar.Header{Typeflag: tar.TypeDir, Name: strings.Join(parts[:i+1], "/") + "/", Mode: 0o755,
				ModTime: epoch, Format: tar.FormatPAX}
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
		}
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if rel == "." {
			// The layer root and the prefix directories were written
			// above, or are implicit: always 0755 root:root.
			return nil
		}
		name := path.Join(prefix, filepath.ToSlash(rel))
		fi, err := d.Info()
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: name, Mode: int64(unixPerm(fi.Mode())), ModTime: epoch, Format: tar.FormatPAX}
		switch {
		case fi.IsDir():
			hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
		case fi.Mode().IsRegular():
			hdr.Typeflag, hdr.Size = tar.TypeReg, fi.Size()
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
		default:
			return fmt.Errorf("%s: unsupported file type %s in a code directory", rel, fi.Mode().Type())
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		// A file that changes size while being read would corrupt the
		// stream; tar.Writer reports it as a short or long write.
		if _, err := io.Copy(tw, f); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// unixPerm returns the permission, setuid, setgid and sticky bits of m in
// their Unix positions.
func unixPerm(m fs.FileMode) uint32 {
	p := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		p |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		p |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		p |= 0o1000
	}
	return p
}

// addLayer converts the tar stream to a temporary EROFS file and commits it
// under its diffID; durable forces it to disk first. Callers hold gcMu
// shared.
func (s *Store) addLayer(ctx context.Context, r io.Reader, durable bool) (Layer, error) {
	start := time.Now()
	out, err := os.CreateTemp(s.tmpDir(), "layer-*.erofs")
	if err != nil {
		return Layer{}, fmt.Errorf("add layer: %w", err)
	}
	tmp := out.Name()
	defer os.Remove(tmp) // no-op after the commit's rename

	res, err := convertTar(ctx, ctxReader{ctx, r}, out, s.tmpDir())
	if err == nil && durable {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Layer{}, fmt.Errorf("add layer: %w", err)
	}
	l := Layer{DiffID: "sha256:" + res.diffID, Digest: "sha256:" + res.erofsDigest, Size: res.erofsSize}
	if err := s.commitLayer(res.diffID, tmp, l, durable); err != nil {
		return Layer{}, err
	}
	s.log.Info("layer stored", "diffID", l.DiffID, "size", l.Size, "entries", res.entries,
		"dropped_xattrs", res.droppedXattrs, "took", time.Since(start))
	return l, nil
}

// commitLayer moves a finished EROFS file into place and records its
// metadata. The file goes first: a crash in between leaves a file without
// metadata, which reads as absent and is overwritten by the next add.
//
// The file counts as verified as committed: l.Digest was computed over
// the very bytes written, and its stamp (see verifyLayer) proves any later
// change. So the first mount after an add does not hash the file again,
// which for a new code version is most of the mount's cost.
func (s *Store) commitLayer(h, tmp string, l Layer, durable bool) error {
	unlock := s.layerLocks.Lock(h)
	defer unlock()
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fmt.Errorf("add layer %s: %w", l.DiffID, err)
	}
	if err := os.Rename(tmp, s.layerFile(h)); err != nil {
		return fmt.Errorf("add layer %s: %w", l.DiffID, err)
	}
	if err := s.writeJSON(s.layerMeta(h), l, durable); err != nil {
		return fmt.Errorf("add layer %s: write metadata: %w", l.DiffID, err)
	}
	if f, err := os.Open(s.layerFile(h)); err == nil {
		stamp, err := stampOf(f)
		f.Close()
		s.mu.Lock()
		if err == nil {
			s.verified[h] = stamp
		} else {
			delete(s.verified, h)
		}
		s.mu.Unlock()
	}
	return nil
}
