//go:build linux && cgo

package container

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/sandbox"
	"github.com/baton-faas/baton/internal/sandbox/container/pid1"
)

// spawner is the runtime's end of a sandbox reaper's control socket (see
// package pid1): processes started through it are forked by the reaper
// inside the sandbox, which spares each of them libcontainer's re-exec of
// this (large) program. Sandboxes whose reaper is this program itself
// (no baton-reaper) start processes through libcontainer instead.
type spawner struct {
	conn *net.UnixConn

	mu      sync.Mutex
	nextID  uint64
	replies map[uint64]chan spawnReply
	exits   map[uint64]chan unix.WaitStatus
	gone    bool          // the reaper's end is closed
	done    chan struct{} // closed when the reader has ended
}

type spawnReply struct {
	pid   int // in the sandbox's PID namespace
	pidfd *os.File
	err   error
}

// spawns tells whether sandboxes' reapers start their processes.
func (r *Runtime) spawns() bool { return r.launcher.helper != nil && !r.opts.LibcontainerExec }

// newSpawnerPair returns the runtime's spawner and the reaper's end of
// its socket (to pass to the reaper as pid1.ControlFd, then close).
func newSpawnerPair() (*spawner, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("control socket: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "reaper-control")
	theirs := os.NewFile(uintptr(fds[1]), "reaper-control")
	c, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		theirs.Close()
		return nil, nil, fmt.Errorf("control socket: %w", err)
	}
	sp := &spawner{
		conn:    c.(*net.UnixConn),
		replies: map[uint64]chan spawnReply{},
		exits:   map[uint64]chan unix.WaitStatus{},
		done:    make(chan struct{}),
	}
	return sp, theirs, nil
}

// run reads the reaper's messages until its end closes (the sandbox's
// PID 1 died) or close is called.
func (sp *spawner) run() {
	defer close(sp.done)
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*4))
	for {
		n, oobn, _, _, err := sp.conn.ReadMsgUnix(buf, oob)
		var pidfd *os.File
		if oobn > 0 {
			if fds := pid1.ReceivedFds(oob[:oobn]); len(fds) > 0 {
				pidfd = os.NewFile(uintptr(fds[0]), "pidfd")
				for _, fd := range fds[1:] {
					unix.Close(fd)
				}
			}
		}
		if err != nil || n == 0 {
			if pidfd != nil {
				pidfd.Close()
			}
			sp.shutdown()
			return
		}
		kind, id, value, ok := pid1.ParseHeader(buf[:n])
		if !ok {
			if pidfd != nil {
				pidfd.Close()
			}
			continue
		}
		switch kind {
		case pid1.MsgSpawned, pid1.MsgFailed:
			r := spawnReply{pid: int(value), pidfd: pidfd}
			if kind == pid1.MsgFailed {
				r.err = errors.New(string(buf[pid1.HeaderLen:n]))
			} else if pidfd == nil {
				r.err = errors.New("the reaper sent no pidfd")
			}
			sp.mu.Lock()
			ch := sp.replies[id]
			delete(sp.replies, id)
			sp.mu.Unlock()
			if ch != nil {
				ch <- r // buffered
			} else if pidfd != nil {
				pidfd.Close()
			}
		case pid1.MsgExited:
			if pidfd != nil {
				pidfd.Close()
			}
			sp.mu.Lock()
			ch := sp.exits[id]
			delete(sp.exits, id)
			sp.mu.Unlock()
			if ch != nil {
				ch <- unix.WaitStatus(uint32(value)) // buffered
			}
		default:
			if pidfd != nil {
				pidfd.Close()
			}
		}
	}
}

// shutdown fails every start waiting for a reply; waiters for exits see
// their channel closed.
func (sp *spawner) shutdown() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.gone = true
	for id, ch := range sp.replies {
		ch <- spawnReply{err: errors.New("the sandbox's init is gone")}
		delete(sp.replies, id)
	}
	for id, ch := range sp.exits {
		close(ch)
		delete(sp.exits, id)
	}
}

// close closes the runtime's end and waits for the reader.
func (sp *spawner) close() {
	sp.conn.Close()
	<-sp.done
}

// spawned is a process the reaper started.
type spawned struct {
	pidfd *os.File
	exit  chan unix.WaitStatus // closed without a value if the reaper died
}

