package baseimage

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"strings"
)

// object is what the dynamic loader reads from one ELF file.
type object struct {
	class   elf.Class
	machine elf.Machine
	interp  string   // PT_INTERP: the loader an executable asks for
	needed  []string // DT_NEEDED
	rpath   []string // DT_RPATH, used only when there is no DT_RUNPATH
	runpath []string // DT_RUNPATH
}

func readObject(p string) (*object, error) {
	f, err := elf.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	o := &object{class: f.Class, machine: f.Machine}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			data, err := io.ReadAll(prog.Open())
			if err != nil {
				return nil, fmt.Errorf("%s: read PT_INTERP: %w", p, err)
			}
			o.interp = string(bytes.TrimRight(data, "\x00"))
		}
	}
	if o.needed, err = f.DynString(elf.DT_NEEDED); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	rpath, err := f.DynString(elf.DT_RPATH)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	runpath, err := f.DynString(elf.DT_RUNPATH)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	o.rpath = splitSearchPath(rpath)
	o.runpath = splitSearchPath(runpath)
	return o, nil
}

func splitSearchPath(values []string) []string {
	var out []string
	for _, v := range values {
		for _, d := range strings.Split(v, ":") {
			if d != "" {
				out = append(out, d)
			}
		}
	}
	return out
}

// loader finds shared libraries the way the host's glibc loader does:
// DT_RPATH (when there is no DT_RUNPATH) of the object and of the
// executable, DT_RUNPATH of the object, the ld.so cache, then the loader's
// built-in directories. LD_LIBRARY_PATH is ignored on purpose: instances
// start with a clean environment.
//
// /etc/ld.so.cache is a binary format that changed across glibc versions,
// so its content is read from `ldconfig -p` instead. The image itself gets
// no cache: every library is placed where the image's loader finds it
// without one.
type loader struct {
	exePath string  // real host path of the executable
	exe     *object // the executable; its class and machine filter candidates
	system  []string
	cache   map[string][]string
	objs    map[string]*object
}

// newLoader prepares library lookup for the executable at exePath (a real
// path).
func newLoader(ctx context.Context, exePath string) (*loader, error) {
	exe, err := readObject(exePath)
	if err != nil {
		return nil, fmt.Errorf("baseimage: %w", err)
	}
	l := &loader{exePath: exePath, exe: exe, objs: map[string]*object{exePath: exe}}
	l.system = systemDirs(ctx, exe)
	l.cache = ldconfigCache(ctx)
	return l, nil
}

// systemDirs asks the loader for its built-in search path (glibc 2.33 and
// later print it with --help) and falls back to the usual directories.
func systemDirs(ctx context.Context, exe *object) []string {
	if exe.interp != "" {
		out, err := exec.CommandContext(ctx, exe.interp, "--help").Output()
		if err == nil {
			var dirs []string
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				line := strings.TrimSpace(sc.Text())
				if d, ok := strings.CutSuffix(line, " (system search path)"); ok && path.IsAbs(d) {
					dirs = append(dirs, path.Clean(d))
				}
			}
			if len(dirs) > 0 {
				return dirs
			}
		}
	}
	if exe.class == elf.ELFCLASS64 {
		return []string{"/lib64", "/usr/lib64", "/lib", "/usr/lib"}
	}
	return []string{"/lib", "/usr/lib"}
}

// ldconfigCache reads the ld.so cache through `ldconfig -p`, whose lines
// look like "\tlibc.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libc.so.6".
// Without ldconfig the cache is simply not used.
func ldconfigCache(ctx context.Context) map[string][]string {
	cache := map[string][]string{}
	bin, err := exec.LookPath("ldconfig")
	if err != nil {
		// sbin is often missing from PATH for ordinary users.
		for _, c := range []string{"/sbin/ldconfig", "/usr/sbin/ldconfig"} {
			if _, err := os.Stat(c); err == nil {
				bin = c
				break
			}
		}
	}
	if bin == "" {
		return cache
	}
	out, err := exec.CommandContext(ctx, bin, "-p").Output()
	if err != nil {
		return cache
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		left, target, ok := strings.Cut(line, " => ")
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(left, " ")
		// glibc-hwcaps copies are tuned to this CPU; the plain copy
		// works on any host the image may move to.
		if path.IsAbs(target) && !strings.Contains(target, "/glibc-hwcaps/") {
			cache[name] = append(cache[name], target)
		}
	}
	return cache
}

// object reads (once) the ELF file at p.
func (l *loader) object(p string) (*object, error) {
	if o, ok := l.objs[p]; ok {
		return o, nil
	}
	o, err := readObject(p)
	if err != nil {
		return nil, err
	}
	l.objs[p] = o
	return o, nil
}

// link is one DT_NEEDED entry resolved on the host.
type link struct {
	from string // host path of the object that needs it, as it was opened
	name string // the DT_NEEDED entry (or a library glibc opens itself)
	path string // host path the host's loader opens
}

// errMissing marks a library the host does not have.
var errMissing = errors.New("not found")

