// Package grain is the Go side of the grain worker ("zygote") protocol.
//
// A zygote is a runtime process that imports the function's code once and
// then forks a ready-to-serve child per request. Baton talks to it over one
// end of an AF_UNIX SOCK_SEQPACKET socket pair: each packet is one JSON
// object, spawn requests carry the child's stdout and stderr as SCM_RIGHTS
// descriptors, and the read end of a hold pipe: a new child waits on it,
// before any of the function's code runs in it, until Child.Release (so
// that the caller can first give it limits of its own).
package grain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/workerapi"
)

const (
	// maxPacket bounds what we send: the zygote reads 64 KiB at a time.
	maxPacket = 64 << 10
	// readBufSize is far above what the zygote sends (it caps init errors).
	readBufSize = 256 << 10
	// oobSpaceFds leaves room to notice (and close) stray descriptors.
	oobSpaceFds = 8
)

// Control message ops.
const (
	opReady      = "ready"
	opSpawn      = "spawn"
	opSpawned    = "spawned"
	opSpawnError = "spawnError"
	opKill       = "kill"
	opExit       = "exit"
)

// ErrZygoteLost is returned when the control channel is gone, either
// because Close was called or because the zygote ended.
var ErrZygoteLost = errors.New("grain: zygote control channel closed")

// ErrChildExited is returned by Child.Kill once the child's exit is known.
var ErrChildExited = errors.New("grain: child already exited")

// ReadyInfo is what the zygote reports once it has imported the handler.
type ReadyInfo struct {
	// Pid is the zygote's pid in its own PID namespace.
	Pid int
	// InitError is set when importing the handler failed; children then
	// report it to /init/error and exit. It is bounded
	// (workerapi.FunctionError.Bounded).
	InitError *workerapi.FunctionError
}

// ExitStatus describes how a child ended.
type ExitStatus struct {
	// Code is the exit code, or -1 when the child was killed by a signal.
	Code int
	// Signal is the terminating signal, or 0.
	Signal int
	// ZygoteLost means the zygote went away before reporting the exit;
	// Code and Signal are then meaningless.
	ZygoteLost bool
}

// message is the union of all control messages in both directions.
type message struct {
	Op        string                   `json:"op"`
	ID        *int64                   `json:"id,omitempty"`
	Pid       int                      `json:"pid,omitempty"`
	Env       map[string]string        `json:"env,omitempty"`
	Signal    *int                     `json:"signal,omitempty"`
	Status    *int                     `json:"status,omitempty"`
	Error     string                   `json:"error,omitempty"`
	InitError *workerapi.FunctionError `json:"initError,omitempty"`
}

type spawnResult struct {
	child *Child
	err   error
}

type pendingSpawn struct {
	reply chan spawnResult // buffered; the reader never blocks on it
	// hold is the write end of the child's hold pipe, handed to the
	// Child; closed unwritten, it makes the child exit.
	hold *os.File
	// abandoned is set when the caller gave up waiting; a child that
	// still appears is killed instead of leaked.
	abandoned bool
}

// Zygote is a handle on one running zygote process.
type Zygote struct {
	conn   *net.UnixConn
	logger *slog.Logger

	nextID atomic.Int64

	readyOnce sync.Once
	readyCh   chan struct{}
	ready     ReadyInfo

	done     chan struct{}
	closeErr error
	closing  sync.Once
	wg       sync.WaitGroup // reader and helper goroutines

	mu       sync.Mutex
	lost     bool
	err      error // why the control channel ended
	pending  map[int64]*pendingSpawn
	children map[int]*Child
}

// Child is one forked runtime process.
type Child struct {
	z    *Zygote
	id   int64
	pid  int
	done chan struct{}
	exit ExitStatus // written before done is closed

	holdMu sync.Mutex
	hold   *os.File // nil once released or dropped
}

