package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/store"
	"github.com/baton-faas/baton/internal/store/jsstore"
	"github.com/baton-faas/baton/internal/store/natsd"
	"github.com/baton-faas/baton/internal/store/natsd/natsdtest"
	"github.com/baton-faas/baton/test/harness"
)

// natsNode is one `baton nats` process.
type natsNode struct {
	name, listen string
	args         []string
	logPath      string
	cmd          *exec.Cmd
	exited       chan struct{}
	waitErr      error
}

func (n *natsNode) start(t *testing.T, bin string) {
	t.Helper()
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	n.cmd = exec.Command(bin, n.args...)
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	// A test binary that is killed takes its NATS nodes with it.
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", n.name, err)
	}
	n.exited = make(chan struct{})
	go func() {
		n.waitErr = n.cmd.Wait()
		logf.Close()
		close(n.exited)
	}()
}

func (n *natsNode) running() bool {
	if n.exited == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// stop sends sig and waits for the process to exit.
func (n *natsNode) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	if !n.running() {
		return n.waitErr
	}
	_ = n.cmd.Process.Signal(sig)
	select {
	case <-n.exited:
		return n.waitErr
	case <-time.After(60 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.exited
		return fmt.Errorf("%s did not exit within 60s of %v", n.name, sig)
	}
}

func (n *natsNode) log() string {
	b, _ := os.ReadFile(n.logPath)
	return string(b)
}

// startNATSCluster starts three `baton nats` processes on loopback ports,
// each with the routes of all three, in the named cluster; extra, when
// set, gives a node's further flags by its name.
func startNATSCluster(t *testing.T, cluster string, extra func(name string) []string) []*natsNode {
	t.Helper()
	bin := harness.Binary(t)
	ports := natsdtest.FreePorts(t, 6)
	var routes []string
	for i := range 3 {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3+i]))
	}
	dir := t.TempDir()
	nodes := make([]*natsNode, 3)
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		n := &natsNode{name: name, listen: fmt.Sprintf("127.0.0.1:%d", ports[i]), logPath: filepath.Join(dir, name+".log")}
		n.args = []string{"nats", "--name", name, "--listen", n.listen,
			"--cluster-listen", fmt.Sprintf("127.0.0.1:%d", ports[3+i]), "--routes", strings.Join(routes, ","),
			"--cluster-name", cluster, "--data-dir", filepath.Join(dir, name)}
		if extra != nil {
			n.args = append(n.args, extra(name)...)
		}
		n.start(t, bin)
		nodes[i] = n
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			_ = n.stop(t, syscall.SIGKILL)
		}
		if t.Failed() {
			for _, n := range nodes {
				t.Logf("log of %s:\n%s", n.name, n.log())
			}
		}
	})
	return nodes
}

func natsURLs(nodes []*natsNode) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, "nats://"+n.listen)
	}
	return out
}

