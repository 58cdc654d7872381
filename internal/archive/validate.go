package archive

import (
	"archive/zip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"path/filepath"
	"strings"
)

const (
	// maxSymlinkTarget matches PATH_MAX; longer targets are useless anyway.
	maxSymlinkTarget = 4096
	// maxNameBytes and maxComponentBytes match common Linux limits, so that
	// an archive that validates cannot fail later with ENAMETOOLONG.
	maxNameBytes      = 4096
	maxComponentBytes = 255
	// maxSymlinkHops matches Linux's MAXSYMLINKS.
	maxSymlinkHops = 40
)

type kind uint8

const (
	kindImplicitDir kind = iota + 1 // only exists as a parent of another entry
	kindDir
	kindFile
	kindSymlink
)

// entry is one validated archive member.
type entry struct {
	f      *zip.File // nil when built by ZipDir
	raw    string    // name as stored, for error messages
	name   string    // cleaned, slash-separated, relative, never "."
	kind   kind
	perm   fs.FileMode // 0644 or 0755 for files, 0755 for directories
	target string      // symlink target, filled in by the content pass
}

// plan is the outcome of validation and the input to extraction.
type plan struct {
	entries []*entry
	tree    *tree
	summary Summary
	// tr is the reader the zip.Files read through; extraction reuses it so
	// that I/O errors in its second pass are classified correctly.
	tr *trackingReaderAt
}

// Validate checks that the zip archive in r is safe to extract under limits
// without writing anything. It decompresses every entry to measure real sizes
// and verify checksums, because headers can lie.
func Validate(r io.ReaderAt, size int64, limits Limits) (Summary, error) {
	p, err := validate(r, size, limits)
	if err != nil {
		return Summary{}, err
	}
	return p.summary, nil
}

func validate(r io.ReaderAt, size int64, limits Limits) (*plan, error) {
	limits = limits.forSize(size)
	tr := &trackingReaderAt{r: r}
	zr, err := zip.NewReader(tr, size)
	// ErrInsecurePath (only with GODEBUG=zipinsecurepath=0) still returns a
	// usable reader; our own path checks are stricter.
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		if tr.err != nil {
			return nil, fmt.Errorf("archive: reading zip directory: %w", tr.err)
		}
		return nil, &Error{Reason: "not a valid zip archive", Err: err}
	}
	p, err := checkMetadata(zr, limits)
	if err != nil {
		return nil, err
	}
	p.tr = tr
	if err := checkContents(p, tr, limits); err != nil {
		return nil, err
	}
	if err := p.tree.checkSymlinks(p.entries); err != nil {
		return nil, err
	}
	return p, nil
}

// checkMetadata applies every check that needs only the central directory,
// so hostile archives are rejected before any decompression.
func checkMetadata(zr *zip.Reader, limits Limits) (*plan, error) {
	if n := len(zr.File); n > limits.MaxFiles {
		return nil, tooLarge("", "archive has %d entries, over the limit of %d", n, limits.MaxFiles)
	}
	p := &plan{tree: newTree()}
	var declared uint64
	for _, f := range zr.File {
		name, isDir, reason := cleanName(f.Name)
		if reason != "" {
			return nil, invalid(f.Name, "%s", reason)
		}
		if f.Flags&0x1 != 0 {
			return nil, invalid(f.Name, "encrypted entries are not supported")
		}
		e := &entry{f: f, raw: f.Name, name: name}
		mode := f.Mode()
		switch {
		case mode&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSocket|fs.ModeIrregular) != 0:
			return nil, invalid(f.Name, "special files (devices, fifos, sockets) are not allowed")
		case mode&fs.ModeSymlink != 0:
			if isDir {
				return nil, invalid(f.Name, "symlink entry has a directory name")
			}
			e.kind = kindSymlink
		case mode.IsDir() || isDir:
			e.kind = kindDir
			e.perm = 0o755
		default:
			e.kind = kindFile
			e.perm = 0o644
			if mode&0o111 != 0 {
				e.perm = 0o755
			}
		}
		if e.kind != kindDir && f.Method != zip.Store && f.Method != zip.Deflate {
			return nil, invalid(f.Name, "unsupported compression method %d (only store and deflate are supported)", f.Method)
		}
		if name == "." {
			if e.kind != kindDir {
				return nil, invalid(f.Name, "entry has no file name")
			}
			continue // the root itself; nothing to create
		}
		if e.kind == kindFile {
			if f.UncompressedSize64 > uint64(limits.MaxFileBytes) {
				return nil, tooLarge(f.Name, "file is %d bytes, over the per-file limit of %s", f.UncompressedSize64, FormatBytes(limits.MaxFileBytes))
			}
			declared += f.UncompressedSize64
			if declared > uint64(limits.MaxTotalBytes) {
				return nil, limits.totalExceeded(f.Name)
			}
		}
		if reason := p.tree.add(name, e.kind); reason != "" {
			return nil, invalid(f.Name, "%s", reason)
		}
		p.entries = append(p.entries, e)
	}
	return p, nil
}

