package harness

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Hosts as network namespaces. A Network is a bridge in a namespace of its
// own; every Host is one more namespace, joined to the bridge by a veth
// pair and addressed from the Network's 10.x.0.0/16. Nothing is added to
// the root namespace (no address, route or link), so no traffic can leave
// the machine and two networks never see each other, whatever their
// subnets. The test process reaches the hosts through Network.DialContext,
// which opens its sockets inside the bridge's namespace.

// netnsPrefix starts the names of every namespace this package creates;
// the pid after it lets a later run remove what a killed run left.
const netnsPrefix = "batont"

// netnsDir is where ip netns keeps its named namespaces.
const netnsDir = "/var/run/netns"

// networks counts the networks of this process: it makes their names and
// subnets distinct.
var networks atomic.Int32

// sweepOnce removes, once per process, namespaces left by test processes
// that no longer run (a test binary killed by its -timeout skips its
// cleanups).
var sweepOnce sync.Once

// Network is a bridge that a test's hosts are plugged into.
type Network struct {
	tb       testing.TB
	prefix   string // names of this network's namespaces start with it
	subnet   int    // the x of 10.x.0.0/16
	bridgeNS string

	mu    sync.Mutex
	hosts []*Host
}

// Host is a network namespace on a Network, standing for one machine.
type Host struct {
	Name   string
	net    *Network
	ns     string
	addr   string
	brPort string // the veth end on the bridge, in the bridge's namespace
}

// NewNetwork creates an empty network for the test; it and its hosts are
// removed when the test ends. It skips the test when network namespaces
// cannot be made here (not root, no ip command).
func NewNetwork(tb testing.TB) *Network {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("hosts as network namespaces need root (ip netns add, veth pairs, a bridge)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		tb.Skip("hosts as network namespaces need the ip command (iproute2), not found in PATH")
	}
	if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err != nil {
		tb.Skipf("ip netns is unavailable here: %v: %s", err, strings.TrimSpace(string(out)))
	}
	sweepOnce.Do(sweepStale)
	n := int(networks.Add(1))
	nw := &Network{
		tb:     tb,
		prefix: fmt.Sprintf("%s%dn%d", netnsPrefix, os.Getpid(), n),
		// Distinct within the process; another process's networks are
		// in namespaces of their own, so overlap between processes is
		// harmless.
		subnet: 16 + (os.Getpid()+n)%224,
	}
	nw.bridgeNS = nw.prefix + "br"
	if out, err := exec.Command("ip", "netns", "add", nw.bridgeNS).CombinedOutput(); err != nil {
		tb.Skipf("cannot create a network namespace (ip netns add): %v: %s", err, strings.TrimSpace(string(out)))
	}
	// Registered first, so it runs last: after the hosts' processes
	// ended and their namespaces were removed.
	tb.Cleanup(func() { deleteNS(tb, nw.bridgeNS) })
	nw.ip("-n", nw.bridgeNS, "link", "set", "lo", "up")
	nw.ip("-n", nw.bridgeNS, "link", "add", "br0", "type", "bridge")
	nw.ip("-n", nw.bridgeNS, "addr", "add", nw.BridgeAddr()+"/16", "dev", "br0")
	nw.ip("-n", nw.bridgeNS, "link", "set", "br0", "up")
	return nw
}

// BridgeAddr is the bridge's own address, the one the test process's
// connections (DialContext) come from.
func (nw *Network) BridgeAddr() string { return fmt.Sprintf("10.%d.0.1", nw.subnet) }