// SocketPair creates the control channel. Pass theirs to the zygote as fd
// 3 (exec.Cmd.ExtraFiles[0]) and close it after the process started; give
// ours to New.
func SocketPair() (ours, theirs *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("grain: socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "grain-control"), os.NewFile(uintptr(fds[1]), "grain-control-zygote"), nil
}

// New takes ownership of ctrl (our end of SocketPair) and starts reading
// the zygote's messages. A nil logger discards logs.
func New(ctrl *os.File, logger *slog.Logger) *Zygote {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	z := &Zygote{
		logger:   logger,
		readyCh:  make(chan struct{}),
		done:     make(chan struct{}),
		pending:  make(map[int64]*pendingSpawn),
		children: make(map[int]*Child),
	}
	// FileConn duplicates the descriptor, so ours is closed either way.
	c, err := net.FileConn(ctrl)
	ctrl.Close()
	if err == nil {
		if uc, ok := c.(*net.UnixConn); ok {
			z.conn = uc
		} else {
			c.Close()
			err = fmt.Errorf("control descriptor is a %T, not a unix socket", c)
		}
	}
	if err != nil {
		z.shutdown(fmt.Errorf("grain: control socket: %w", err))
		return z
	}
	z.wg.Add(1)
	go z.readLoop()
	return z
}

// Ready waits for the zygote's ready message.
func (z *Zygote) Ready(ctx context.Context) (ReadyInfo, error) {
	select {
	case <-z.readyCh:
		return z.ready, nil
	default:
	}
	select {
	case <-z.readyCh:
		return z.ready, nil
	case <-z.done:
		// The ready message may have been the last thing read.
		select {
		case <-z.readyCh:
			return z.ready, nil
		default:
		}
		return ReadyInfo{}, fmt.Errorf("grain: waiting for ready: %w", z.Err())
	case <-ctx.Done():
		return ReadyInfo{}, fmt.Errorf("grain: waiting for ready: %w", ctx.Err())
	}
}

// Spawn asks the zygote to fork a child whose stdout and stderr are the
// given files. The child is held, running none of the function's code,
// until Release. The caller keeps ownership of the files and may close
// them once Spawn returns. Concurrent calls are fine.
func (z *Zygote) Spawn(ctx context.Context, env map[string]string, stdout, stderr *os.File) (*Child, error) {
	if stdout == nil || stderr == nil {
		return nil, errors.New("grain: spawn: stdout and stderr are required")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("grain: spawn: %w", err)
	}
	id := z.nextID.Add(1)
	payload, err := json.Marshal(message{Op: opSpawn, ID: &id, Env: env})
	if err != nil {
		return nil, fmt.Errorf("grain: spawn: encode: %w", err)
	}
	if len(payload) > maxPacket {
		return nil, fmt.Errorf("grain: spawn: request of %d bytes exceeds %d (environment too large)", len(payload), maxPacket)
	}

	holdR, holdW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("grain: spawn: hold pipe: %w", err)
	}
	p := &pendingSpawn{reply: make(chan spawnResult, 1), hold: holdW}
	z.mu.Lock()
	if z.lost {
		z.mu.Unlock()
		holdR.Close()
		holdW.Close()
		return nil, fmt.Errorf("grain: spawn: %w", z.Err())
	}
	z.pending[id] = p
	z.mu.Unlock()

	err = z.sendWithFiles(payload, stdout, stderr, holdR)
	holdR.Close() // the zygote has its own copy now
	if err != nil {
		z.mu.Lock()
		if _, ok := z.pending[id]; ok {
			delete(z.pending, id)
			holdW.Close()
		}
		z.mu.Unlock()
		return nil, fmt.Errorf("grain: spawn: %w", err)
	}

	select {
	case r := <-p.reply:
		return r.child, r.err
	case <-ctx.Done():
		z.mu.Lock()
		defer z.mu.Unlock()
		// The reply may have raced with cancellation; prefer a result.
		select {
		case r := <-p.reply:
			if r.child != nil {
				r.child.dropHold()
				z.killAsyncLocked(r.child)
			}
		default:
			p.abandoned = true
		}
		return nil, fmt.Errorf("grain: spawn: %w", ctx.Err())
	}
}

// Done is closed when the control channel ends (EOF, error or Close).
func (z *Zygote) Done() <-chan struct{} { return z.done }

// Err tells why the control channel ended; nil while it is open.
func (z *Zygote) Err() error {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.err
}

// Close closes the control channel, which makes the zygote kill its
// children and exit. It waits for the reader goroutine to finish.
func (z *Zygote) Close() error {
	z.closing.Do(func() {
		if z.conn != nil {
			z.closeErr = z.conn.Close()
		}
		z.shutdown(ErrZygoteLost)
		z.wg.Wait()
	})
	if z.closeErr != nil {
		return fmt.Errorf("grain: close control socket: %w", z.closeErr)
	}
	return nil
}

