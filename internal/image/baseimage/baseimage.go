// Package baseimage builds Baton's runtime base images from the host's own
// Python and Node installations, so that a server works offline without
// pulling anything.
//
// An image is a single OCI layer: the interpreter, the shared libraries and
// dynamic loader it links (found the way the loader finds them), what the
// interpreter loads at run time (Python's standard library and extension
// modules), a CA bundle, a few generated /etc files and empty mount points
// for the sandbox. Nothing else of the host goes in: no shell, no package
// manager, no site-packages, no home directories. The exception is the
// image of runtime provided (provided.go): it has no interpreter but the
// host's POSIX shell and two tools, for shell-script bootstraps.
//
// The layer is a deterministic tar: the same host gives byte-identical output
// on every build, so its digest can name it.
//
// Files keep their host paths, so the interpreter finds its prefix and the
// loader its libraries as on the host, with one exception: an interpreter
// installed outside /usr and /opt (pyenv, nvm) moves to /usr/local, since
// its host path would put a home directory into every sandbox. Python
// finds its prefix relative to its binary, so the move is transparent;
// libraries that only a relocated RUNPATH or the ld.so cache pointed to get
// a link in the loader's first built-in directory.
package baseimage

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
	"slices"
	"strings"
	"time"

	"github.com/baton-faas/baton/internal/runtimes"
	"github.com/baton-faas/baton/internal/runtimes/node"
	"github.com/baton-faas/baton/internal/runtimes/provided"
	"github.com/baton-faas/baton/internal/runtimes/python"
)

// Runtime names the interpreter a base image is built around.
type Runtime string

// Runtimes Baton ships, by name. Which image a runtime gets is its
// driver's BaseImage recipe (internal/runtimes).
const (
	Python Runtime = python.Name
	Node   Runtime = node.Name
	// Provided is the image of custom runtimes (a bootstrap executable):
	// C library, shell and a few tools; its "interpreter" is the shell.
	Provided Runtime = provided.Name
)

// Runtimes lists every runtime of the registry, each of which has a base
// image.
func Runtimes() []Runtime {
	var out []Runtime
	for _, n := range runtimes.Names() {
		out = append(out, Runtime(n))
	}
	return out
}

// ErrNoInterpreter is returned (wrapped) by Build when the host has no
// interpreter for the runtime, so callers can fall back or skip.
var ErrNoInterpreter = errors.New("baseimage: interpreter not installed")

// Epoch is the modification time of every entry. Any fixed instant makes
// builds reproducible; 2000-01-01 avoids tools that read 0 as "unset".
var Epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// relocTarget is where an interpreter installed outside the system
// hierarchy (pyenv or nvm under a home directory, say) is put in the image:
// the host's layout would leak a home directory into every sandbox.
const relocTarget = "/usr/local"

// Info describes a built image.
type Info struct {
	Runtime     Runtime
	Interpreter string // absolute path of the interpreter binary (provided: the shell) inside the image
	Version     string // interpreter version, e.g. "3.11.7" or "20.20.2"; provided: the shell's name
	Files       int    // regular files in the layer
	Bytes       int64  // size of the tar
	Digest      string // "sha256:<hex>" of the tar, i.e. the layer's diffID
	// Omitted lists host extension modules left out because a library they
	// link is missing on the host (they could not load there either), and
	// tools of the provided image the host does not have.
	Omitted []string
}

// Build writes the base image for rt to w as an uncompressed tar (the
// content of one OCI layer) and describes it.
func Build(ctx context.Context, rt Runtime, w io.Writer) (Info, error) {
	return build(ctx, rt, w, buildOptions{digest: true})
}

// buildOptions adjust build.
type buildOptions struct {
	// pause is called between the build's steps and returns once it may
	// go on (Cache.Hold); nil never pauses.
	pause func() error
	// digest computes Info.Digest; a build read by the store, which
	// hashes the tar itself, leaves it out (hashing is a good part of a
	// build's cost).
	digest bool
}