// eventually polls cond until it returns nil, failing the test with its
// last error after a generous deadline.
func eventually(t *testing.T, what string, cond func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := cond(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after 90s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Three `baton nats` processes form a JetStream cluster that Baton's stores
// replicate three times. kill -9 of the node the client is connected to
// loses nothing and stops nothing: what was written reads back and new
// writes succeed. The node restarts from its data directory and catches
// up, and then, with another node killed, the data read back is its copy's.
func TestNATSClusterSurvivesLossOfANode(t *testing.T) {
	nodes := startNATSCluster(t, "e2e", nil)
	for _, n := range nodes {
		eventually(t, n.name+" reports JetStream ready", func(context.Context) error {
			if !n.running() {
				return fmt.Errorf("%s exited: %v\n%s", n.name, n.waitErr, n.log())
			}
			if !strings.Contains(n.log(), "JetStream ready") {
				return errors.New("not in its log yet")
			}
			return nil
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	nc, err := natsd.Dial(ctx, natsURLs(nodes), natsd.DialOptions{Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	st, err := jsstore.Open(ctx, nc, jsstore.Options{Replicas: jsstore.AutoReplicas, MaxRecords: 1000, MaxRecordBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	backing := []string{"KV_baton_functions", "OBJ_baton_code", "BATON_RECORDS"}
	for _, name := range backing {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if r := s.CachedInfo().Config.Replicas; r != 3 {
			t.Fatalf("stream %s has %d replicas, want 3", name, r)
		}
	}

	// What a controller stores: a function's spec, its code, records.
	written := map[string]int{} // function name → version
	code := map[string][]byte{} // blob name → content
	put := func(ctx context.Context, name string, version int) error {
		digest := fmt.Sprintf("sha256:%s-v%d", name, version)
		if _, ok := code[digest]; !ok {
			data := bytes.Repeat([]byte(digest), 20000) // several object store chunks
			if err := st.PutBlob(ctx, digest, bytes.NewReader(data)); err != nil {
				return err
			}
			code[digest] = data
		}
		fn := function.Function{Name: name, Version: version, CodeDigest: digest}
		rev := uint64(0)
		if version > 1 {
			_, r, err := st.GetFunction(ctx, name)
			if err != nil {
				return err
			}
			rev = r
		}
		if _, err := st.PutFunction(ctx, fn, rev); err != nil && !(version == 1 && errors.Is(err, store.ErrConflict)) {
			// A create that timed out may have been applied; its
			// retry then finds the function.
			return err
		}
		if err := st.AppendRecord(ctx, name, []byte(fmt.Sprintf(`{"fn":%q,"v":%d}`, name, version))); err != nil {
			return err
		}
		written[name] = version
		return nil
	}
	verify := func(ctx context.Context) error {
		for name, version := range written {
			fn, _, err := st.GetFunction(ctx, name)
			if err != nil {
				return err
			}
			if fn.Version != version {
				return fmt.Errorf("function %s is at version %d, want %d", name, fn.Version, version)
			}
			r, err := st.GetBlob(ctx, fn.CodeDigest)
			if err != nil {
				return err
			}
			data, err := io.ReadAll(r)
			r.Close()
			if err != nil {
				return err
			}
			if !bytes.Equal(data, code[fn.CodeDigest]) {
				return fmt.Errorf("code %s differs from what was written", fn.CodeDigest)
			}
		}
		fns, err := st.ListFunctions(ctx)
		if err != nil {
			return err
		}
		if len(fns) != len(written) {
			return fmt.Errorf("%d functions listed, want %d", len(fns), len(written))
		}
		return nil
	}
	for _, name := range []string{"alpha", "beta", "gamma"} {
		if err := put(ctx, name, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := verify(ctx); err != nil {
		t.Fatal(err)
	}

	// kill -9 the node the client talks to.
	victim := nodeNamed(t, nodes, nc.ConnectedServerName())
	if err := victim.stop(t, syscall.SIGKILL); err == nil {
		t.Fatalf("%s exited cleanly after SIGKILL", victim.name)
	}
	killed := time.Now()
	t.Logf("killed %s (the client's server)", victim.name)
	// How long each step waits is logged (for docs/CLUSTER.md), not judged.
	eventually(t, "reads after the loss of a node", verify)
	t.Logf("all reads succeeded %s after the kill", time.Since(killed).Round(time.Millisecond))
	eventually(t, "a new function after the loss of a node", func(ctx context.Context) error { return put(ctx, "delta", 1) })
	eventually(t, "an update after the loss of a node", func(ctx context.Context) error { return put(ctx, "alpha", 2) })
	t.Logf("writes succeeded %s after the kill", time.Since(killed).Round(time.Millisecond))
	eventually(t, "reads after writes with a node down", verify)

	// The node restarts from its data directory and catches up.
	victim.start(t, harness.Binary(t))
	eventually(t, "every replica current after the restart", func(ctx context.Context) error {
		return replicasCurrent(ctx, js, backing)
	})

	// Now lose another node: the quorum left includes the restarted node,
	// so what it caught up on must be there.
	var second *natsNode
	for _, n := range nodes {
		if n != victim {
			second = n
			break
		}
	}
	if err := second.stop(t, syscall.SIGKILL); err == nil {
		t.Fatalf("%s exited cleanly after SIGKILL", second.name)
	}
	killed = time.Now()
	t.Logf("killed %s after %s caught up", second.name, victim.name)
	eventually(t, "reads with the restarted node in the quorum", verify)
	t.Logf("all reads succeeded %s after the kill", time.Since(killed).Round(time.Millisecond))
	eventually(t, "a write with the restarted node in the quorum", func(ctx context.Context) error { return put(ctx, "epsilon", 1) })
	t.Logf("writes succeeded %s after the kill", time.Since(killed).Round(time.Millisecond))
	records, err := st.RecentRecords(ctx, 100)
	if err != nil {
		t.Fatalf("records: %v", err)
	}
	if len(records) < 6 {
		t.Errorf("%d records read back, want at least the 6 appended", len(records))
	}

	// SIGTERM stops the nodes left gracefully.
	for _, n := range nodes {
		if !n.running() {
			continue
		}
		if err := n.stop(t, syscall.SIGTERM); err != nil {
			t.Errorf("%s after SIGTERM: %v", n.name, err)
		}
		if !strings.Contains(n.log(), "nats node stopped") {
			t.Errorf("%s did not log its stop", n.name)
		}
	}
}

func nodeNamed(t *testing.T, nodes []*natsNode, name string) *natsNode {
	t.Helper()
	for _, n := range nodes {
		if n.name == name {
			return n
		}
	}
	t.Fatalf("connected to %q, not one of the nodes", name)
	return nil
}

// replicasCurrent checks that every stream has a leader and every replica
// is current with no lag.
func replicasCurrent(ctx context.Context, js jetstream.JetStream, streams []string) error {
	for _, name := range streams {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return err
		}
		ci := s.CachedInfo().Cluster
		if ci == nil || ci.Leader == "" {
			return fmt.Errorf("stream %s has no leader", name)
		}
		if len(ci.Replicas) != 2 {
			return fmt.Errorf("stream %s has %d followers, want 2", name, len(ci.Replicas))
		}
		for _, p := range ci.Replicas {
			if !p.Current || p.Offline || p.Lag > 0 {
				return fmt.Errorf("stream %s: replica %s current=%v offline=%v lag=%d", name, p.Name, p.Current, p.Offline, p.Lag)
			}
		}
	}
	return nil
}

// `baton nats` refuses bad flags with a non-zero exit and a message that
// names the flag.
func TestNATSCommandRefusesBadFlags(t *testing.T) {
	bin := harness.Binary(t)
	dir := t.TempDir()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--data-dir", dir}, "--name"},
		{[]string{"--name", "n1"}, "--data-dir"},
		{[]string{"--name", "n 1", "--data-dir", dir}, "--name"},
		{[]string{"--name", "n1", "--data-dir", dir, "--routes", "http://10.0.0.1:6222"}, "--routes"},
		{[]string{"--name", "n1", "--data-dir", dir, "--listen", "4222"}, "--listen"},
		{[]string{"--name", "n1", "--data-dir", dir, "--cluster-listen", "0.0.0.0:6222"}, "--cluster-listen"},
		{[]string{"--name", "n1", "--data-dir", dir, "--tls-cert", "x.pem"}, "--tls-key"},
		{[]string{"--name", "n1", "--data-dir", dir, "--user", "baton"}, "--user"},
		{[]string{"--name", "n1", "--data-dir", dir, "--log-level", "loud"}, "--log-level"},
	}
	for _, tc := range cases {
		cmd := exec.Command(bin, append([]string{"nats"}, tc.args...)...)
		cmd.Env = append(os.Environ(), "BATON_NATS_PASSWORD=")
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Errorf("baton nats %v: %v, want a non-zero exit\n%s", tc.args, err, out)
			continue
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("baton nats %v said %q, want a message naming %s", tc.args, out, tc.want)
		}
	}
}