// closure resolves, breadth first, every library root needs, plus the
// optional ones (looked up in root's context; missing ones are skipped).
// Links come out so that an object always precedes what it needs.
func (l *loader) closure(ctx context.Context, root string, optional []string) ([]link, error) {
	type item struct {
		from, name string
		optional   bool
	}
	rootObj, err := l.object(root)
	if err != nil {
		return nil, err
	}
	var queue []item
	for _, n := range rootObj.needed {
		queue = append(queue, item{from: root, name: n})
	}
	for _, n := range optional {
		queue = append(queue, item{from: root, name: n, optional: true})
	}
	seen := map[string]bool{root: true}
	var links []link
	for len(queue) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		it := queue[0]
		queue = queue[1:]
		p, err := l.find(it.from, it.name)
		if errors.Is(err, errMissing) && it.optional {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s needs %s: %w", it.from, it.name, err)
		}
		links = append(links, link{from: it.from, name: it.name, path: p})
		if seen[p] {
			continue
		}
		seen[p] = true
		o, err := l.object(p)
		if err != nil {
			return nil, err
		}
		for _, n := range o.needed {
			queue = append(queue, item{from: p, name: n})
		}
	}
	return links, nil
}

// searchDirs lists, in the loader's order, the directories searched for a
// library needed by the object opened at from; with cache, the ld.so cache
// entries for name come before the built-in directories.
func (l *loader) searchDirs(from string, o *object, exeDir string) []string {
	var dirs []string
	if len(o.runpath) == 0 {
		dirs = append(dirs, expandOrigin(o.rpath, path.Dir(from))...)
		if o != l.exe && len(l.exe.runpath) == 0 {
			dirs = append(dirs, expandOrigin(l.exe.rpath, exeDir)...)
		}
	}
	return append(dirs, expandOrigin(o.runpath, path.Dir(from))...)
}

// expandOrigin substitutes $ORIGIN. Entries using $LIB or $PLATFORM depend
// on the loader's build and are skipped.
func expandOrigin(dirs []string, origin string) []string {
	var out []string
	for _, d := range dirs {
		d = strings.ReplaceAll(d, "${ORIGIN}", origin)
		d = strings.ReplaceAll(d, "$ORIGIN", origin)
		if strings.Contains(d, "$") || !path.IsAbs(d) {
			continue
		}
		out = append(out, path.Clean(d))
	}
	return out
}

// find returns the host path the loader opens for name needed by from.
func (l *loader) find(from, name string) (string, error) {
	if strings.Contains(name, "/") {
		if l.usable(name) {
			return name, nil
		}
		return "", errMissing
	}
	o, err := l.object(from)
	if err != nil {
		return "", err
	}
	var candidates []string
	for _, d := range l.searchDirs(from, o, path.Dir(l.exePath)) {
		candidates = append(candidates, path.Join(d, name))
	}
	candidates = append(candidates, l.cache[name]...)
	for _, d := range l.system {
		candidates = append(candidates, path.Join(d, name))
	}
	for _, c := range candidates {
		if l.usable(c) {
			return c, nil
		}
	}
	return "", errMissing
}

// usable reports whether p is an ELF file the executable can load, as the
// loader skips libraries of another class or machine.
func (l *loader) usable(p string) bool {
	fi, err := os.Stat(p)
	if err != nil || !fi.Mode().IsRegular() {
		return false
	}
	o, err := l.object(p)
	return err == nil && o.class == l.exe.class && o.machine == l.exe.machine
}

// placeLibs adds the libraries of links to the image where the image's
// loader, which has no ld.so cache, finds them. loadPaths maps host paths
// of objects already in the image to the path their loader opens there
// (needed for $ORIGIN) and is extended.
func (b *builder) placeLibs(links []link, loadPaths map[string]string) error {
	l := b.ld
	for _, lk := range links {
		if err := b.check(); err != nil {
			return err
		}
		img, err := b.addHost(lk.path)
		if err != nil {
			return err
		}
		if _, done := loadPaths[lk.path]; done {
			continue
		}
		if strings.HasPrefix(path.Base(lk.path), "libcrypto") {
			b.noteOpenSSL(lk.path)
		}
		if strings.Contains(lk.name, "/") {
			loadPaths[lk.path] = img
			continue
		}
		fromImg, ok := loadPaths[lk.from]
		if !ok {
			return fmt.Errorf("baseimage: internal: %s placed before %s", lk.path, lk.from)
		}
		o, err := l.object(lk.from)
		if err != nil {
			return err
		}
		dirs := append(l.searchDirs(fromImg, o, path.Dir(b.imagePath(l.exePath))), l.system...)
		found := ""
		for _, d := range dirs {
			cand := path.Join(d, lk.name)
			real, e, ok := b.resolve(cand)
			if !ok || e.kind != kindFile {
				continue
			}
			if real != img {
				return fmt.Errorf("baseimage: in the image %s would load %s instead of %s", lk.name, real, img)
			}
			found = cand
			break
		}
		if found == "" {
			// Found on the host only through the ld.so cache or a
			// relocated RUNPATH: a link in the loader's first directory
			// makes the image find it without either.
			dir, err := b.firstSystemDir()
			if err != nil {
				return err
			}
			found = path.Join(dir, lk.name)
			if err := b.addSymlink(path.Join(dir, lk.name), img); err != nil {
				return err
			}
		}
		loadPaths[lk.path] = found
	}
	return nil
}

// firstSystemDir adds the first of the loader's built-in directories that
// exists on the host and returns its real image path.
func (b *builder) firstSystemDir() (string, error) {
	for _, d := range b.ld.system {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			return b.addHost(d)
		}
	}
	return "", errors.New("baseimage: none of the loader's directories exists")
}
