package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	code := m.Run()
	RemoveBinary()
	os.Exit(code)
}

// A process started on a host runs in the host's namespace and is baton
// itself (kill -9 reaches it, not a wrapper); the test process reaches it
// through the bridge, not while the host is cut off, and again once
// healed. The namespaces are gone after the test.
func TestHostsAsNetworkNamespaces(t *testing.T) {
	var names []string
	t.Run("hosts", func(t *testing.T) {
		nw := NewNetwork(t)
		a, b := nw.AddHost("a"), nw.AddHost("b")
		names = []string{nw.bridgeNS, a.Namespace(), b.Namespace()}
		if a.Addr() == b.Addr() {
			t.Fatalf("two hosts share the address %s", a.Addr())
		}
		listen := net.JoinHostPort(a.Addr(), "4222")
		p := a.Start(t, "nats", "nats", "--name", "a", "--listen", listen, "--cluster-listen", a.Addr()+":6222", "--routes", "nats-route://"+a.Addr()+":6222",
			"--data-dir", t.TempDir(), "--insecure")
		dial := func(timeout time.Duration) error {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			conn, err := nw.DialContext(ctx, "tcp", listen)
			if err == nil {
				conn.Close()
			}
			return err
		}
		waitUntil(t, "the process to listen on its host's address", func() error { return dial(time.Second) })

		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.Pid()))
		if err != nil || filepath.Base(exe) != "baton" {
			t.Fatalf("the started process is %q (%v), want baton itself", exe, err)
		}
		procNS, err1 := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", p.Pid()))
		selfNS, err2 := os.Readlink("/proc/self/ns/net")
		if err1 != nil || err2 != nil || procNS == selfNS {
			t.Fatalf("the process's network namespace is %s (%v), the test's %s (%v): want another", procNS, err1, selfNS, err2)
		}
		// The connection starts on the bridge, not in the root namespace
		// (whose default route leads off the machine).
		c, err := nw.DialContext(context.Background(), "tcp", listen)
		if err != nil {
			t.Fatal(err)
		}
		local := c.LocalAddr().(*net.TCPAddr).IP.String()
		c.Close()
		if local != nw.BridgeAddr() {
			t.Fatalf("connection from %s, want from the bridge's %s", local, nw.BridgeAddr())
		}

		a.Partition()
		if err := dial(500 * time.Millisecond); err == nil {
			t.Fatal("a host cut off still answers")
		}
		a.Heal()
		waitUntil(t, "the host to answer again once healed", func() error { return dial(time.Second) })

		p.Kill()
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.Pid())); err == nil {
			// A zombie is reaped by Wait; a live process would be a leak.
			if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid())); !strings.Contains(string(st), ") Z") {
				t.Fatalf("process %d still runs after Kill", p.Pid())
			}
		}
	})
	for _, ns := range names {
		if _, err := os.Stat(filepath.Join(netnsDir, ns)); err == nil {
			t.Errorf("namespace %s is left after the test", ns)
		}
	}
}

func waitUntil(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