// checkContents decompresses every file and symlink, measuring the real
// sizes and letting archive/zip verify CRCs and declared lengths.
func checkContents(p *plan, tr *trackingReaderAt, limits Limits) error {
	var total int64
	for _, e := range p.entries {
		switch e.kind {
		case kindFile:
			n, err := copyEntry(io.Discard, e, tr, limits, total)
			if err != nil {
				return err
			}
			total += n
			p.summary.Files++
		case kindSymlink:
			target, err := readSymlinkTarget(e, tr)
			if err != nil {
				return err
			}
			total += int64(len(target))
			if total > limits.MaxTotalBytes {
				return limits.totalExceeded(e.raw)
			}
			if reason := checkSymlinkTarget(target); reason != "" {
				return invalid(e.raw, "%s", reason)
			}
			e.target = target
			p.summary.Files++
		}
	}
	p.summary.TotalBytes = total
	return nil
}

// copyEntry decompresses e into w, enforcing the per-file limit and what is
// left of the total limit on the bytes actually produced.
func copyEntry(w io.Writer, e *entry, tr *trackingReaderAt, limits Limits, usedTotal int64) (int64, error) {
	rc, err := e.f.Open()
	if err != nil {
		return 0, contentError(e, tr, err)
	}
	defer rc.Close()

	allowed := min(limits.MaxFileBytes, limits.MaxTotalBytes-usedTotal)
	lr := &io.LimitedReader{R: rc, N: allowed + 1}
	buf := make([]byte, 32<<10)
	var n int64
	for {
		m, rerr := lr.Read(buf)
		if m > 0 {
			n += int64(m)
			if n > allowed {
				if n > limits.MaxFileBytes {
					return 0, tooLarge(e.raw, "file decompresses to more than the per-file limit of %s", FormatBytes(limits.MaxFileBytes))
				}
				return 0, limits.totalExceeded(e.raw)
			}
			if _, werr := w.Write(buf[:m]); werr != nil {
				return 0, fmt.Errorf("archive: writing %q: %w", e.name, werr)
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return 0, contentError(e, tr, rerr)
		}
	}
}

func readSymlinkTarget(e *entry, tr *trackingReaderAt) (string, error) {
	rc, err := e.f.Open()
	if err != nil {
		return "", contentError(e, tr, err)
	}
	defer rc.Close()
	// Reading to EOF (anything shorter than the limit) makes archive/zip
	// verify the checksum and declared size.
	b, err := io.ReadAll(io.LimitReader(rc, maxSymlinkTarget+1))
	if err != nil {
		return "", contentError(e, tr, err)
	}
	if len(b) > maxSymlinkTarget {
		return "", invalid(e.raw, "symlink target is longer than %d bytes", maxSymlinkTarget)
	}
	return string(b), nil
}

// contentError classifies a failure while decompressing: I/O errors from the
// caller's reader are not the archive's fault, everything else is.
func contentError(e *entry, tr *trackingReaderAt, err error) error {
	if tr.err != nil {
		return fmt.Errorf("archive: reading entry %q: %w", e.raw, tr.err)
	}
	switch {
	case errors.Is(err, zip.ErrChecksum):
		return &Error{Entry: e.raw, Reason: "checksum mismatch (corrupt archive)", Err: err}
	case errors.Is(err, zip.ErrAlgorithm):
		return &Error{Entry: e.raw, Reason: "unsupported compression method", Err: err}
	case errors.Is(err, zip.ErrFormat), errors.Is(err, io.ErrUnexpectedEOF):
		return &Error{Entry: e.raw, Reason: "entry data is corrupt or does not match the size declared in its header", Err: err}
	default:
		return &Error{Entry: e.raw, Reason: "cannot decompress entry: " + err.Error(), Err: err}
	}
}

// cleanName validates a raw entry name and returns its cleaned form. A
// non-empty reason means the name is refused.
func cleanName(raw string) (name string, isDir bool, reason string) {
	switch {
	case raw == "":
		return "", false, "entry has an empty name"
	case len(raw) > maxNameBytes:
		return "", false, fmt.Sprintf("name is longer than %d bytes", maxNameBytes)
	case strings.ContainsRune(raw, 0):
		return "", false, "name contains a NUL byte"
	case strings.Contains(raw, `\`):
		// Backslashes are not separators in zip, but tools on Windows may
		// write them and extractors there may honour them; refuse rather
		// than guess.
		return "", false, `name contains a backslash (zip paths must use "/")`
	case strings.HasPrefix(raw, "/"):
		return "", false, "absolute paths are not allowed"
	}
	name = path.Clean(raw)
	if !filepath.IsLocal(name) {
		return "", false, "path escapes the code root"
	}
	for c := range strings.SplitSeq(raw, "/") {
		if c == ".." {
			return "", false, `path contains a ".." component`
		}
		if len(c) > maxComponentBytes {
			return "", false, fmt.Sprintf("path component is longer than %d bytes", maxComponentBytes)
		}
	}
	return name, strings.HasSuffix(raw, "/"), ""
}

// checkSymlinkTarget applies the checks that need only the target itself;
// whether a relative target escapes is decided by tree.checkSymlinks.
func checkSymlinkTarget(target string) string {
	switch {
	case target == "":
		return "symlink has an empty target"
	case strings.ContainsRune(target, 0):
		return "symlink target contains a NUL byte"
	case strings.HasPrefix(target, "/"):
		return fmt.Sprintf("symlink target %q is absolute", target)
	}
	return ""
}

// tree records what each path in the archive is, including directories
// that exist only implicitly as parents.
type tree struct {
	kinds   map[string]kind
	targets map[string]string
}

func newTree() *tree {
	return &tree{kinds: make(map[string]kind), targets: make(map[string]string)}
}

// add records name as kind k. It refuses duplicates, entries below files or
// symlinks, and files or symlinks that clash with a directory, in either
// order of appearance.
func (t *tree) add(name string, k kind) string {
	for i := 0; i < len(name); i++ {
		if name[i] != '/' {
			continue
		}
		parent := name[:i]
		switch t.kinds[parent] {
		case 0:
			t.kinds[parent] = kindImplicitDir
		case kindFile:
			return fmt.Sprintf("parent %q is a file", parent)
		case kindSymlink:
			return fmt.Sprintf("parent %q is a symlink; entries are never written through symlinks", parent)
		}
	}
	switch t.kinds[name] {
	case 0:
	case kindImplicitDir:
		if k != kindDir {
			return "entry clashes with a directory of the same name"
		}
	default:
		return "duplicate entry"
	}
	t.kinds[name] = k
	return ""
}

// checkSymlinks resolves every symlink target the way the kernel would,
// following other symlinks in the archive, and refuses any that leave the
// root at any step. A purely lexical check is not enough: with "a -> ." the
// target "a/.." is lexically "." but really resolves to the root's parent.
func (t *tree) checkSymlinks(entries []*entry) error {
	for _, e := range entries {
		if e.kind == kindSymlink {
			t.targets[e.name] = e.target
		}
	}
	for _, e := range entries {
		if e.kind != kindSymlink {
			continue
		}
		if reason := t.resolve(e.name); reason != "" {
			return invalid(e.raw, "%s", reason)
		}
	}
	return nil
}

// resolve reports why the symlink at name escapes the root, or "" if it
// stays inside. Names that are not in the archive are treated as plain
// names: after extraction into an empty directory they do not exist.
func (t *tree) resolve(name string) string {
	target := t.targets[name]
	var cur []string // resolved directory, as components below the root
	if dir := path.Dir(name); dir != "." {
		cur = strings.Split(dir, "/")
	}
	todo := splitComponents(target)
	hops := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				return fmt.Sprintf("symlink target %q escapes the code root", target)
			}
			cur = cur[:len(cur)-1]
			continue
		}
		next := c
		if len(cur) > 0 {
			next = strings.Join(cur, "/") + "/" + c
		}
		if t.kinds[next] != kindSymlink {
			cur = append(cur, c)
			continue
		}
		hops++
		if hops > maxSymlinkHops {
			return fmt.Sprintf("symlink target %q leads into a symlink loop", target)
		}
		sub := t.targets[next]
		if strings.HasPrefix(sub, "/") {
			return fmt.Sprintf("symlink target %q resolves through absolute symlink %q", target, next)
		}
		// A relative target is interpreted in the link's directory, which
		// is cur; its components replace the link's own.
		todo = append(splitComponents(sub), todo...)
	}
	return ""
}

func splitComponents(p string) []string {
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// trackingReaderAt remembers I/O errors from the caller's reader so they can
// be told apart from malformed archive data.
type trackingReaderAt struct {
	r   io.ReaderAt
	err error
}

func (t *trackingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := t.r.ReadAt(p, off)
	if err != nil && err != io.EOF && t.err == nil {
		t.err = err
	}
	return n, err
}