// build is Build with options.
func build(ctx context.Context, rt Runtime, w io.Writer, o buildOptions) (Info, error) {
	b := newBuilder(ctx)
	b.pause, b.digest = o.pause, o.digest
	info := Info{Runtime: rt}
	var err error
	drv, ok := runtimes.Lookup(string(rt))
	if !ok {
		return Info{}, fmt.Errorf("baseimage: unknown runtime %q", rt)
	}
	switch recipe := drv.BaseImage(); recipe {
	case "python":
		err = b.python(&info)
	case "node":
		err = b.node(&info)
	case "shell":
		err = b.provided(&info)
	default:
		return Info{}, fmt.Errorf("baseimage: runtime %s wants base image recipe %q, which this package does not build", rt, recipe)
	}
	if err != nil {
		return Info{}, err
	}
	if err := b.common(); err != nil {
		return Info{}, err
	}
	if err := b.write(w, &info); err != nil {
		return Info{}, err
	}
	return info, nil
}

type kind uint8

const (
	kindDir kind = iota
	kindFile
	kindSymlink
)

// entry is one path of the image.
type entry struct {
	kind     kind
	mode     fs.FileMode // permission bits only
	implicit bool        // a parent directory nobody asked for
	src      string      // host file holding the content, when data is nil
	size     int64
	data     []byte // generated or rewritten content
	target   string // symlink target
}

func (e *entry) same(o *entry) bool {
	if e.kind != o.kind {
		return false
	}
	switch e.kind {
	case kindFile:
		if e.data != nil || o.data != nil {
			return e.data != nil && o.data != nil && string(e.data) == string(o.data)
		}
		return e.src == o.src
	case kindSymlink:
		return e.target == o.target
	}
	return true
}

// relocation maps a real host directory to its place in the image.
type relocation struct{ host, image string }

// builder collects the image's entries, keyed by absolute clean image path.
type builder struct {
	ctx     context.Context
	pause   func() error // see buildOptions
	digest  bool         // see buildOptions
	entries map[string]*entry
	reloc   []relocation
	ld      *loader // set once the interpreter is known
	// loadPaths maps the host path of each ELF object in the image to the
	// path the image's loader opens it by (which $ORIGIN derives from).
	loadPaths map[string]string
	// opensslDirs are the OPENSSLDIRs compiled into the OpenSSL copies
	// the interpreter links.
	opensslDirs []string
}

// check ends the build with its context, and waits while it is paused.
func (b *builder) check() error {
	if err := b.ctx.Err(); err != nil {
		return err
	}
	if b.pause != nil {
		return b.pause()
	}
	return nil
}

func newBuilder(ctx context.Context) *builder {
	return &builder{
		ctx:       ctx,
		entries:   map[string]*entry{"/": {kind: kindDir, mode: 0o755}},
		loadPaths: map[string]string{},
	}
}

// relocate puts everything under the real host directory dir at target,
// unless dir already sits in the system hierarchy.
func (b *builder) relocate(dir, target string) {
	if dir == "/" || within(dir, "/usr") || within(dir, "/opt") {
		return
	}
	for _, r := range b.reloc {
		if r.host == dir {
			return
		}
	}
	b.reloc = append(b.reloc, relocation{host: dir, image: target})
	// Longest prefix first, so nested relocations map correctly.
	slices.SortFunc(b.reloc, func(x, y relocation) int { return len(y.host) - len(x.host) })
}

// imagePath maps a real host path to its path in the image.
func (b *builder) imagePath(p string) string {
	for _, r := range b.reloc {
		if within(p, r.host) {
			return path.Join(r.image, strings.TrimPrefix(p, r.host))
		}
	}
	return p
}

