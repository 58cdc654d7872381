package baseimage

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/baton-faas/baton/internal/runtimes"
)

// pythonQuery runs in isolated mode without site (-I -S), so sys.path holds
// exactly what the interpreter itself needs: the stdlib, its zip and
// lib-dynload, and no site-packages.
const pythonQuery = `import json, sys, sysconfig
print(json.dumps({
    "prefix": sys.prefix,
    "exec_prefix": sys.exec_prefix,
    "path": sys.path,
    "stdlib": sysconfig.get_path("stdlib"),
    "platstdlib": sysconfig.get_path("platstdlib"),
    "purelib": sysconfig.get_path("purelib"),
    "platlib": sysconfig.get_path("platlib"),
    "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX") or "",
    "cache_tag": sys.implementation.cache_tag or "",
    "version": "%d.%d.%d" % sys.version_info[:3],
}))`

type pythonFacts struct {
	Prefix     string   `json:"prefix"`
	ExecPrefix string   `json:"exec_prefix"`
	Path       []string `json:"path"`
	Stdlib     string   `json:"stdlib"`
	Platstdlib string   `json:"platstdlib"`
	Purelib    string   `json:"purelib"`
	Platlib    string   `json:"platlib"`
	ExtSuffix  string   `json:"ext_suffix"`
	CacheTag   string   `json:"cache_tag"`
	Version    string   `json:"version"`
}

// Standard library parts a function never needs: the test suite, IDLE, Tk
// and its demos, and pip's bootstrap wheels. config-* holds the static
// libpython and Makefile for building extensions.
var pythonSkipTop = map[string]bool{
	"test": true, "idlelib": true, "tkinter": true, "turtledemo": true,
	"ensurepip": true, "__phello__": true, "turtle.py": true,
}

// Test packages nested anywhere (lib2to3/tests, ctypes/test, ...).
var pythonSkipAnywhere = map[string]bool{"test": true, "tests": true, "idle_test": true}

// skipExtension reports extension modules that only serve the test suite,
// or Tk (whose libraries would pull in X11).
func skipExtension(file string) bool {
	mod, _, _ := strings.Cut(file, ".")
	return mod == "_tkinter" || strings.HasPrefix(mod, "_test") || mod == "_ctypes_test" ||
		mod == "_xxtestfuzz" || strings.HasPrefix(mod, "xxlimited") || mod == "xxsubtype"
}

func (b *builder) python(info *Info) error {
	if err := b.check(); err != nil { // before running the interpreter
		return err
	}
	exe := runtimes.Python()
	if exe == "" {
		return fmt.Errorf("%w: no python3 on PATH", ErrNoInterpreter)
	}
	real, err := filepath.EvalSymlinks(exe)
	if err != nil {
		return fmt.Errorf("baseimage: python3: %w", err)
	}
	cmd := exec.CommandContext(b.ctx, real, "-I", "-S", "-c", pythonQuery)
	cmd.Env = []string{} // nothing of the caller's environment may steer it
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("baseimage: ask %s about itself: %w", real, err)
	}
	var f pythonFacts
	if err := json.Unmarshal(out, &f); err != nil {
		return fmt.Errorf("baseimage: %s: bad self-description: %w", real, err)
	}
	if f.CacheTag == "" || f.Stdlib == "" {
		return fmt.Errorf("baseimage: %s: no stdlib or cache tag reported", real)
	}
	info.Version = f.Version

	realOf := func(p string) string {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return r
		}
		return p
	}
	// The interpreter finds its prefix by searching upwards from its own
	// binary, so moving prefix and binary together keeps it working; a
	// binary living outside its prefix could not find a moved one.
	if prefix := realOf(f.Prefix); within(real, prefix) {
		b.relocate(prefix, relocTarget)
		b.relocate(realOf(f.ExecPrefix), relocTarget)
	}

	img, err := b.executable(real)
	if err != nil {
		return err
	}
	info.Interpreter = img
	if img != "/usr/bin/python3" {
		if err := b.addSymlink("/usr/bin/python3", relTarget("/usr/bin/python3", img)); err != nil {
			return err
		}
	}

	w := &pyWalker{b: b, tag: f.CacheTag}
	for _, p := range []string{f.Purelib, f.Platlib} {
		if p != "" {
			w.sitePkgs = append(w.sitePkgs, realOf(p))
		}
	}
	// Roots: the stdlib plus whatever else the bare interpreter puts on
	// sys.path (lib-dynload, the stdlib zip), minus roots nested in others.
	var roots []string
	for _, p := range append([]string{f.Stdlib, f.Platstdlib}, f.Path...) {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			continue // python311.zip is listed even when absent
		}
		roots = append(roots, realOf(p))
	}
	slices.Sort(roots)
	roots = slices.Compact(roots)
	var top []string
	for _, r := range roots {
		if len(top) == 0 || !within(r, top[len(top)-1]) {
			top = append(top, r)
		}
	}
	w.roots = top
	for _, r := range top {
		if err := w.walk(r); err != nil {
			return err
		}
	}
	slices.Sort(w.extensions)
	for _, ext := range w.extensions {
		ok, err := b.extension(ext)
		if err != nil {
			return err
		}
		if !ok {
			info.Omitted = append(info.Omitted, path.Base(ext))
		}
	}
	return nil
}

