package image

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

	"github.com/erofs/go-erofs"
	"golang.org/x/sys/unix"
)

// OCI whiteout markers (image-spec layer.md) and their overlayfs forms.
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh." // AUFS bookkeeping entries, never content
	whiteoutOpaque = ".wh..wh..opq"
	opaqueXattr    = "trusted.overlay.opaque"
	paxXattr       = "SCHILY.xattr."
)

type convertResult struct {
	diffID        string // hex
	erofsDigest   string // hex
	erofsSize     int64
	entries       int
	droppedXattrs int
}

// convertTar writes the OCI layer tar read from r as an EROFS image to out,
// converting whiteouts to their overlayfs form on the way:
//
//   - dir/.wh.name becomes a 0/0 character device dir/name;
//   - dir/.wh..wh..opq sets trusted.overlay.opaque=y on dir.
//
// go-erofs can merge layers itself (CopyFrom with Merge), but that applies
// whiteouts and drops them; a layer mounted on its own must keep them in
// overlay form, so the tar is replayed through the Writer's
// Mkdir/Create/Symlink/Mknod calls instead. The output is deterministic
// (fixed build time, sorted entries): the same tar gives the same bytes.
func convertTar(ctx context.Context, r io.Reader, out *os.File, tmpDir string) (convertResult, error) {
	var res convertResult
	diff := sha256.New()
	in := io.TeeReader(r, diff)
	c := &converter{
		w:     erofs.Create(out, erofs.WithBuildTime(0, 0), erofs.WithTempDir(tmpDir)),
		nodes: map[string]*tar.Header{},
	}
	tr := tar.NewReader(in)
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return res, fmt.Errorf("read layer tar: %w", err)
		}
		if err := c.add(hdr, tr); err != nil {
			return res, fmt.Errorf("layer entry %q: %w", hdr.Name, err)
		}
		res.entries++
	}
	// The diffID covers the whole stream, including the zero padding that
	// follows the end-of-archive marker, which tar.Reader does not read.
	if _, err := io.Copy(io.Discard, in); err != nil {
		return res, fmt.Errorf("read layer tar: %w", err)
	}
	if err := c.w.Close(); err != nil {
		return res, fmt.Errorf("write EROFS image: %w", err)
	}
	// The Writer seeks back to write the superblock last, so the file can
	// only be hashed once complete.
	if _, err := out.Seek(0, io.SeekStart); err != nil {
		return res, err
	}
	sum := sha256.New()
	n, err := io.Copy(sum, out)
	if err != nil {
		return res, fmt.Errorf("hash EROFS image: %w", err)
	}
	res.diffID = hex.EncodeToString(diff.Sum(nil))
	res.erofsDigest = hex.EncodeToString(sum.Sum(nil))
	res.erofsSize = n
	res.droppedXattrs = c.droppedXattrs
	return res, nil
}

type converter struct {
	w *erofs.Writer
	// nodes remembers the header of every non-directory entry, so that a
	// hard link can be replayed as a copy of its target: the go-erofs
	// Writer has no hard-link call.
	nodes         map[string]*tar.Header
	droppedXattrs int
}

func (c *converter) add(hdr *tar.Header, data io.Reader) error {
	// Cleaning under "/" maps "../x" and "/x" inside the layer root.
	p := path.Clean("/" + hdr.Name)
	dir, base := path.Dir(p), path.Base(p)

	if strings.HasPrefix(base, whiteoutPrefix) {
		switch {
		case base == whiteoutOpaque:
			if err := c.ensureDir(dir); err != nil {
				return err
			}
			return c.w.Setxattr(dir, opaqueXattr, "y")
		case strings.HasPrefix(base, whiteoutMeta):
			return nil
		default:
			target := path.Join(dir, base[len(whiteoutPrefix):])
			if _, err := c.w.Stat(target); err == nil {
				return fmt.Errorf("whiteout of %s, which this same layer adds", target)
			}
			if err := c.checkNew(target); err != nil {
				return err
			}
			// mode 0 type c, device 0/0: overlayfs's whiteout.
			return c.w.Mknod(target, unix.S_IFCHR, 0)
		}
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		if p == "/" {
			if err := c.w.Mkdir("/", hdr.FileInfo().Mode()); err != nil {
				return err
			}
		} else if fi, err := c.w.Stat(p); err == nil {
			// Seen before, implicitly as a parent or through an opaque
			// marker: only the metadata is new.
			if !fi.IsDir() {
				return fmt.Errorf("directory replaces a non-directory entry in the same layer")
			}
		} else {
			if err := c.checkNew(p); err != nil {
				return err
			}
			if err := c.w.Mkdir(p, hdr.FileInfo().Mode()); err != nil {
				return err
			}
		}
		return c.setMeta(p, hdr)

	case tar.TypeReg: // tar.Reader reports old TypeRegA entries as TypeReg
		if err := c.checkNew(p); err != nil {
			return err
		}
		if err := c.writeFile(p, data, hdr.Size); err != nil {
			return err
		}
		c.nodes[p] = hdr
		return c.setMeta(p, hdr)

	case tar.TypeSymlink:
		if err := c.checkNew(p); err != nil {
			return err
		}
		if err := c.w.Symlink(hdr.Linkname, p); err != nil {
			return err
		}
		c.nodes[p] = hdr
		return c.setMeta(p, hdr)

	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if err := c.checkNew(p); err != nil {
			return err
		}
		if err := c.mknod(p, hdr); err != nil {
			return err
		}
		c.nodes[p] = hdr
		return c.setMeta(p, hdr)

	case tar.TypeLink:
		return c.hardlink(p, hdr)

	default:
		// Types with no file behind them (GNU long names and PAX records
		// are consumed by tar.Reader itself).
		return nil
	}
}

