//go:build linux

package pid1

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Starting processes through the reaper.
//
// A container runtime that starts every process through libcontainer
// re-executes its own (large) binary for each one, inside the namespaces,
// to set the process up. The reaper already lives inside them: given a
// control socket, it starts processes itself, as its children, so a
// process start costs a fork and the exec of this small program (the
// "exec stage") instead.
//
// The protocol, over a SOCK_SEQPACKET socket pair (the reaper's end is
// ControlFd):
//
//   - the runtime sends a spawn request, header only, with the process's
//     descriptors as SCM_RIGHTS: stdin, stdout, stderr, the extra files, the
//     read end of a hold pipe and the write end of a status pipe;
//   - the reaper forks and execs the exec stage with those descriptors
//     (0, 1, 2, 3.., then hold and status), still as uid 0 with the
//     reaper's capabilities, and answers with the child's pid in the
//     sandbox and a pidfd of it (SCM_RIGHTS), or an error;
//   - the runtime moves the child into its cgroup while it waits on the
//     hold pipe, then writes the process's ExecSpec there and closes it;
//   - the exec stage sets the process up the way libcontainer's init does
//     for a process joining a container (a new session, all CPUs, a clean
//     environment with HOME, the working directory, no supplementary
//     groups, the uid and gid, which drops every capability), looks the
//     program up and execs it. The status pipe is close-on-exec: the
//     runtime reads EOF on success, or the error;
//   - when a child it started exits, the reaper sends its wait status.
//
// Every process keeps what it inherits from the reaper: the namespaces,
// the root, no_new_privs, the seccomp filter, an empty capability bounding
// set, the rlimits and the umask.

// ControlFd is the reaper's end of the control socket, when it has one
// (the second of its extra files).
const ControlFd = 4

// SpawnArg, after ReaperArg, tells the reaper it has a control socket.
const SpawnArg = "spawn"

// ExecArg is the hidden first argument of the exec stage.
const ExecArg = "__baton_sandbox_exec"

// Message kinds. Every message starts with a header: the kind (one byte),
// the request id and one value (little-endian uint64s).
const (
	MsgSpawn   = 'S' // runtime → reaper: value is the number of extra files
	MsgSpawned = 'P' // reaper → runtime: value is the pid; a pidfd attached
	MsgFailed  = 'F' // reaper → runtime: the rest of the packet is the error
	MsgExited  = 'X' // reaper → runtime: value is the wait status
)

// HeaderLen is the length of a message header.
const HeaderLen = 17

// PutHeader writes a header into b (at least HeaderLen bytes).
func PutHeader(b []byte, kind byte, id, value uint64) {
	b[0] = kind
	binary.LittleEndian.PutUint64(b[1:9], id)
	binary.LittleEndian.PutUint64(b[9:17], value)
}

// ParseHeader reads a header.
func ParseHeader(b []byte) (kind byte, id, value uint64, ok bool) {
	if len(b) < HeaderLen {
		return 0, 0, 0, false
	}
	return b[0], binary.LittleEndian.Uint64(b[1:9]), binary.LittleEndian.Uint64(b[9:17]), true
}

// ExecSpec is what the runtime writes to the hold pipe.
type ExecSpec struct {
	Args []string
	Env  []string
	Dir  string
	UID  int
	GID  int
}

// Marshal encodes the spec as NUL-terminated fields: uid, gid, dir, the
// number of arguments, the arguments, then the environment.
func (s ExecSpec) Marshal() ([]byte, error) {
	var b bytes.Buffer
	field := func(v string) error {
		if strings.IndexByte(v, 0) >= 0 {
			return fmt.Errorf("%q contains a NUL byte", v)
		}
		b.WriteString(v)
		b.WriteByte(0)
		return nil
	}
	head := []string{strconv.Itoa(s.UID), strconv.Itoa(s.GID), s.Dir, strconv.Itoa(len(s.Args))}
	for _, v := range append(append(head, s.Args...), s.Env...) {
		if err := field(v); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), nil
}

// UnmarshalExecSpec decodes what Marshal encoded.
func UnmarshalExecSpec(b []byte) (ExecSpec, error) {
	var s ExecSpec
	if len(b) == 0 || b[len(b)-1] != 0 {
		return s, errors.New("truncated process spec")
	}
	f := strings.Split(string(b[:len(b)-1]), "\x00")
	if len(f) < 4 {
		return s, errors.New("short process spec")
	}
	var err1, err2, err3 error
	s.UID, err1 = strconv.Atoi(f[0])
	s.GID, err2 = strconv.Atoi(f[1])
	s.Dir = f[2]
	n, err3 := strconv.Atoi(f[3])
	if err := errors.Join(err1, err2, err3); err != nil || n < 1 || 4+n > len(f) {
		return s, errors.New("malformed process spec")
	}
	s.Args = f[4 : 4+n]
	s.Env = f[4+n:]
	return s, nil
}

// spawner is the reaper's side: it starts processes on request and tells
// the runtime how its children ended.
type spawner struct {
	fd   int
	conn syscall.RawConn // fd through Go's poller: no thread sits in a blocking read

	sendMu sync.Mutex // one packet at a time (replies and exits)

	mu       sync.Mutex // held across fork+record and wait4+lookup
	children map[int]uint64
}