// relTarget returns a relative symlink target when link and target share a
// directory, which reads better and survives the image being moved.
func relTarget(link, target string) string {
	if path.Dir(link) == path.Dir(target) {
		return path.Base(target)
	}
	return target
}

type pyWalker struct {
	b          *builder
	tag        string // sys.implementation.cache_tag, e.g. "cpython-311"
	roots      []string
	sitePkgs   []string
	extensions []string
}

// skip reports whether the path rel (relative to a stdlib root) is left out.
func (w *pyWalker) skip(rel string) bool {
	parts := strings.Split(rel, "/")
	if pythonSkipTop[parts[0]] || strings.HasPrefix(parts[0], "config-") {
		return true
	}
	for _, p := range parts[:len(parts)-1] {
		if pythonSkipAnywhere[p] {
			return true
		}
	}
	last := parts[len(parts)-1]
	return pythonSkipAnywhere[last] || (strings.HasSuffix(last, ".so") && skipExtension(last))
}

func (w *pyWalker) walk(root string) error {
	fi, err := os.Stat(root)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		// A stdlib zip: one file.
		return w.b.addHostFile(root, fi)
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := w.b.check(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if rel != "." && w.skip(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := w.b.addDir(w.b.imagePath(p), fi.Mode()); err != nil {
				return err
			}
			if slices.Contains(w.sitePkgs, p) {
				// Third-party packages are the function's business: it
				// brings them in its own code layer.
				return filepath.SkipDir
			}
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			return w.symlink(p)
		case !fi.Mode().IsRegular():
			return nil
		case path.Base(path.Dir(p)) == "__pycache__":
			return w.pyc(root, p, fi)
		case strings.HasSuffix(p, ".so"):
			// Added with its libraries, or not at all.
			w.extensions = append(w.extensions, p)
			return nil
		}
		return w.b.addHostFile(p, fi)
	})
}

// symlink keeps a link inside the stdlib when its target can come along:
// a file anywhere (Debian links sitecustomize.py into /etc), or a directory
// that is walked anyway. Dangling links are dropped.
func (w *pyWalker) symlink(p string) error {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return nil
	}
	fi, err := os.Stat(real)
	if err != nil {
		return nil
	}
	if fi.IsDir() {
		inside := false
		for _, r := range w.roots {
			inside = inside || within(real, r)
		}
		if !inside {
			return nil
		}
	} else if !fi.Mode().IsRegular() {
		return nil
	}
	target, err := os.Readlink(p)
	if err != nil {
		return err
	}
	if err := w.b.addHostSymlink(p, target); err != nil {
		return err
	}
	if fi.IsDir() {
		return nil
	}
	_, err = w.b.addHost(real)
	return err
}

// pyc keeps the bytecode the interpreter will actually use: the
// unoptimised level, for a source that is in the image, and fresh.
//
// A timestamp-based pyc records its source's mtime, and the image gives
// every file Epoch as mtime; left alone, every pyc would be stale inside the
// image and each cold start would recompile the stdlib (and fail to write
// the result to the read-only root). So the recorded mtime is rewritten to
// Epoch, but only for pycs that match their source on the host.
func (w *pyWalker) pyc(root, p string, fi fs.FileInfo) error {
	name := path.Base(p)
	mod, ok := strings.CutSuffix(name, "."+w.tag+".pyc")
	if !ok || strings.Contains(mod, ".") {
		return nil // optimised (opt-1, opt-2) or another interpreter's
	}
	src := path.Join(path.Dir(path.Dir(p)), mod+".py")
	rel, _ := filepath.Rel(root, src)
	if w.skip(filepath.ToSlash(rel)) {
		return nil
	}
	sfi, err := os.Stat(src)
	if err != nil || !sfi.Mode().IsRegular() {
		return nil
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if len(data) < 16 {
		return nil
	}
	// PEP 552 header: magic, flags, then mtime and size for flags == 0.
	flags := binary.LittleEndian.Uint32(data[4:8])
	if flags == 0 {
		mtime := binary.LittleEndian.Uint32(data[8:12])
		size := binary.LittleEndian.Uint32(data[12:16])
		if mtime != uint32(sfi.ModTime().Unix()) || size != uint32(sfi.Size()) {
			return nil // stale on the host already
		}
		data = bytes.Clone(data)
		binary.LittleEndian.PutUint32(data[8:12], uint32(Epoch.Unix()))
	}
	return w.b.addData(w.b.imagePath(p), fileMode(fi), data)
}

// extension adds one extension module with the libraries it links, or
// nothing (ok false) when one of them is missing on the host.
func (b *builder) extension(p string) (ok bool, err error) {
	links, err := b.ld.closure(b.ctx, p, nil)
	if err != nil {
		if ctxErr := b.ctx.Err(); ctxErr != nil {
			return false, ctxErr
		}
		return false, nil
	}
	fi, err := os.Stat(p)
	if err != nil {
		return false, err
	}
	if err := b.addHostFile(p, fi); err != nil {
		return false, err
	}
	b.loadPaths[p] = b.imagePath(p)
	return true, b.placeLibs(links, b.loadPaths)
}