// AddHost creates a host: a namespace with loopback up and eth0 on the
// bridge, with the next free address.
func (nw *Network) AddHost(name string) *Host {
	nw.tb.Helper()
	nw.mu.Lock()
	i := len(nw.hosts) + 1
	h := &Host{Name: name, net: nw, ns: fmt.Sprintf("%sh%d", nw.prefix, i),
		addr: fmt.Sprintf("10.%d.%d.%d", nw.subnet, 1+i/250, 1+i%250), brPort: fmt.Sprintf("p%d", i)}
	nw.hosts = append(nw.hosts, h)
	nw.mu.Unlock()
	nw.ip("netns", "add", h.ns)
	nw.tb.Cleanup(func() { deleteNS(nw.tb, h.ns) })
	nw.ip("-n", h.ns, "link", "set", "lo", "up")
	// Created in the bridge's namespace with its peer placed straight
	// into the host's: no name is ever taken in the root namespace.
	nw.ip("-n", nw.bridgeNS, "link", "add", h.brPort, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
	nw.ip("-n", nw.bridgeNS, "link", "set", h.brPort, "master", "br0")
	nw.ip("-n", nw.bridgeNS, "link", "set", h.brPort, "up")
	nw.ip("-n", h.ns, "addr", "add", h.addr+"/16", "dev", "eth0")
	nw.ip("-n", h.ns, "link", "set", "eth0", "up")
	return h
}

// ip runs the ip command, failing the test when it fails.
func (nw *Network) ip(args ...string) {
	nw.tb.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		nw.tb.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
}

// DialContext connects from the bridge's namespace, as a machine on the
// hosts' network would. addr must hold an IP address, not a name: the
// socket is made in the calling goroutine only for a single address.
func (nw *Network) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s in network %s: %w", addr, nw.prefix, err)
	}
	if net.ParseIP(host) == nil {
		return nil, fmt.Errorf("dial %s in network %s: want an IP address, not a name", addr, nw.prefix)
	}
	var conn net.Conn
	err = inNamespace(nw.bridgeNS, func() error {
		var d net.Dialer
		var derr error
		conn, derr = d.DialContext(ctx, network, addr)
		return derr
	})
	return conn, err
}

// HTTPClient returns an HTTP client whose connections start in the
// bridge's namespace.
func (nw *Network) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: nw.DialContext, MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second,
	}}
}

// inNamespace runs fn on an OS thread switched into the named network
// namespace; sockets fn creates belong to that namespace for good. Only
// this thread switches: the rest of the process stays where it was.
func inNamespace(ns string, fn func() error) error {
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open this thread's network namespace: %w", err)
	}
	defer self.Close()
	target, err := os.Open(filepath.Join(netnsDir, ns))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open network namespace %s: %w", ns, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace %s: %w", ns, err)
	}
	defer func() {
		// A thread that cannot switch back stays locked: it ends with
		// this goroutine instead of running others in the wrong place.
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return fn()
}

// Addr is the host's IP address.
func (h *Host) Addr() string { return h.addr }

// Namespace is the name of the host's network namespace (for ip netns
// exec).
func (h *Host) Namespace() string { return h.ns }

// Start runs the baton binary with args inside the host's namespace, like
// StartProc. ip netns exec execs baton in its own process, so the Proc's
// pid is baton's: Kill is kill -9 of baton itself, and the parent-death
// signal survives the exec.
func (h *Host) Start(tb testing.TB, name string, args ...string) *Proc {
	tb.Helper()
	return startProc(tb, name, exec.Command("ip", append([]string{"netns", "exec", h.ns, Binary(tb)}, args...)...))
}

// Partition cuts the host's cable: its veth end on the bridge goes down,
// so packets to and from the host are dropped while the host keeps its
// address and its connections (they time out, as over a real cut link).
func (h *Host) Partition() {
	h.net.tb.Helper()
	h.net.ip("-n", h.net.bridgeNS, "link", "set", h.brPort, "down")
}

// Heal plugs the cable back in.
func (h *Host) Heal() {
	h.net.tb.Helper()
	h.net.ip("-n", h.net.bridgeNS, "link", "set", h.brPort, "up")
}

// deleteNS removes a named namespace (its veth ends go with it), reporting
// a failure but not stopping other cleanups.
func deleteNS(tb testing.TB, ns string) {
	if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
		tb.Errorf("remove network namespace %s: %v: %s", ns, err, strings.TrimSpace(string(out)))
	}
}

// sweepStale removes namespaces whose creator process is gone. Names are
// netnsPrefix, the creator's pid, then "n".
func sweepStale() {
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), netnsPrefix)
		if !ok {
			continue
		}
		pidText, _, ok := strings.Cut(rest, "n")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(filepath.Join("/proc", pidText)); err == nil {
			continue // its test may still run
		}
		_ = exec.Command("ip", "netns", "del", e.Name()).Run()
	}
}