// add records e at image path p, creating its parent directories.
func (b *builder) add(p string, e *entry) error {
	p = path.Clean(p)
	if !path.IsAbs(p) {
		return fmt.Errorf("baseimage: relative image path %q", p)
	}
	if p != "/" {
		if err := b.addParents(path.Dir(p)); err != nil {
			return err
		}
	}
	if cur, ok := b.entries[p]; ok {
		if cur.kind == kindDir && e.kind == kindDir {
			// An explicit directory carries its real mode; an implicit one
			// only fills a gap.
			if cur.implicit && !e.implicit {
				*cur = *e
			}
			return nil
		}
		if cur.same(e) {
			return nil
		}
		return fmt.Errorf("baseimage: conflicting entries for %s", p)
	}
	b.entries[p] = e
	return nil
}

func (b *builder) addParents(dir string) error {
	if dir == "/" {
		return nil
	}
	if cur, ok := b.entries[dir]; ok {
		if cur.kind != kindDir {
			return fmt.Errorf("baseimage: %s is needed as a directory but is not one", dir)
		}
		return nil
	}
	if err := b.addParents(path.Dir(dir)); err != nil {
		return err
	}
	b.entries[dir] = &entry{kind: kindDir, mode: 0o755, implicit: true}
	return nil
}

func (b *builder) addDir(p string, mode fs.FileMode) error {
	return b.add(p, &entry{kind: kindDir, mode: mode.Perm() | mode&fs.ModeSticky})
}

func (b *builder) addData(p string, mode fs.FileMode, data []byte) error {
	if data == nil {
		data = []byte{}
	}
	return b.add(p, &entry{kind: kindFile, mode: mode, data: data, size: int64(len(data))})
}

func (b *builder) addSymlink(p, target string) error {
	return b.add(p, &entry{kind: kindSymlink, mode: 0o777, target: target})
}

// addHostFile copies the regular host file src (a real path) to its image
// path.
func (b *builder) addHostFile(src string, fi fs.FileInfo) error {
	return b.add(b.imagePath(src), &entry{kind: kindFile, mode: fileMode(fi), src: src, size: fi.Size()})
}

// fileMode keeps permission bits and the sticky bit. Set-id bits are
// dropped: nothing in a sandbox may gain privileges from the image.
func fileMode(fi fs.FileInfo) fs.FileMode {
	return fi.Mode().Perm() | fi.Mode()&fs.ModeSticky
}

// addHostSymlink records the host symlink link (whose parent is a real
// path) with its target, rewritten when relocation would break it.
func (b *builder) addHostSymlink(link, target string) error {
	img := b.imagePath(link)
	abs := target
	if !path.IsAbs(abs) {
		abs = path.Join(path.Dir(link), target)
	}
	switch {
	case path.IsAbs(target):
		target = b.imagePath(path.Clean(target))
	case path.Join(path.Dir(img), target) != b.imagePath(abs):
		target = b.imagePath(abs)
	}
	return b.addSymlink(img, target)
}

// addHost adds the host path p with every symlink met on the way to it, the
// way the kernel walks it, and returns the image path of the file or
// directory it ends at. A directory is added empty.
func (b *builder) addHost(p string) (string, error) {
	real, err := b.follow(p)
	if err != nil {
		return "", err
	}
	fi, err := os.Lstat(real)
	if err != nil {
		return "", err
	}
	switch {
	case fi.IsDir():
		err = b.addDir(b.imagePath(real), fi.Mode())
	case fi.Mode().IsRegular():
		err = b.addHostFile(real, fi)
	default:
		err = fmt.Errorf("baseimage: %s: unsupported file type %v", real, fi.Mode().Type())
	}
	return b.imagePath(real), err
}

