package fake

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/sandbox"
)

// zygoteMessage is one packet of the grain worker protocol (see package
// node/grain, whose Go side this answers).
type zygoteMessage struct {
	Op     string            `json:"op"`
	ID     *int64            `json:"id,omitempty"`
	Pid    int               `json:"pid,omitempty"`
	Env    map[string]string `json:"env,omitempty"`
	Signal *int              `json:"signal,omitempty"`
	Status *int              `json:"status,omitempty"`
	Error  string            `json:"error,omitempty"`
}

// serveZygote is a fake grain worker on the control socket ctrl: ready at
// once (there is no module to import), then one fake instance per spawn
// request. Like the real one, it kills its children and exits when the
// channel closes, and reports each child's exit.
func serveZygote(ctx context.Context, ctrl *os.File, r *Runtime) sandbox.ExitStatus {
	c, err := net.FileConn(ctrl)
	if err != nil {
		return sandbox.ExitStatus{Code: 1}
	}
	conn, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return sandbox.ExitStatus{Code: 1}
	}
	z := &zygote{conn: conn, r: r, children: map[int]context.CancelFunc{}}
	// Killing the zygote closes its end of the channel, which ends the
	// read loop below.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()

	z.send(zygoteMessage{Op: "ready", Pid: int(r.nextPid.Add(1))})
	buf := make([]byte, 128<<10)
	oob := make([]byte, unix.CmsgSpace(8*4))
	for {
		n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 {
			break
		}
		fds := receivedFds(oob[:oobn])
		var m zygoteMessage
		if json.Unmarshal(buf[:n], &m) != nil {
			closeFds(fds)
			continue
		}
		switch m.Op {
		case "spawn":
			z.spawn(ctx, m, fds)
		case "kill":
			closeFds(fds)
			z.mu.Lock()
			kill := z.children[m.Pid]
			z.mu.Unlock()
			if kill != nil {
				kill()
			}
		default:
			closeFds(fds)
		}
	}
	z.mu.Lock()
	for _, kill := range z.children {
		kill()
	}
	z.mu.Unlock()
	z.wg.Wait()
	if ctx.Err() != nil {
		return killed
	}
	return sandbox.ExitStatus{}
}

type zygote struct {
	conn *net.UnixConn
	r    *Runtime
	wg   sync.WaitGroup // children

	mu       sync.Mutex
	children map[int]context.CancelFunc
}

// send writes one packet; a lost channel is noticed by the read loop.
func (z *zygote) send(m zygoteMessage) {
	b, err := json.Marshal(m)
	if err != nil {
		return
	}
	_, _, _ = z.conn.WriteMsgUnix(b, nil, nil)
}

// spawn "forks" an instance: fds are its stdout, its stderr and the read
// end of its hold pipe, as the host agent sends them.
func (z *zygote) spawn(ctx context.Context, m zygoteMessage, fds []int) {
	if m.ID == nil || len(fds) != 3 {
		closeFds(fds)
		z.send(zygoteMessage{Op: "spawnError", ID: m.ID, Error: "spawn wants an id and three descriptors (stdout, stderr, hold)"})
		return
	}
	// Pollable, so that a kill can interrupt the wait for release.
	_ = unix.SetNonblock(fds[2], true)
	hold := os.NewFile(uintptr(fds[2]), "hold")
	out := []*os.File{os.NewFile(uintptr(fds[0]), "stdout"), os.NewFile(uintptr(fds[1]), "stderr")}
	pid := int(z.r.nextPid.Add(1))
	cctx, kill := context.WithCancel(ctx)
	z.mu.Lock()
	z.children[pid] = kill
	z.wg.Add(1)
	z.mu.Unlock()
	z.send(zygoteMessage{Op: "spawned", ID: m.ID, Pid: pid})
	go func() {
		defer z.wg.Done()
		st := z.runChild(cctx, hold, m.Env)
		closeAll(out)
		kill()
		z.mu.Lock()
		delete(z.children, pid)
		z.mu.Unlock()
		exit := zygoteMessage{Op: "exit", Pid: pid}
		if st.Signal != 0 {
			exit.Signal = &st.Signal
		} else {
			exit.Status = &st.Code
		}
		z.send(exit)
	}()
}

// runChild waits to be released, then serves the Runtime API. A hold
// closed without release ends the child, as it does a real fork.
func (z *zygote) runChild(ctx context.Context, hold *os.File, env map[string]string) sandbox.ExitStatus {
	stop := context.AfterFunc(ctx, func() { hold.Close() })
	var b [1]byte
	n, _ := hold.Read(b[:])
	stop()
	hold.Close()
	if ctx.Err() != nil {
		return killed
	}
	if n != 1 {
		return sandbox.ExitStatus{Code: 1}
	}
	return runClient(ctx, env[runtimeAPIEnv], z.r.opts.StartLatency)
}

func receivedFds(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for i := range msgs {
		got, err := unix.ParseUnixRights(&msgs[i])
		if err == nil {
			fds = append(fds, got...)
		}
	}
	for _, fd := range fds {
		syscall.CloseOnExec(fd)
	}
	return fds
}

func closeFds(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