// listen makes the control socket pollable. A reaper blocked in a read
// would hold the only P (GOMAXPROCS=1) until the runtime's monitor takes it
// back, delaying its reaping by up to milliseconds; a fork bomb's zombies
// then fill the PID limit.
func (s *spawner) listen() error {
	if err := unix.SetNonblock(s.fd, true); err != nil {
		return err
	}
	f := os.NewFile(uintptr(s.fd), "control")
	c, err := f.SyscallConn()
	if err != nil {
		return err
	}
	s.conn = c
	return nil
}

// recv reads one packet.
func (s *spawner) recv(buf, oob []byte) (n, oobn int, err error) {
	rerr := s.conn.Read(func(fd uintptr) bool {
		n, oobn, _, _, err = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
		return !errors.Is(err, unix.EAGAIN)
	})
	if err == nil {
		err = rerr
	}
	return n, oobn, err
}

// serve answers spawn requests until the runtime closes its end.
func (s *spawner) serve() {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(256*4))
	for {
		n, oobn, err := s.recv(buf, oob)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n == 0 {
			return // the runtime is gone: processes can no longer be started
		}
		fds := ReceivedFds(oob[:oobn])
		kind, id, extra, ok := ParseHeader(buf[:n])
		if !ok || kind != MsgSpawn || uint64(len(fds)) != extra+5 {
			closeAll(fds)
			s.send(MsgFailed, id, 0, []byte("malformed spawn request"), -1)
			continue
		}
		pid, pidfd, err := s.start(id, int(extra), fds)
		closeAll(fds)
		if err != nil {
			s.send(MsgFailed, id, 0, []byte(err.Error()), -1)
			continue
		}
		s.send(MsgSpawned, id, uint64(pid), nil, pidfd)
		unix.Close(pidfd)
	}
}

// start forks the exec stage with the request's descriptors.
func (s *spawner) start(id uint64, extra int, fds []int) (pid, pidfd int, err error) {
	files := make([]uintptr, len(fds))
	for i, fd := range fds {
		files[i] = uintptr(fd)
	}
	pidfd = -1
	s.mu.Lock()
	defer s.mu.Unlock()
	// /proc/self/exe is this program (the sealed copy it was exec'd from).
	pid, err = syscall.ForkExec("/proc/self/exe", []string{"baton-sandbox-exec", ExecArg, strconv.Itoa(extra)}, &syscall.ProcAttr{
		Env:   []string{},
		Files: files,
		Sys:   &syscall.SysProcAttr{PidFD: &pidfd},
	})
	if err != nil {
		return 0, -1, fmt.Errorf("start the exec stage: %w", err)
	}
	if pidfd < 0 {
		// Kernels without CLONE_PIDFD (before 5.2).
		if pidfd, err = unix.PidfdOpen(pid, 0); err != nil {
			_ = unix.Kill(pid, unix.SIGKILL)
			return 0, -1, fmt.Errorf("pidfd of the exec stage: %w", err)
		}
	}
	s.children[pid] = id
	return pid, pidfd, nil
}

// reap collects every exited child; those it started are reported.
func (s *spawner) reap() {
	for {
		var ws unix.WaitStatus
		s.mu.Lock()
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		id, ours := uint64(0), false
		if err == nil && pid > 0 && s.children != nil {
			id, ours = s.children[pid]
			delete(s.children, pid)
		}
		s.mu.Unlock()
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if ours {
			s.send(MsgExited, id, uint64(uint32(ws)), nil, -1)
		}
	}
}

func (s *spawner) send(kind byte, id, value uint64, text []byte, fd int) {
	msg := make([]byte, HeaderLen, HeaderLen+len(text))
	PutHeader(msg, kind, id, value)
	msg = append(msg, text...)
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	var err error
	_ = s.conn.Write(func(fd uintptr) bool {
		err = unix.Sendmsg(int(fd), msg, oob, nil, 0)
		return !errors.Is(err, unix.EAGAIN)
	})
	// An error means the runtime is gone; there is nothing to tell.
}

// ReceivedFds are the descriptors an SCM_RIGHTS control message carried.
func ReceivedFds(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if got, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, got...)
		}
	}
	return fds
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// Exec is the exec stage: args are ExecArg and the number of extra files.
// It waits for its spec on the hold pipe, sets the process up and execs
// it; it returns only on failure, with the exit code.
func Exec(args []string) int {
	extra, err := strconv.Atoi(args[0])
	if err != nil || extra < 0 {
		return 126
	}
	hold, status := 3+extra, 4+extra
	// Only the process's own descriptors survive the exec.
	_ = unix.CloseRange(uint(status+1), ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	_, _ = unix.FcntlInt(uintptr(status), unix.F_SETFD, unix.FD_CLOEXEC)
	b, err := readAll(hold)
	unix.Close(hold)
	if err != nil || len(b) == 0 {
		return 126 // the runtime gave up on this start
	}
	spec, err := UnmarshalExecSpec(b)
	if err == nil {
		err = execSpec(spec)
	}
	msg := []byte(err.Error())
	for len(msg) > 0 {
		n, werr := unix.Write(status, msg)
		if werr != nil && !errors.Is(werr, unix.EINTR) {
			break
		}
		if n > 0 {
			msg = msg[n:]
		}
	}
	return 127
}

func readAll(fd int) ([]byte, error) {
	var out []byte
	buf := make([]byte, 16<<10)
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return out, nil
		}
		out = append(out, buf[:n]...)
	}
}

