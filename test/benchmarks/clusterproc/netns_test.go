package clusterproc

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/test/harness"
)

// The netns variants of BenchmarkWarmHop and BenchmarkTraceReplay: every
// process (each NATS node, controller and worker, `baton server`, and
// the `baton bench` / `baton replay` client) runs on a host of its own, a
// network namespace joined to a bridge by a veth pair (test/harness), so
// every request crosses veth links and a bridge instead of loopback. The
// hosts still share this machine's kernel and cores: the figures add the
// virtual network's cost, not a physical one.

// Ports every host uses on its own address.
const (
	netnsNATSPort   = "4222"
	netnsRoutePort  = "6222"
	netnsAPIPort    = "8080"
	netnsWorkerPort = "7070"
)

// netRig is a cluster on network-namespace hosts, with three NATS nodes
// (see newNetRig) where the loopback rig has one in the benchmark's
// process.
type netRig struct {
	b         *testing.B
	nw        *harness.Network
	natsURL   string
	caDir     string
	tokenFile string
	http      *http.Client
}

// netNode is a controller or worker on its host.
type netNode struct {
	id   string
	host *harness.Host
	port string
	p    *harness.Proc
}

func (n *netNode) url() string { return "http://" + net.JoinHostPort(n.host.Addr(), n.port) }

// newNetRig makes the network, starts three NATS nodes, each on a host of
// its own, and waits until their JetStream is ready. It skips the benchmark when
// network namespaces cannot be made (not root, no ip command).
func newNetRig(b *testing.B) *netRig {
	b.Helper()
	nw := harness.NewNetwork(b)
	r := &netRig{b: b, nw: nw, caDir: filepath.Join(b.TempDir(), "ca"),
		tokenFile: filepath.Join(b.TempDir(), "api-token"), http: nw.HTTPClient(time.Minute)}
	b.Cleanup(r.http.CloseIdleConnections)

	// Three nodes, like test/multihost: `baton nats` always runs JetStream
	// in cluster mode, which will not start without routes, and a node
	// routed only to itself waits for its peers for ever.
	var routes, urls []string
	var hosts []*harness.Host
	for i := range 3 {
		h := nw.AddHost(fmt.Sprintf("nats%d", i+1))
		hosts = append(hosts, h)
		urls = append(urls, "nats://"+net.JoinHostPort(h.Addr(), netnsNATSPort))
		routes = append(routes, "nats-route://"+net.JoinHostPort(h.Addr(), netnsRoutePort))
	}
	r.natsURL = strings.Join(urls, ",")
	var procs []*harness.Proc
	for _, h := range hosts {
		// Without TLS or login (--insecure): the network is private to
		// the benchmark, and the loopback rig's NATS has neither.
		procs = append(procs, h.Start(b, h.Name, "nats", "--name", h.Name,
			"--listen", net.JoinHostPort(h.Addr(), netnsNATSPort),
			"--cluster-listen", net.JoinHostPort(h.Addr(), netnsRoutePort), "--routes", strings.Join(routes, ","),
			"--cluster-name", "netnsbench", "--data-dir", b.TempDir(), "--insecure"))
	}
	for i, p := range procs {
		waitFor(b, hosts[i].Name+" to report JetStream ready", func() (bool, string) {
			if exited, err := p.Exited(); exited {
				b.Fatalf("NATS node %s exited during its start (%v):\n%s", hosts[i].Name, err, p.Logs())
			}
			return strings.Contains(p.Logs(), "JetStream ready"), "no JetStream ready in its log"
		})
	}

	run(b, "cluster", "init", "--dir", r.caDir)
	if err := os.WriteFile(r.tokenFile, []byte(token+"\n"), 0o600); err != nil {
		r.b.Fatal(err)
	}
	return r
}