// Pid is the child's pid as the zygote sees it (its PID namespace).
func (c *Child) Pid() int { return c.pid }

// Done is closed when the child exited or the zygote was lost.
func (c *Child) Done() <-chan struct{} { return c.done }

// Release lets a held child run. A child never released exits once its
// hold is dropped (its exit, the zygote's loss, or this process's).
func (c *Child) Release() error {
	c.holdMu.Lock()
	defer c.holdMu.Unlock()
	if c.hold == nil {
		return fmt.Errorf("grain: release child %d: %w", c.pid, ErrChildExited)
	}
	_, err := c.hold.Write([]byte{'g'})
	c.hold.Close()
	c.hold = nil
	if err != nil {
		return fmt.Errorf("grain: release child %d: %w", c.pid, err)
	}
	return nil
}

// dropHold closes the hold pipe of a child that ended or was given up.
func (c *Child) dropHold() {
	c.holdMu.Lock()
	defer c.holdMu.Unlock()
	if c.hold != nil {
		c.hold.Close()
		c.hold = nil
	}
}

// Exit reports how the child ended; valid once Done is closed.
func (c *Child) Exit() ExitStatus {
	select {
	case <-c.done:
		return c.exit
	default:
		return ExitStatus{}
	}
}

// Kill asks the zygote to signal the child. It never signals by host pid:
// the pid is only meaningful inside the zygote's PID namespace.
func (c *Child) Kill(sig syscall.Signal) error {
	select {
	case <-c.done:
		return ErrChildExited
	default:
	}
	if err := c.z.sendKill(c, sig); err != nil {
		return fmt.Errorf("grain: kill child %d: %w", c.pid, err)
	}
	return nil
}

func (z *Zygote) sendKill(c *Child, sig syscall.Signal) error {
	s := int(sig)
	payload, err := json.Marshal(message{Op: opKill, ID: &c.id, Pid: c.pid, Signal: &s})
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	return z.send(payload, nil)
}

// killAsyncLocked kills a child nobody waits for. It runs off the reader
// goroutine so the reader never blocks on a write. z.mu must be held: that
// orders the WaitGroup Add before Close's Wait.
func (z *Zygote) killAsyncLocked(c *Child) {
	if z.lost {
		return // the zygote kills its children on its way out
	}
	z.wg.Add(1)
	go func() {
		defer z.wg.Done()
		if err := z.sendKill(c, syscall.SIGKILL); err != nil && !errors.Is(err, ErrZygoteLost) {
			z.logger.Warn("grain: killing abandoned child", "pid", c.pid, "err", err)
		}
	}()
}

func (z *Zygote) sendWithFiles(payload []byte, files ...*os.File) error {
	// SyscallConn gives the descriptors without switching the files to
	// blocking mode, as Fd would. Each Control keeps its descriptor from
	// being closed until the packet is sent.
	fds := make([]int, 0, len(files))
	var send func(i int) error
	send = func(i int) error {
		if i == len(files) {
			return z.send(payload, unix.UnixRights(fds...))
		}
		raw, err := files[i].SyscallConn()
		if err != nil {
			return fmt.Errorf("%s: %w", files[i].Name(), err)
		}
		var sendErr error
		if err := raw.Control(func(fd uintptr) {
			fds = append(fds, int(fd))
			sendErr = send(i + 1)
		}); err != nil {
			return fmt.Errorf("%s: %w", files[i].Name(), err)
		}
		return sendErr
	}
	return send(0)
}

func (z *Zygote) send(payload, oob []byte) error {
	if z.conn == nil {
		return ErrZygoteLost
	}
	n, oobn, err := z.conn.WriteMsgUnix(payload, oob, nil)
	if err != nil {
		if z.isLost() {
			return ErrZygoteLost
		}
		return fmt.Errorf("write control message: %w", err)
	}
	if n != len(payload) || oobn != len(oob) {
		return fmt.Errorf("short control write: %d/%d bytes, %d/%d oob", n, len(payload), oobn, len(oob))
	}
	return nil
}

func (z *Zygote) isLost() bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.lost
}

