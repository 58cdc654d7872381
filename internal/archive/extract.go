package archive

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
)

// tmpPrefix names the private staging directory created inside dest.
const tmpPrefix = ".baton-extract-"

// Extract validates the archive completely (see Validate) and then extracts
// it into dest, which must be an existing, empty directory (not a symlink)
// that nobody else modifies meanwhile.
//
// Entries are first written to a hidden staging directory created inside
// dest (so it is on the same file system even when dest is a mount point),
// then moved into dest with renames. On error everything written is removed
// and dest is left empty. All writes go through an os.Root, symlinks are
// created only after every file and directory, and no entry is ever written
// below a symlink, so nothing can be written outside dest.
//
// Regular files get mode 0755 if any executable bit is set in the archive and
// 0644 otherwise; directories get 0755. Ownership and timestamps are not
// restored.
func Extract(r io.ReaderAt, size int64, dest string, limits Limits) (Summary, error) {
	limits = limits.forSize(size)
	if err := checkDest(dest); err != nil {
		return Summary{}, err
	}
	p, err := validate(r, size, limits)
	if err != nil {
		return Summary{}, err
	}

	destRoot, err := os.OpenRoot(dest)
	if err != nil {
		return Summary{}, fmt.Errorf("archive: opening destination: %w", err)
	}
	defer destRoot.Close()

	tmpName, err := makeStagingDir(dest, p.tree)
	if err != nil {
		return Summary{}, err
	}
	if err := stage(destRoot, tmpName, p, p.tr, limits); err != nil {
		if rmErr := destRoot.RemoveAll(tmpName); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("archive: cleaning up staging directory: %w", rmErr))
		}
		return Summary{}, err
	}
	if err := publish(destRoot, tmpName); err != nil {
		return Summary{}, err
	}
	return p.summary, nil
}

func checkDest(dest string) error {
	fi, err := os.Lstat(dest)
	if err != nil {
		return fmt.Errorf("archive: checking destination: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("archive: destination %q is not a directory", dest)
	}
	d, err := os.Open(dest)
	if err != nil {
		return fmt.Errorf("archive: checking destination: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(1)
	if err != nil && err != io.EOF {
		return fmt.Errorf("archive: checking destination: %w", err)
	}
	if len(names) > 0 {
		return fmt.Errorf("archive: destination %q is not empty", dest)
	}
	return nil
}

// makeStagingDir creates the staging directory with a name that no
// top-level archive entry uses, so moving entries out of it cannot collide
// with it.
func makeStagingDir(dest string, t *tree) (string, error) {
	for range 10 {
		dir, err := os.MkdirTemp(dest, tmpPrefix)
		if err != nil {
			return "", fmt.Errorf("archive: creating staging directory: %w", err)
		}
		name := path.Base(dir)
		if _, clash := t.kinds[name]; !clash {
			return name, nil
		}
		if err := os.Remove(dir); err != nil {
			return "", fmt.Errorf("archive: removing staging directory: %w", err)
		}
	}
	return "", errors.New("archive: could not pick a staging directory name")
}

// stage writes every entry below tmpName.
func stage(destRoot *os.Root, tmpName string, p *plan, tr *trackingReaderAt, limits Limits) error {
	root, err := destRoot.OpenRoot(tmpName)
	if err != nil {
		return fmt.Errorf("archive: opening staging directory: %w", err)
	}
	defer root.Close()

	var total int64
	for _, e := range p.entries {
		switch e.kind {
		case kindDir:
			if err := root.MkdirAll(e.name, 0o755); err != nil {
				return fmt.Errorf("archive: creating directory %q: %w", e.name, err)
			}
		case kindFile:
			n, err := writeFile(root, e, tr, limits, total)
			if err != nil {
				return err
			}
			total += n
		}
	}
	// Symlinks come last so that no file or directory is ever created
	// through one, even if validation had missed something.
	for _, e := range p.entries {
		if e.kind != kindSymlink {
			continue
		}
		if err := mkParent(root, e.name); err != nil {
			return err
		}
		if err := root.Symlink(e.target, e.name); err != nil {
			return fmt.Errorf("archive: creating symlink %q: %w", e.name, err)
		}
	}
	// MkdirAll is subject to the umask; make directory modes predictable.
	for name, k := range p.tree.kinds {
		if k != kindDir && k != kindImplicitDir {
			continue
		}
		if err := root.Chmod(name, 0o755); err != nil {
			return fmt.Errorf("archive: setting mode of %q: %w", name, err)
		}
	}
	return nil
}

func writeFile(root *os.Root, e *entry, tr *trackingReaderAt, limits Limits, usedTotal int64) (int64, error) {
	if err := mkParent(root, e.name); err != nil {
		return 0, err
	}
	// O_EXCL: validation already refused duplicates, so an existing file
	// means something is wrong; never overwrite.
	f, err := root.OpenFile(e.name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, e.perm)
	if err != nil {
		return 0, fmt.Errorf("archive: creating %q: %w", e.name, err)
	}
	n, err := copyEntry(f, e, tr, limits, usedTotal)
	if err != nil {
		f.Close()
		return 0, err
	}
	// Chmod on the descriptor: the umask may have stripped bits at creation.
	if err := f.Chmod(e.perm); err != nil {
		f.Close()
		return 0, fmt.Errorf("archive: setting mode of %q: %w", e.name, err)
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("archive: writing %q: %w", e.name, err)
	}
	return n, nil
}

func mkParent(root *os.Root, name string) error {
	dir := path.Dir(name)
	if dir == "." {
		return nil
	}
	if err := root.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("archive: creating directory %q: %w", dir, err)
	}
	return nil
}

// publish moves the staged top-level entries into dest and removes the
// staging directory. If a move fails, whatever was moved is removed again so
// dest ends up empty.
func publish(destRoot *os.Root, tmpName string) error {
	d, err := destRoot.Open(tmpName)
	if err != nil {
		return fmt.Errorf("archive: opening staging directory: %w", err)
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return fmt.Errorf("archive: listing staging directory: %w", err)
	}
	var moved []string
	for _, name := range names {
		if err := destRoot.Rename(tmpName+"/"+name, name); err != nil {
			err = fmt.Errorf("archive: moving %q into place: %w", name, err)
			for _, m := range append(moved, tmpName) {
				if rmErr := destRoot.RemoveAll(m); rmErr != nil {
					err = errors.Join(err, fmt.Errorf("archive: cleaning up %q: %w", m, rmErr))
				}
			}
			return err
		}
		moved = append(moved, name)
	}
	if err := destRoot.Remove(tmpName); err != nil {
		return fmt.Errorf("archive: removing staging directory: %w", err)
	}
	return nil
}