// execSpec sets the process up and execs it, in libcontainer's order for
// a process joining a container.
func execSpec(spec ExecSpec) error {
	// The bounding set (prctl) and capget are per thread, and execve keeps
	// only the calling thread: all of them must be the same thread, or the
	// process may exec from one whose bounding set was never emptied. It
	// stays locked: this goroutine execs or the stage exits.
	runtime.LockOSThread()
	env, err := prepareEnv(spec.Env, spec.UID)
	if err != nil {
		return err
	}
	if _, err := unix.Setsid(); err != nil {
		return fmt.Errorf("setsid: %w", err)
	}
	resetCPUAffinity()
	// The directory is entered as root first (a directory only the
	// process's user may enter is entered after the switch).
	chdirLater := false
	if spec.Dir != "" {
		if err := unix.Chdir(spec.Dir); err != nil {
			if !errors.Is(err, os.ErrPermission) {
				return fmt.Errorf("chdir to %s: %w", spec.Dir, err)
			}
			chdirLater = true
		}
	}
	if err := dropBoundingSet(); err != nil {
		return err
	}
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(spec.GID); err != nil {
		return fmt.Errorf("setgid %d: %w", spec.GID, err)
	}
	// From uid 0 to another uid without keep-caps: every capability of
	// the permitted and effective sets goes.
	if err := syscall.Setuid(spec.UID); err != nil {
		return fmt.Errorf("setuid %d: %w", spec.UID, err)
	}
	if chdirLater {
		if err := unix.Chdir(spec.Dir); err != nil {
			return fmt.Errorf("chdir to %s: %w", spec.Dir, err)
		}
	}
	if wd, err := unix.Getwd(); err != nil || strings.HasPrefix(wd, "(unreachable)") {
		return fmt.Errorf("the working directory is outside the sandbox (%q, %v)", wd, err)
	}
	if err := noCapabilities(); err != nil {
		return err
	}
	name, err := exec.LookPath(spec.Args[0])
	if err != nil {
		return err
	}
	if err := unix.Exec(name, spec.Args, env); err != nil {
		return fmt.Errorf("exec %s: %w", name, err)
	}
	return nil
}

// dropBoundingSet empties the capability bounding set (the reaper's
// holds what it keeps; CAP_SETPCAP, needed for the drops, goes last).
func dropBoundingSet() error {
	for c := 0; c < 64; c++ { // beyond the last one the kernel knows: EINVAL
		if c == unix.CAP_SETPCAP {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAPBSET_DROP, unix.CAP_SETPCAP, 0, 0, 0); err != nil {
		return fmt.Errorf("drop CAP_SETPCAP from the bounding set: %w", err)
	}
	return nil
}

// noCapabilities checks that the switch of user left no capability.
func noCapabilities() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	for _, d := range data {
		if d.Effective != 0 || d.Permitted != 0 || d.Inheritable != 0 {
			return errors.New("capabilities left after switching user")
		}
	}
	return nil
}

// prepareEnv checks the environment, keeps the last of duplicate
// variables, sets PATH for the program's lookup and gives HOME the user's
// home directory (or /) when it is unset or empty, as libcontainer does.
func prepareEnv(env []string, uid int) ([]string, error) {
	out := make([]string, 0, len(env)+1)
	seen := map[string]bool{}
	home := false
	for i := len(env) - 1; i >= 0; i-- {
		kv := env[i]
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, errors.New("invalid environment variable: missing '='")
		}
		if k == "" {
			return nil, errors.New("invalid environment variable: name cannot be empty")
		}
		if seen[k] {
			continue
		}
		seen[k] = true
		if k == "PATH" {
			if err := os.Setenv("PATH", v); err != nil {
				return nil, err
			}
		}
		if k == "HOME" {
			if v == "" {
				continue
			}
			home = true
		}
		out = append(out, kv)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	if !home {
		out = append(out, "HOME="+userHome(uid))
	}
	return out, nil
}

// userHome is uid's home directory in the sandbox's /etc/passwd, or /.
func userHome(uid int) string {
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return "/"
	}
	want := strconv.Itoa(uid)
	for line := range strings.Lines(string(b)) {
		f := strings.Split(strings.TrimRight(line, "\n"), ":")
		if len(f) >= 6 && f[2] == want {
			if f[5] == "" {
				return "/"
			}
			return f[5]
		}
	}
	return "/"
}

// resetCPUAffinity allows every CPU, as libcontainer does for a process
// joining a container (the cgroup's cpuset still applies).
func resetCPUAffinity() {
	var set unix.CPUSet
	for i := range len(set) * 64 {
		set.Set(i)
	}
	_ = unix.SchedSetaffinity(0, &set)
}