func (z *Zygote) readLoop() {
	defer z.wg.Done()
	buf := make([]byte, readBufSize)
	oob := make([]byte, unix.CmsgSpace(oobSpaceFds*4))
	for {
		n, oobn, flags, _, err := z.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				err = ErrZygoteLost
			} else {
				err = fmt.Errorf("%w: read: %w", ErrZygoteLost, err)
			}
			z.shutdown(err)
			return
		}
		if oobn > 0 {
			z.closeStrayFds(oob[:oobn])
		}
		if n == 0 {
			// A zero-length read on SEQPACKET is end of stream.
			z.shutdown(fmt.Errorf("%w: zygote closed the channel", ErrZygoteLost))
			return
		}
		if flags&unix.MSG_TRUNC != 0 {
			z.logger.Warn("grain: dropped truncated control message", "bytes", n)
			continue
		}
		var m message
		if err := json.Unmarshal(buf[:n], &m); err != nil {
			z.logger.Warn("grain: undecodable control message", "err", err)
			continue
		}
		z.dispatch(&m)
	}
}

// closeStrayFds closes descriptors the zygote should never have sent, so
// they do not leak into this process.
func (z *Zygote) closeStrayFds(oob []byte) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for i := range msgs {
		fds, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
		z.logger.Warn("grain: zygote sent unexpected descriptors", "count", len(fds))
	}
}

func (z *Zygote) dispatch(m *message) {
	switch m.Op {
	case opReady:
		z.readyOnce.Do(func() {
			z.ready = ReadyInfo{Pid: m.Pid}
			if m.InitError != nil {
				fe := m.InitError.Bounded()
				z.ready.InitError = &fe
			}
			close(z.readyCh)
		})
	case opSpawned, opSpawnError:
		if m.ID == nil {
			z.logger.Warn("grain: spawn reply without id", "op", m.Op)
			return
		}
		z.mu.Lock()
		p := z.pending[*m.ID]
		delete(z.pending, *m.ID)
		var res spawnResult
		if m.Op == opSpawned {
			c := &Child{z: z, id: *m.ID, pid: m.Pid, done: make(chan struct{})}
			if p != nil {
				c.hold, p.hold = p.hold, nil
			}
			// Registered here, in the reader, so the exit event that can
			// only follow this reply always finds the child.
			z.children[m.Pid] = c
			res.child = c
		} else {
			res.err = fmt.Errorf("grain: spawn: zygote: %s", m.Error)
			if p != nil && p.hold != nil {
				p.hold.Close()
				p.hold = nil
			}
		}
		switch {
		case p == nil || p.abandoned:
			if p == nil {
				z.logger.Warn("grain: spawn reply for unknown id", "id", *m.ID)
			}
			if res.child != nil {
				res.child.dropHold()
				z.killAsyncLocked(res.child)
			}
		default:
			p.reply <- res
		}
		z.mu.Unlock()
	case opExit:
		z.mu.Lock()
		c := z.children[m.Pid]
		delete(z.children, m.Pid)
		z.mu.Unlock()
		if c == nil {
			z.logger.Warn("grain: exit of unknown child", "pid", m.Pid)
			return
		}
		st := ExitStatus{Code: -1}
		if m.Status != nil {
			st.Code = *m.Status
		}
		if m.Signal != nil {
			st.Signal = *m.Signal
		}
		c.dropHold()
		c.exit = st
		close(c.done)
	default:
		z.logger.Warn("grain: unknown control message", "op", m.Op)
	}
}

// shutdown marks the channel lost and releases everyone waiting on it.
func (z *Zygote) shutdown(cause error) {
	z.mu.Lock()
	if z.lost {
		z.mu.Unlock()
		return
	}
	z.lost = true
	z.err = cause
	pending := z.pending
	children := z.children
	z.pending = make(map[int64]*pendingSpawn)
	z.children = make(map[int]*Child)
	for _, p := range pending {
		if p.hold != nil {
			p.hold.Close()
			p.hold = nil
		}
		if !p.abandoned {
			p.reply <- spawnResult{err: fmt.Errorf("grain: spawn: %w", cause)}
		}
	}
	z.mu.Unlock()
	for _, c := range children {
		c.dropHold()
		c.exit = ExitStatus{Code: -1, ZygoteLost: true}
		close(c.done)
	}
	close(z.done)
}
