package node

import (
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"strconv"

	"github.com/baton-faas/baton/internal/node/runtimeapi"
	"github.com/baton-faas/baton/internal/runtimes"
	"github.com/baton-faas/baton/internal/sandbox"
)

// The Runtime API's socket transport. Baton's own runtime clients (those
// whose driver says RuntimeSocket) run their invocation loop over a unix
// socket of their instance's Runtime API server, named in
// runtimeapi.SocketEnv, rather than over its loopback HTTP endpoint, which
// they still use for init errors, the data layers and invocations.
//
// Where the sockets live: each sandbox gets a directory of its own under
// <DataDir>/sock, mounted read-only at socketMount (connecting to a socket
// writes nothing to its file system), and each instance a socket in it.
// One directory per sandbox because mounts are fixed when a sandbox is
// created while instances come and go; one socket per instance because
// each instance has its own Runtime API server, so the socket an instance
// connects to says which one it is, as its loopback port does for HTTP:
// nothing in the protocol that a function could forge. A sandbox's
// directory holds its own instances' sockets only; the host's directory
// above is the worker's alone (0700).
//
// Not an abstract socket in the sandbox's network namespace, which would
// need no mount: Node's net module cannot connect to those.
const socketMount = "/opt/baton/sock"

// maxSocketPath is the longest path a unix socket may be bound or reached
// at (sun_path, less its NUL). Names are kept short (counters), but a long
// DataDir can still exceed it: such instances get HTTP only.
const maxSocketPath = 107

// initSockets clears the socket directories a previous run left and makes
// the root, unless instances get no sockets here: the sandboxes run no
// programs (fake), or Options.NoRuntimeSocket.
func (w *Worker) initSockets() error {
	if !w.caps.Programs || w.opts.NoRuntimeSocket {
		return nil
	}
	root := filepath.Join(w.opts.DataDir, "sock")
	if err := os.RemoveAll(root); err != nil {
		return fmt.Errorf("clear runtime socket directories: %w", err)
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fmt.Errorf("runtime socket directory: %w", err)
	}
	w.sockRoot = root
	return nil
}

// socketDir makes the socket directory of the sandbox being created and
// mounts it in sb; it returns "" (instances get HTTP only) when there is
// none.
func (w *Worker) socketDir(sb *sandbox.Spec) string {
	if w.sockRoot == "" {
		return ""
	}
	dir := filepath.Join(w.sockRoot, strconv.FormatUint(w.sockSeq.Add(1), 36))
	// Searchable by the sandbox's user, whoever it is: the directory is
	// the root of the mount, the host's directories above stay closed.
	if err := os.Mkdir(dir, 0o711); err != nil {
		w.log.Warn("runtime socket directory; the sandbox's instances use HTTP only", "err", err)
		return ""
	}
	if err := os.Chmod(dir, 0o711); err != nil { // whatever the umask
		w.log.Warn("runtime socket directory; the sandbox's instances use HTTP only", "err", err)
		os.Remove(dir)
		return ""
	}
	sb.Mounts = append(sb.Mounts, sandbox.Mount{Source: dir, Target: socketMount})
	return dir
}

// removeSocketDir removes a's socket directory; its sandbox is gone.
func (w *Worker) removeSocketDir(a *app) {
	if a.sockDir == "" {
		return
	}
	if err := os.RemoveAll(a.sockDir); err != nil {
		w.log.Warn("remove runtime socket directory", "app", a.key, "err", err)
	}
}

// serveSocket serves in's Runtime API also on a socket in its sandbox's
// directory, when its runtime's client speaks it, and returns the socket's
// path as the sandbox sees it ("" when the instance gets HTTP only). The
// socket goes with in.api's Close, which also removes its file.
func (w *Worker) serveSocket(drv runtimes.Driver, a *app, in *instance) string {
	if a.sockDir == "" || !drv.RuntimeSocket() {
		return ""
	}
	name := strconv.FormatUint(w.sockSeq.Add(1), 36)
	host := filepath.Join(a.sockDir, name)
	inside := path.Join(a.sb.Path(socketMount), name)
	if len(host) > maxSocketPath || len(inside) > maxSocketPath {
		w.log.Debug("runtime socket path too long; the instance uses HTTP only", "instance", in.id, "path", host)
		return ""
	}
	ln, err := net.Listen("unix", host)
	if err == nil {
		// The sandbox's user must be able to connect (write) to it.
		if err = os.Chmod(host, 0o666); err != nil {
			ln.Close()
		}
	}
	if err != nil {
		w.log.Warn("runtime socket; the instance uses HTTP only", "instance", in.id, "err", err)
		return ""
	}
	go func() {
		if err := in.api.ServeSocket(ln); err != nil {
			w.log.Debug("runtime socket stopped", "instance", in.id, "err", err)
		}
	}()
	return inside
}

// socketEnv sets the instance's socket in env, or clears a value env may
// have (the function's own, or for a fork its zygote's) when it has none.
func socketEnv(env map[string]string, socket string) {
	env[runtimeapi.SocketEnv] = socket
}