// hardlink replays a hard link as an independent copy of its target,
// which must appear earlier in the same layer.
func (c *converter) hardlink(p string, hdr *tar.Header) error {
	target := path.Clean("/" + hdr.Linkname)
	th, ok := c.nodes[target]
	if !ok {
		return fmt.Errorf("hard link to %q, which is not an earlier file of this layer", hdr.Linkname)
	}
	if err := c.checkNew(p); err != nil {
		return err
	}
	switch th.Typeflag {
	case tar.TypeReg:
		src, err := c.w.Open(target)
		if err != nil {
			return err
		}
		defer src.Close()
		if err := c.writeFile(p, src, th.Size); err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := c.w.Symlink(th.Linkname, p); err != nil {
			return err
		}
	default:
		if err := c.mknod(p, th); err != nil {
			return err
		}
	}
	c.nodes[p] = th
	// Linked names share one inode, hence the target's metadata.
	return c.setMeta(p, th)
}

func (c *converter) writeFile(p string, data io.Reader, size int64) error {
	f, err := c.w.Create(p)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, data)
	if err == nil && n != size {
		err = fmt.Errorf("short file data: %d of %d bytes", n, size)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (c *converter) mknod(p string, hdr *tar.Header) error {
	var typ uint32
	switch hdr.Typeflag {
	case tar.TypeChar:
		typ = unix.S_IFCHR
	case tar.TypeBlock:
		typ = unix.S_IFBLK
	default:
		typ = unix.S_IFIFO
	}
	// EROFS stores the kernel's 32-bit new_encode_dev() form, which is
	// what the low 32 bits of unix.Mkdev are for 12-bit majors.
	rdev := uint32(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
	return c.w.Mknod(p, uint16(typ|unixPerm(hdr.FileInfo().Mode())), rdev)
}

// setMeta applies owner, mode, time and extended attributes from hdr.
func (c *converter) setMeta(p string, hdr *tar.Header) error {
	if err := c.w.Chown(p, hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	if hdr.Typeflag != tar.TypeSymlink {
		if err := c.w.Chmod(p, hdr.FileInfo().Mode()); err != nil {
			return err
		}
	}
	mt := hdr.ModTime
	if mt.Before(time.Unix(0, 0)) {
		mt = time.Unix(0, 0) // EROFS times are unsigned
	}
	if err := c.w.Chtimes(p, mt, mt); err != nil {
		return err
	}
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, paxXattr)
		if !ok {
			continue
		}
		if !storableXattr(name, v) {
			c.droppedXattrs++
			continue
		}
		if err := c.w.Setxattr(p, name, v); err != nil {
			return err
		}
	}
	return nil
}

// storableXattr reports whether an xattr from a layer is kept. go-erofs
// writes only the user., trusted. and security. short prefixes in a form
// the kernel reads back (POSIX ACLs and other names would be stored with
// no prefix index and ignored), and its on-disk entry holds a one-byte
// name length. trusted.overlay.* is dropped because it would let a layer
// steer overlayfs (redirects, metacopy, fake whiteouts); the opaque
// markers this store needs are generated from .wh..wh..opq instead.
func storableXattr(name, value string) bool {
	if strings.HasPrefix(name, "trusted.overlay.") || len(value) >= 1<<16 { // lengths are 16-bit on disk
		return false
	}
	for _, prefix := range []string{"user.", "trusted.", "security."} {
		if suffix, ok := strings.CutPrefix(name, prefix); ok {
			return suffix != "" && len(suffix) <= 255
		}
	}
	return false
}

// checkNew refuses a path that already exists in this layer (image-spec:
// layers must not repeat paths) or whose parent is not a directory.
func (c *converter) checkNew(p string) error {
	if _, err := c.w.Stat(p); err == nil {
		return fmt.Errorf("duplicate path %s in layer", p)
	}
	for d := path.Dir(p); d != "/"; d = path.Dir(d) {
		fi, err := c.w.Stat(d)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("parent %s is not a directory", d)
		}
		break
	}
	return nil
}

// ensureDir makes sure p exists as a directory, creating it (0755) if the
// layer has not listed it yet.
func (c *converter) ensureDir(p string) error {
	if p == "/" {
		return nil
	}
	if fi, err := c.w.Stat(p); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("opaque marker in %s, which is not a directory", p)
		}
		return nil
	}
	if err := c.checkNew(p); err != nil {
		return err
	}
	return c.w.Mkdir(p, 0o755)
}