// issue writes a node's certificate and returns its directory.
func (r *netRig) issue(id, role, host string) string {
	r.b.Helper()
	dir := filepath.Join(r.b.TempDir(), id)
	args := []string{"cluster", "issue", "--ca", r.caDir, "--out", dir, "--id", id, "--role", role}
	if host != "" {
		args = append(args, "--host", host)
	}
	run(r.b, args...)
	return dir
}

// controller starts a controller on a new host, with the loopback rig's
// flags.
func (r *netRig) controller(id string) *netNode {
	r.b.Helper()
	h := r.nw.AddHost(id)
	n := &netNode{id: id, host: h, port: netnsAPIPort}
	n.p = h.Start(r.b, id, "controller", "--nats", r.natsURL, "--listen", net.JoinHostPort(h.Addr(), n.port),
		"--pki", r.issue(id, "controller", ""), "--data-dir", r.b.TempDir(), "--log-level", "warn",
		"--token-file", r.tokenFile)
	return n
}

// worker starts a worker on a new host, its certificate naming the host's
// address (controllers dial it there).
func (r *netRig) worker(id string, extra ...string) *netNode {
	r.b.Helper()
	h := r.nw.AddHost(id)
	n := &netNode{id: id, host: h, port: netnsWorkerPort}
	args := []string{"worker", "--nats", r.natsURL, "--listen", net.JoinHostPort(h.Addr(), n.port),
		"--pki", r.issue(id, "worker", h.Addr()), "--data-dir", r.b.TempDir(), "--log-level", "warn"}
	n.p = h.Start(r.b, id, append(args, extra...)...)
	return n
}

// server starts `baton server` on a new host, with the rig's token file
// so that the same client token works. The loopback baseline
// (harness.Start) logs at the default level; so does this one.
func (r *netRig) server(extra ...string) *netNode {
	r.b.Helper()
	h := r.nw.AddHost("server")
	n := &netNode{id: "server", host: h, port: netnsAPIPort}
	args := []string{"server", "--listen", net.JoinHostPort(h.Addr(), n.port), "--data-dir", r.b.TempDir(),
		"--token-file", r.tokenFile}
	n.p = h.Start(r.b, "server", append(args, extra...)...)
	return n
}

// client of one node's API, its connections made from the bridge's
// namespace (the test process's way onto the network).
func (r *netRig) client(n *netNode) *client.Client {
	r.b.Helper()
	c, err := client.New(n.url(), r.http, client.WithToken(token))
	if err != nil {
		r.b.Fatal(err)
	}
	return c
}

