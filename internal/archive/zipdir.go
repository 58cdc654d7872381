package archive

import (
	"archive/zip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// zipEpoch is the earliest time a zip header can represent; using a fixed
// time makes ZipDir's output depend only on the tree's content.
var zipEpoch = time.Date(1980, time.January, 1, 0, 0, 0, 0, time.UTC)

// ZipDir writes a zip archive of the tree below dir to w. The output is
// deterministic: entries are sorted, timestamps are fixed and only the
// executable bit of file modes is kept. Relative symlinks that stay inside
// dir are stored as symlinks; any other symlink, a special file (device,
// fifo, socket) or a name that Extract would refuse is an error, so that
// whatever ZipDir produces also extracts.
func ZipDir(dir string, w io.Writer) error {
	base, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return fmt.Errorf("archive: resolving %q: %w", dir, err)
	}
	fi, err := os.Stat(base)
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("archive: %q is not a directory", dir)
	}

	entries, err := collect(base)
	if err != nil {
		return err
	}

	root, err := os.OpenRoot(base)
	if err != nil {
		return fmt.Errorf("archive: opening %q: %w", dir, err)
	}
	defer root.Close()

	zw := zip.NewWriter(w)
	for _, e := range entries {
		if err := writeZipEntry(zw, root, e); err != nil {
			return err
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("archive: finishing zip: %w", err)
	}
	return nil
}

// collect walks base in lexical order and checks every entry with the same
// rules Extract applies.
func collect(base string) ([]*entry, error) {
	var entries []*entry
	t := newTree()
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("archive: walking: %w", err)
		}
		if p == base {
			return nil
		}
		rel, err := filepath.Rel(base, p)
		if err != nil {
			return fmt.Errorf("archive: %w", err)
		}
		raw := filepath.ToSlash(rel)
		name, _, reason := cleanName(raw)
		if reason != "" {
			return refuse(raw, reason)
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("archive: %q: %w", raw, err)
		}
		e := &entry{raw: raw, name: name}
		mode := info.Mode()
		switch {
		case mode.IsDir():
			e.kind, e.perm = kindDir, 0o755
		case mode.IsRegular():
			e.kind, e.perm = kindFile, 0o644
			if mode&0o111 != 0 {
				e.perm = 0o755
			}
		case mode&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("archive: reading symlink %q: %w", raw, err)
			}
			if reason := checkSymlinkTarget(target); reason != "" {
				return refuse(raw, reason)
			}
			e.kind, e.target = kindSymlink, target
		default:
			return refuse(raw, fmt.Sprintf("special file (%s) cannot be archived", mode.Type()))
		}
		if reason := t.add(name, e.kind); reason != "" {
			return refuse(raw, reason)
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := t.checkSymlinks(entries); err != nil {
		if ae, ok := errors.AsType[*Error](err); ok {
			return nil, refuse(ae.Entry, ae.Reason)
		}
		return nil, err
	}
	return entries, nil
}

// refuse builds ZipDir's errors; they concern the caller's directory, not
// an uploaded archive, so they deliberately do not match ErrInvalid.
func refuse(name, reason string) error {
	return fmt.Errorf("archive: cannot zip %q: %s", name, reason)
}

func writeZipEntry(zw *zip.Writer, root *os.Root, e *entry) error {
	hdr := &zip.FileHeader{Name: e.name, Modified: zipEpoch, Method: zip.Store}
	switch e.kind {
	case kindDir:
		hdr.Name += "/"
		hdr.SetMode(fs.ModeDir | e.perm)
	case kindSymlink:
		hdr.SetMode(fs.ModeSymlink | 0o777)
	case kindFile:
		hdr.SetMode(e.perm)
		hdr.Method = zip.Deflate
	}
	fw, err := zw.CreateHeader(hdr)
	if err != nil {
		return fmt.Errorf("archive: adding %q: %w", e.name, err)
	}
	switch e.kind {
	case kindSymlink:
		if _, err := io.WriteString(fw, e.target); err != nil {
			return fmt.Errorf("archive: adding %q: %w", e.name, err)
		}
	case kindFile:
		if err := copyFileInto(fw, root, e.name); err != nil {
			return err
		}
	}
	return nil
}

func copyFileInto(w io.Writer, root *os.Root, name string) error {
	// Through the Root so a file swapped for a symlink after the walk cannot
	// pull in content from outside the directory.
	f, err := root.Open(filepath.FromSlash(name))
	if err != nil {
		return fmt.Errorf("archive: opening %q: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("archive: %q: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return refuse(name, "changed into a non-regular file while zipping")
	}
	if _, err := io.Copy(w, f); err != nil {
		return fmt.Errorf("archive: compressing %q: %w", name, err)
	}
	return nil
}