// follow resolves p component by component, recording each symlink, and
// returns the real path.
func (b *builder) follow(p string) (string, error) {
	p = path.Clean(p)
	if !path.IsAbs(p) {
		return "", fmt.Errorf("baseimage: relative host path %q", p)
	}
	// Relocated directories are real paths already; starting below them
	// keeps symlinks above them (and so the host's home) out of the image.
	resolved := "/"
	for _, r := range b.reloc {
		if within(p, r.host) {
			resolved = r.host
			break
		}
	}
	rest := splitPath(strings.TrimPrefix(p, resolved))
	for hops := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		if c == ".." {
			resolved = path.Dir(resolved)
			continue
		}
		next := path.Join(resolved, c)
		fi, err := os.Lstat(next)
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			resolved = next
			continue
		}
		if hops++; hops > 40 {
			return "", fmt.Errorf("baseimage: %s: too many levels of symbolic links", p)
		}
		target, err := os.Readlink(next)
		if err != nil {
			return "", err
		}
		if err := b.addHostSymlink(next, target); err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			resolved = "/"
		}
		rest = append(splitPath(target), rest...)
	}
	return resolved, nil
}

// resolve walks image path p through the image's own symlinks and returns
// the real image path and its entry.
func (b *builder) resolve(p string) (string, *entry, bool) {
	cur := "/"
	rest := splitPath(p)
	for hops := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		if c == ".." {
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, c)
		e, ok := b.entries[next]
		if !ok {
			return "", nil, false
		}
		switch e.kind {
		case kindSymlink:
			if hops++; hops > 40 {
				return "", nil, false
			}
			if path.IsAbs(e.target) {
				cur = "/"
			}
			rest = append(splitPath(e.target), rest...)
			continue
		case kindFile:
			if len(rest) > 0 {
				return "", nil, false
			}
		}
		cur = next
	}
	return cur, b.entries[cur], true
}

// write emits the entries as a tar, sorted by path, and fills in the sizes
// and digest of info.
func (b *builder) write(w io.Writer, info *Info) error {
	paths := make([]string, 0, len(b.entries))
	for p := range b.entries {
		if p != "/" {
			paths = append(paths, p)
		}
	}
	// Plain byte order puts every directory before its contents.
	slices.Sort(paths)

	h := sha256.New()
	if b.digest {
		w = io.MultiWriter(w, h)
	}
	cw := &countingWriter{w: w}
	tw := tar.NewWriter(cw)
	for _, p := range paths {
		if err := b.check(); err != nil {
			return err
		}
		e := b.entries[p]
		hdr := &tar.Header{
			Name:    p[1:],
			Mode:    int64(e.mode.Perm()),
			ModTime: Epoch,
			Format:  tar.FormatPAX,
		}
		if e.mode&fs.ModeSticky != 0 {
			hdr.Mode |= 0o1000
		}
		switch e.kind {
		case kindDir:
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
		case kindSymlink:
			hdr.Typeflag = tar.TypeSymlink
			hdr.Linkname = e.target
		case kindFile:
			hdr.Typeflag = tar.TypeReg
			hdr.Size = e.size
			info.Files++
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("baseimage: write %s: %w", p, err)
		}
		if e.kind == kindFile {
			if err := writeContent(tw, e); err != nil {
				return fmt.Errorf("baseimage: write %s: %w", p, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("baseimage: finish tar: %w", err)
	}
	info.Bytes = cw.n
	if b.digest {
		info.Digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	}
	return nil
}

func writeContent(w io.Writer, e *entry) error {
	if e.data != nil {
		_, err := w.Write(e.data)
		return err
	}
	f, err := os.Open(e.src)
	if err != nil {
		return err
	}
	defer f.Close()
	// The header already promised e.size bytes; a file that changed since
	// it was listed would corrupt the layer, so it fails the build.
	n, err := io.Copy(w, io.LimitReader(f, e.size))
	if err != nil {
		return err
	}
	if fi, err := f.Stat(); err != nil || n != e.size || fi.Size() != e.size {
		return fmt.Errorf("%s changed during the build", e.src)
	}
	return nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	if dir == "/" {
		return true
	}
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// splitPath returns the components of p, without empty and "." ones.
func splitPath(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}
