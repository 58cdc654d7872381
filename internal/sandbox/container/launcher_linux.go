//go:build linux && cgo

package container

import (
	"bufio"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/sandbox/container/pid1"
)

// ReaperName is the file name of the baton-reaper executable that New looks
// for next to the running program (see Options.ReaperPath).
const ReaperName = "baton-reaper"

// Without baton-reaper, the running binary is visible in every sandbox
// below /.baton, on a tmpfs of its own so that nothing of the image can
// shadow it.
const (
	batonDir = "/.baton"
	batonExe = batonDir + "/baton"
	batonLib = batonDir + "/lib"
)

// launcher knows how to run the sandbox's own programs (the reaper, the
// self-test) inside a sandbox whose image may have no (or another) C
// library.
//
// With baton-reaper (a static executable) it needs no mounts: a sealed
// in-memory copy of it is passed to the process as a file descriptor and
// exec'd through /proc/self/fd. That spares every sandbox a second start
// of the whole (large, cgo-linked) running binary and seven to ten mounts.
//
// Without it, the running binary plays those roles: a binary linked with
// cgo (libcontainer's nsenter needs cgo) is started through the host's
// dynamic loader with the host's shared objects, bind-mounted next to it.
type launcher struct {
	exe    string            // host path of the binary
	interp string            // host path of its ELF interpreter; "" if static
	libs   map[string]string // name in batonLib -> host path

	helper     *os.File // sealed memfd with baton-reaper; nil: run exe
	helperPath string   // where helper was read from
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

// useHelper loads the baton-reaper executable at path into a sealed
// memfd, so that neither a change of the file on the host nor a process
// in a sandbox can alter what later sandboxes run.
func (l *launcher) useHelper(path string) error {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	f, err := elf.NewFile(src)
	if err != nil {
		return fmt.Errorf("%s is not an ELF executable: %w", path, err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; it must be static to run in any image", path)
		}
	}
	fd, err := unix.MemfdCreate(ReaperName, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_EXEC)
	if errors.Is(err, unix.EINVAL) { // kernels before 6.3 know no MFD_EXEC
		fd, err = unix.MemfdCreate(ReaperName, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return fmt.Errorf("memfd for %s: %w", ReaperName, err)
	}
	mem := os.NewFile(uintptr(fd), ReaperName)
	defer mem.Close()
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.Copy(mem, src); err != nil {
		return fmt.Errorf("copy %s: %w", path, err)
	}
	const seals = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(mem.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		return fmt.Errorf("seal the copy of %s: %w", path, err)
	}
	// A read-only descriptor: exec refuses a file someone holds open for
	// writing (ETXTBSY).
	ro, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(mem.Fd())), os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("reopen the copy of %s: %w", path, err)
	}
	l.helper, l.helperPath = ro, path
	return nil
}

// dropHelper goes back to running the program itself.
func (l *launcher) dropHelper() {
	if l.helper != nil {
		l.helper.Close()
		l.helper, l.helperPath = nil, ""
	}
}

// process is the command line (and the files it needs) that plays role
// inside a sandbox.
func (l *launcher) process(role string) (args []string, files []*os.File) {
	if l.helper != nil {
		// The helper is the first of the process's extra files.
		return []string{pid1.ExecPath, role}, []*os.File{l.helper}
	}
	return l.args(role), nil
}

// args is the command line that runs this binary inside a sandbox.
func (l *launcher) args(arg ...string) []string {
	if l.interp == "" {
		return append([]string{batonExe}, arg...)
	}
	return append([]string{batonLib + "/" + filepath.Base(l.interp), "--library-path", batonLib, batonExe}, arg...)
}

// mounts are the mounts that make the binary runnable in a sandbox; empty
// is the host path of an empty file. The helper needs none.
func (l *launcher) mounts(empty string) []*configs.Mount {
	if l.helper != nil {
		return nil
	}
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