// start runs spec through the reaper, in cgroup cg (created empty by the
// caller), as uid:gid, and returns once it was exec'd (or failed to be).
func (sp *spawner) start(ctx context.Context, spec sandbox.ProcessSpec, dir string, uid, gid int, cg cgroups.Manager) (_ *spawned, hostPid int, retErr error) {
	es := pid1.ExecSpec{Args: spec.Args, Env: spec.Env, Dir: dir, UID: uid, GID: gid}
	payload, err := es.Marshal()
	if err != nil {
		return nil, 0, fmt.Errorf("start %s: %w", spec.Args[0], err)
	}
	var devNull *os.File
	stdio := []*os.File{nil, spec.Stdout, spec.Stderr}
	for i, f := range stdio {
		if f != nil {
			continue
		}
		if devNull == nil {
			// Read-write, as libcontainer gives it: stdout and stderr too.
			if devNull, err = os.OpenFile(os.DevNull, os.O_RDWR, 0); err != nil {
				return nil, 0, err
			}
			defer devNull.Close()
		}
		stdio[i] = devNull
	}
	fixStdioOwner(stdio[1:], uid)
	holdR, holdW, err := os.Pipe()
	if err != nil {
		return nil, 0, err
	}
	defer holdW.Close()
	statR, statW, err := os.Pipe()
	if err != nil {
		holdR.Close()
		return nil, 0, err
	}
	defer statR.Close()
	files := append(append(stdio, spec.ExtraFiles...), holdR, statW)

	sp.mu.Lock()
	if sp.gone {
		sp.mu.Unlock()
		holdR.Close()
		statW.Close()
		return nil, 0, errors.New("the sandbox's init is gone")
	}
	sp.nextID++
	id := sp.nextID
	reply := make(chan spawnReply, 1)
	exit := make(chan unix.WaitStatus, 1)
	sp.replies[id] = reply
	sp.exits[id] = exit
	sp.mu.Unlock()
	forget := func() {
		sp.mu.Lock()
		delete(sp.replies, id)
		delete(sp.exits, id)
		sp.mu.Unlock()
	}

	hdr := make([]byte, pid1.HeaderLen)
	pid1.PutHeader(hdr, pid1.MsgSpawn, id, uint64(len(spec.ExtraFiles)))
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	_, _, err = sp.conn.WriteMsgUnix(hdr, unix.UnixRights(fds...), nil)
	runtime.KeepAlive(files) // Fd leaves them to the GC
	holdR.Close()
	statW.Close()
	if err != nil {
		forget()
		return nil, 0, fmt.Errorf("ask the sandbox's init to start %s: %w", spec.Args[0], err)
	}
	var r spawnReply
	select {
	case r = <-reply:
	case <-ctx.Done():
		// The reply still comes: its process is killed as it is
		// abandoned (the hold pipe closes unwritten, so it exits).
		forget()
		return nil, 0, ctx.Err()
	}
	if r.err != nil {
		forget()
		return nil, 0, fmt.Errorf("start %s: %w", spec.Args[0], r.err)
	}
	p := &spawned{pidfd: r.pidfd, exit: exit}
	defer func() {
		if retErr != nil {
			_ = p.signal(unix.SIGKILL)
			p.wait()
			p.pidfd.Close()
		}
	}()
	if hostPid, err = pidOfPidfd(r.pidfd); err != nil {
		return nil, 0, fmt.Errorf("start %s: %w", spec.Args[0], err)
	}
	// Held on its pipe, the exec stage runs nothing of the process's
	// own: it joins its cgroup before it exists as the process.
	if err := moveToGroup(cg, hostPid); err != nil {
		return nil, 0, fmt.Errorf("start %s: move it to its cgroup: %w", spec.Args[0], err)
	}
	// The pidfd names the exec stage; the pid written must have been it.
	if err := unix.PidfdSendSignal(int(r.pidfd.Fd()), 0, nil, 0); err != nil {
		return nil, 0, fmt.Errorf("start %s: the exec stage died before it was confined: %w", spec.Args[0], err)
	}
	if _, err := holdW.Write(payload); err != nil {
		return nil, 0, fmt.Errorf("start %s: hand over the process: %w", spec.Args[0], err)
	}
	holdW.Close()
	msg, _ := io.ReadAll(bufio.NewReader(statR)) // EOF at exec
	if len(msg) > 0 {
		return nil, 0, startError(spec.Args[0], errors.New(string(msg)))
	}
	return p, hostPid, nil
}

func (p *spawned) signal(sig unix.Signal) error {
	err := unix.PidfdSendSignal(int(p.pidfd.Fd()), sig, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

// wait returns the process's wait status; should the reaper die first
// (the sandbox is being destroyed, which kills every process in it), it
// waits until the process is gone and reports SIGKILL.
func (p *spawned) wait() unix.WaitStatus {
	if ws, ok := <-p.exit; ok {
		return ws
	}
	fds := []unix.PollFd{{Fd: int32(p.pidfd.Fd()), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	return unix.WaitStatus(uint32(unix.SIGKILL))
}

// moveToGroup writes pid into every hierarchy of cg, which exists with its
// limits set (a second Apply would find the mounts and make the
// directories again).
func moveToGroup(cg cgroups.Manager, pid int) error {
	done := map[string]bool{}
	for _, dir := range cg.GetPaths() {
		if done[dir] {
			continue
		}
		done[dir] = true
		if err := cgroups.WriteCgroupProc(dir, pid); err != nil {
			return err
		}
	}
	return nil
}

// pidOfPidfd is the host pid of the process a pidfd refers to.
func pidOfPidfd(f *os.File) (int, error) {
	b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(int(f.Fd())))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			pid, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || pid <= 0 {
				return 0, fmt.Errorf("the process is gone (pid %q)", strings.TrimSpace(v))
			}
			return pid, nil
		}
	}
	return 0, errors.New("no pid in the pidfd's fdinfo")
}

// fixStdioOwner gives the process's output streams to its user, as
// libcontainer does, so that it can reopen them (/dev/stdout); /dev/null
// and files it cannot change are left alone.
func fixStdioOwner(files []*os.File, uid int) {
	for _, f := range files {
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil || int(st.Uid) == uid {
			continue
		}
		if st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == unix.Mkdev(1, 3) {
			continue
		}
		_ = f.Chown(uid, -1)
	}
}

// exitStatus converts a wait status.
func exitStatus(ws syscall.WaitStatus) (code, sig int) {
	if ws.Signaled() {
		return -1, int(ws.Signal())
	}
	return ws.ExitStatus(), 0
}
