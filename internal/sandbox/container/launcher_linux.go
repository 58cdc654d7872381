//go:build linux && cgo

package container

import (
	"bufio"
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// The running binary is visible in every sandbox below /.baton, on a tmpfs
// of its own so that nothing of the image can shadow it.
const (
	batonDir = "/.baton"
	batonExe = batonDir + "/baton"
	batonLib = batonDir + "/lib"
)

// launcher knows how to run this binary inside a sandbox whose image may
// have no (or another) C library: a binary linked with cgo (libcontainer's
// nsenter needs cgo) is started through the host's dynamic loader with the
// host's shared objects, bind-mounted next to it.
type launcher struct {
	exe    string            // host path of the binary
	interp string            // host path of its ELF interpreter; "" if static
	libs   map[string]string // name in batonLib -> host path
}

func newLauncher() (*launcher, error) {
	exe, err := os.Executable()
	if err == nil {
		exe, err = filepath.EvalSymlinks(exe)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot find this program's executable: %v", err)
	}
	l := &launcher{exe: exe, libs: map[string]string{}}
	f, err := elf.Open(exe)
	if err != nil {
		return nil, fmt.Errorf("read this program's executable: %v", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return nil, fmt.Errorf("read the ELF interpreter of this program: %v", err)
		}
		l.interp = strings.TrimRight(string(b), "\x00")
	}
	if l.interp == "" {
		return l, nil
	}
	if l.interp, err = filepath.EvalSymlinks(l.interp); err != nil {
		return nil, fmt.Errorf("find this program's dynamic loader: %v", err)
	}
	// The shared objects this process has loaded are exactly the ones the
	// binary needs; each is bound under its soname, the name the loader
	// looks for.
	maps, err := os.Open("/proc/self/maps")
	if err != nil {
		return nil, err
	}
	defer maps.Close()
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 {
			continue
		}
		p := fields[5]
		if !strings.HasPrefix(p, "/") || p == exe || p == l.interp || !strings.Contains(filepath.Base(p), ".so") {
			continue
		}
		name := soname(p)
		if prev, ok := l.libs[name]; ok && prev != p {
			return nil, fmt.Errorf("two loaded libraries are both named %s", name)
		}
		l.libs[name] = p
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return l, nil
}

func soname(p string) string {
	if f, err := elf.Open(p); err == nil {
		defer f.Close()
		if names, err := f.DynString(elf.DT_SONAME); err == nil && len(names) > 0 && !strings.Contains(names[0], "/") {
			return names[0]
		}
	}
	return filepath.Base(p)
}

// args is the command line that runs this binary inside a sandbox.
func (l *launcher) args(arg ...string) []string {
	if l.interp == "" {
		return append([]string{batonExe}, arg...)
	}
	return append([]string{batonLib + "/" + filepath.Base(l.interp), "--library-path", batonLib, batonExe}, arg...)
}

// mounts are the mounts that make the binary runnable in a sandbox; empty
// is the host path of an empty file.
func (l *launcher) mounts(empty string) []*configs.Mount {
	const roBind = unix.MS_BIND | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV
	ms := []*configs.Mount{
		{Source: "tmpfs", Destination: batonDir, Device: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, Data: "mode=755,size=64k"},
		{Source: l.exe, Destination: batonExe, Device: "bind", Flags: roBind},
	}
	if l.interp == "" {
		return ms
	}
	ms = append(ms, &configs.Mount{Source: l.interp, Destination: batonLib + "/" + filepath.Base(l.interp), Device: "bind", Flags: roBind})
	names := make([]string, 0, len(l.libs))
	for name := range l.libs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		ms = append(ms, &configs.Mount{Source: l.libs[name], Destination: batonLib + "/" + name, Device: "bind", Flags: roBind})
	}
	// The loader reads the image's /etc/ld.so.preload before any code of
	// ours runs; in the reaper (uid 0, before it installs its seccomp
	// filter) that would hand an image a process without the filter. An
	// empty file over it turns the preload list off for the whole sandbox.
	ms = append(ms, &configs.Mount{Source: empty, Destination: "/etc/ld.so.preload", Device: "bind", Flags: roBind})
	return ms
}