// waitServes waits until n's API answers, failing at once if n exited.
func (r *netRig) waitServes(n *netNode) *client.Client {
	r.b.Helper()
	c := r.client(n)
	waitFor(r.b, n.id+" to serve", func() (bool, string) {
		if exited, err := n.p.Exited(); exited {
			r.b.Fatalf("%s exited during its start (%v):\n%s", n.id, err, n.p.Logs())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Health(ctx)
		return err == nil, fmt.Sprint(err)
	})
	return c
}

// batonCmd is the baton CLI with args, run on host in, or here when in is
// nil. ip netns exec execs baton in the host's namespace (and keeps the
// working directory and environment).
func batonCmd(b *testing.B, in *harness.Host, args ...string) *exec.Cmd {
	b.Helper()
	if in == nil {
		return exec.Command(harness.Binary(b), args...)
	}
	return exec.Command("ip", append([]string{"netns", "exec", in.Namespace(), harness.Binary(b)}, args...)...)
}

// BenchmarkWarmHopNetns is BenchmarkWarmHop with every process on a host
// of its own: `baton server`, three NATS nodes, one worker, two controllers,
// and the `baton bench` client on an eighth host. Same function, sandbox,
// loads and pass order as the loopback benchmark.
func BenchmarkWarmHopNetns(b *testing.B) {
	sbArgs := hopSandbox(b)
	requests := envInt(b, "BATON_HOP_REQUESTS", 2000)
	duration := envDuration(b, "BATON_HOP_DURATION", 15e9)

	r := newNetRig(b)
	srv := r.server(sbArgs...)
	srvClient := r.waitServes(srv)
	deploy(b, srvClient, "hop")
	invokeOK(b, srvClient, "hop")

	r.worker("w1", sbArgs...)
	ctrls := []*netNode{r.controller("c1"), r.controller("c2")}
	for _, c := range ctrls {
		r.waitServes(c)
	}
	waitWorkers(b, r.client(ctrls[0]), 1)
	deploy(b, r.client(ctrls[0]), "hop")
	own := r.waitOwner(ctrls, "hop")
	owner, other := ctrls[0], ctrls[1]
	if own == other.id {
		owner, other = other, owner
	}
	b.Logf("hop is owned by %s; %s forwards to it", owner.id, other.id)
	at := r.nw.AddHost("client")

	paths := []hopPath{
		{"baton server", srv.url(), token},
		{"controller (owner) → worker", owner.url(), token},
		{"other controller → owner → worker", other.url(), token},
	}
	b.ResetTimer()
	measureHops(b, at, paths, requests, duration)
	b.StopTimer()
}

// waitOwner waits until both controllers name the same owner of fn, then
// until fn answers through each, and returns the owner.
func (r *netRig) waitOwner(ctrls []*netNode, fn string) string {
	r.b.Helper()
	var owner string
	waitFor(r.b, "the controllers to agree on "+fn+"'s owner", func() (bool, string) {
		var seen []string
		for _, c := range ctrls {
			o, err := owners(r.client(c), []string{fn})
			if err != nil {
				return false, c.id + ": " + err.Error()
			}
			seen = append(seen, o[fn])
		}
		owner = seen[0]
		return seen[0] == seen[1], fmt.Sprintf("%s vs %s", seen[0], seen[1])
	})
	for _, c := range ctrls {
		invokeOK(r.b, r.client(c), fn)
	}
	return owner
}

// BenchmarkTraceReplayNetns is BenchmarkTraceReplay with every process on
// a host of its own: `baton server`, three NATS nodes, one controller,
// three workers, and the `baton replay` client on a ninth host. Same trace,
// flags and order (server first) as the loopback benchmark.
func BenchmarkTraceReplayNetns(b *testing.B) {
	sb := []string{"--sandbox", "fake", "--fake-start-latency", "40ms"}
	// ip netns exec keeps the working directory, but an absolute path
	// does not depend on it.
	dir, err := filepath.Abs(traceDir)
	if err != nil {
		b.Fatal(err)
	}
	args := replayArgs(b, dir)

	r := newNetRig(b)
	srv := r.server(sb...)
	r.waitServes(srv)
	for _, id := range []string{"w1", "w2", "w3"} {
		r.worker(id, sb...)
	}
	ctrl := r.controller("c1")
	waitWorkers(b, r.waitServes(ctrl), 3)
	at := r.nw.AddHost("client")

	b.ResetTimer()
	server := replayDeployRetried(b, at, srv.url(), args)
	cluster := replayDeployRetried(b, at, ctrl.url(), args)
	b.StopTimer()
	reportReplay(b, server, cluster)
}

// replayDeployRetried runs `baton replay` from host at, again (up to three
// times) when it failed while deploying its functions, before any
// invocation was sent. Against three NATS nodes a deploy now and then
// fails with "store blob …: read back: … not found" (the controller's
// read-after-write check of the code it stored); every such failure is
// logged.
func replayDeployRetried(b *testing.B, at *harness.Host, url string, args []string) replaySummary {
	b.Helper()
	for attempt := 1; ; attempt++ {
		s, err := replayTry(b, at, url, token, args)
		if err == nil {
			return s
		}
		if attempt == 3 || !strings.Contains(err.Error(), "baton: deploy ") {
			b.Fatal(err)
		}
		b.Logf("replay attempt %d failed while deploying, before sending; again: %v", attempt, err)
	}
}
