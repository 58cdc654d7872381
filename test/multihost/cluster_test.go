package multihost

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/test/harness"
)

// settle bounds how long a condition may take to hold on a busy 2-core
// host: generous, because a deadline that is hit is a failure, and never a
// measurement.
const settle = 60 * time.Second

const (
	natsPort   = "4222"
	routePort  = "6222"
	workerPort = "7070"
	apiPort    = "8080"
)

// node is one baton process on its host; restart runs it again with the
// same flags and data directory.
type node struct {
	id   string
	host *harness.Host
	args []string
	proc *harness.Proc
	runs int
}

func (n *node) start(t *testing.T) {
	t.Helper()
	n.runs++
	name := n.id
	if n.runs > 1 {
		name = fmt.Sprintf("%s-run%d", n.id, n.runs)
	}
	n.proc = n.host.Start(t, name, n.args...)
}

func (n *node) running() bool {
	if n.proc == nil {
		return false
	}
	exited, _ := n.proc.Exited()
	return !exited
}

// cluster is one test's cluster.
type cluster struct {
	t           *testing.T
	nw          *harness.Network
	nats        []*node
	controllers []*node
	workers     []*node
	natsURLs    []string
	token       string
	http        *http.Client
}

// fakeSandboxes are the workers' sandbox flags unless a test asks for
// others: fake sandboxes that start in 20 ms and echo every event.
var fakeSandboxes = []string{"--sandbox", "fake", "--fake-start-latency", "20ms"}

// newCluster starts three NATS nodes, three workers and two controllers,
// each on a host of its own, and waits until every controller serves and
// lists the five controller and worker nodes. Controllers and workers
// start all at once when together is set, else one controller first;
// controllerArgs are added to every controller's flags. The workers run
// fake sandboxes.
func newCluster(t *testing.T, together bool, controllerArgs ...string) *cluster {
	t.Helper()
	return newClusterWith(t, together, fakeSandboxes, controllerArgs...)
}

// newClusterWith is newCluster whose workers get sandboxArgs (their
// --sandbox flags) instead of fake sandboxes.
func newClusterWith(t *testing.T, together bool, sandboxArgs []string, controllerArgs ...string) *cluster {
	t.Helper()
	nw := harness.NewNetwork(t)
	bin := harness.Binary(t)
	c := &cluster{t: t, nw: nw, http: nw.HTTPClient(90 * time.Second)}
	t.Cleanup(c.http.CloseIdleConnections)

	var routes []string
	for i := range 3 {
		h := nw.AddHost(fmt.Sprintf("nats%d", i+1))
		c.nats = append(c.nats, &node{id: h.Name, host: h})
		c.natsURLs = append(c.natsURLs, "nats://"+net.JoinHostPort(h.Addr(), natsPort))
		routes = append(routes, "nats-route://"+net.JoinHostPort(h.Addr(), routePort))
	}
	for _, n := range c.nats {
		// Without TLS or login: the hosts' network is private to the
		// test, and controllers and workers do not speak NATS TLS yet.
		n.args = []string{"nats", "--name", n.id, "--listen", net.JoinHostPort(n.host.Addr(), natsPort),
			"--cluster-listen", net.JoinHostPort(n.host.Addr(), routePort), "--routes", strings.Join(routes, ","),
			"--cluster-name", "multihost", "--data-dir", t.TempDir(), "--insecure"}
		n.start(t)
	}

	caDir := filepath.Join(t.TempDir(), "ca")
	batonCLI(t, bin, "cluster", "init", "--dir", caDir)
	tokenFile := filepath.Join(t.TempDir(), "api-token")
	c.token = randomHex(t)
	if err := os.WriteFile(tokenFile, []byte(c.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	natsFlag := strings.Join(c.natsURLs, ",")
	for i := range 3 {
		id := fmt.Sprintf("w%d", i+1)
		h := nw.AddHost(id)
		pki := issue(t, bin, caDir, id, "worker", h.Addr())
		c.workers = append(c.workers, &node{id: id, host: h, args: append([]string{"worker", "--nats", natsFlag,
			"--listen", net.JoinHostPort(h.Addr(), workerPort), "--pki", pki, "--data-dir", t.TempDir()},
			sandboxArgs...)})
	}
	for i := range 2 {
		id := fmt.Sprintf("c%d", i+1)
		h := nw.AddHost(id)
		pki := issue(t, bin, caDir, id, "controller", "")
		c.controllers = append(c.controllers, &node{id: id, host: h, args: append([]string{"controller", "--nats", natsFlag,
			"--listen", net.JoinHostPort(h.Addr(), apiPort), "--pki", pki, "--data-dir", t.TempDir(),
			"--token-file", tokenFile}, controllerArgs...)})
	}

	// Stores and membership need JetStream's meta leader: controllers
	// and workers start once every NATS node has seen one elected.
	for _, n := range c.nats {
		waitFor(t, n.id+" to report JetStream ready", func() error {
			if !n.running() {
				t.Fatalf("NATS node %s exited during its start:\n%s", n.id, n.proc.Logs())
			}
			if !strings.Contains(n.proc.Logs(), "JetStream ready") {
				return fmt.Errorf("no JetStream ready in its log")
			}
			return nil
		})
	}
	if !together {
		// One controller first creates the buckets and streams, so
		// that the scenario meets its own failure and not a start-up
		// race.
		c.controllers[0].start(t)
		c.waitControllerServes(c.controllers[0])
	}
	for _, n := range c.workers {
		n.start(t)
	}
	for _, n := range c.controllers {
		if n.proc == nil {
			n.start(t)
		}
	}
	for _, n := range c.controllers {
		c.waitControllerServes(n)
	}
	for _, n := range c.workers {
		if !n.running() {
			t.Fatalf("worker %s exited during the start:\n%s", n.id, n.proc.Logs())
		}
	}
	c.waitMembers(c.liveIDs()...)
	return c
}

// batonCLI runs a baton command in the root namespace (no network needed).
func batonCLI(t *testing.T, bin string, args ...string) {
	t.Helper()
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("baton %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func issue(t *testing.T, bin, caDir, id, role, host string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), id)
	args := []string{"cluster", "issue", "--ca", caDir, "--out", dir, "--id", id, "--role", role}
	if host != "" {
		args = append(args, "--host", host)
	}
	batonCLI(t, bin, args...)
	return dir
}

func randomHex(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// url is a controller's API address.
func (c *cluster) url(n *node) string {
	return "http://" + net.JoinHostPort(n.host.Addr(), apiPort)
}

// client talks to the given controllers, failing over between them in
// order.
func (c *cluster) client(ns ...*node) *client.Client {
	c.t.Helper()
	var urls []string
	for _, n := range ns {
		urls = append(urls, c.url(n))
	}
	cl, err := client.New(strings.Join(urls, ","), c.http, client.WithToken(c.token))
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

func (c *cluster) waitControllerServes(n *node) {
	c.t.Helper()
	cl := c.client(n)
	waitFor(c.t, "controller "+n.id+" to serve", func() error {
		if !n.running() {
			c.t.Fatalf("controller %s exited during its start:\n%s", n.id, n.proc.Logs())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := cl.Health(ctx)
		return err
	})
}

// liveIDs are the controllers and workers whose process runs.
func (c *cluster) liveIDs() []string {
	var ids []string
	for _, n := range slices.Concat(c.controllers, c.workers) {
		if n.running() {
			ids = append(ids, n.id)
		}
	}
	slices.Sort(ids)
	return ids
}

// liveControllers are the controllers whose process runs.
func (c *cluster) liveControllers() []*node {
	var out []*node
	for _, n := range c.controllers {
		if n.running() {
			out = append(out, n)
		}
	}
	return out
}

// waitMembers waits until every live controller lists exactly the nodes
// ids in GET /v1/nodes.
func (c *cluster) waitMembers(ids ...string) {
	c.t.Helper()
	for _, ctrl := range c.liveControllers() {
		waitFor(c.t, fmt.Sprintf("controller %s to list the nodes %v", ctrl.id, ids), func() error {
			return c.listsMembers(ctrl, ids)
		})
	}
}

// checkMembers is waitMembers that fails the test but lets it go on, and
// gives the membership agreeWithin (its TTL is 3 s).
func (c *cluster) checkMembers(ids ...string) {
	c.t.Helper()
	err := poll(agreeWithin, func() error {
		for _, ctrl := range c.liveControllers() {
			if err := c.listsMembers(ctrl, ids); err != nil {
				return fmt.Errorf("controller %s: %w", ctrl.id, err)
			}
		}
		return nil
	})
	if err != nil {
		c.t.Errorf("the controllers do not list the nodes %v after %s: %v", ids, agreeWithin, err)
	}
}

func (c *cluster) listsMembers(ctrl *node, ids []string) error {
	ids = slices.Sorted(slices.Values(ids))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nodes, err := c.client(ctrl).Nodes(ctx)
	if err != nil {
		return err
	}
	var got []string
	for _, n := range nodes {
		got = append(got, n.ID)
	}
	slices.Sort(got)
	if !slices.Equal(got, ids) {
		return fmt.Errorf("lists %v", got)
	}
	return nil
}

// bridgeDialer lets a NATS client in the test process reach the hosts.
type bridgeDialer struct{ nw *harness.Network }

func (d bridgeDialer) Dial(network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.nw.DialContext(ctx, network, addr)
}

// streamInfo is where a JetStream stream lives.
type streamInfo struct {
	leader   string
	replicas int
}

func (s streamInfo) String() string { return fmt.Sprintf("%s (R%d)", s.leader, s.replicas) }

// streams says where each JetStream stream lives (a key-value bucket is
// the stream KV_<bucket>).
func (c *cluster) streams() (map[string]streamInfo, error) {
	nc, err := nats.Connect(strings.Join(c.natsURLs, ","), nats.SetCustomDialer(bridgeDialer{c.nw}), nats.Name(c.t.Name()))
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string]streamInfo{}
	list := js.ListStreams(ctx)
	for info := range list.Info() {
		if info.Cluster != nil {
			out[info.Config.Name] = streamInfo{leader: info.Cluster.Leader, replicas: info.Config.Replicas}
		}
	}
	return out, list.Err()
}

// spec is the functions' spec: fake sandboxes echo every event whatever
// the runtime, and "provided" needs no interpreter on the worker. The long
// idle timeout keeps warm instances for the whole test, so that what runs
// at the end is what the scenario left, not what expired.
func spec() apiv1.FunctionSpec {
	return apiv1.FunctionSpec{Runtime: "provided", Handler: "unused", IdleTimeoutSeconds: 900}
}

// code is a function's zip archive; version changes its bytes (and so
// its digest).
func code(t *testing.T, version int) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	hdr := &zip.FileHeader{Name: "bootstrap", Method: zip.Deflate}
	hdr.SetMode(0o755)
	w, err := zw.CreateHeader(hdr)
	if err == nil {
		_, err = fmt.Fprintf(w, "#!/bin/sh\n# version %d; fake sandboxes never run it\nexit 1\n", version)
	}
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// deployed is what the test deployed: the functions that must never be
// lost, with their versions and code digests.
type deployed map[string]apiv1.Function

// deploy deploys a function through cl, retrying while the cluster
// cannot take it (a NATS leader election); every attempt's error is
// logged.
func (d deployed) deploy(t *testing.T, cl *client.Client, name string, version int) {
	t.Helper()
	waitFor(t, "deploy "+name, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		fn, err := cl.Deploy(ctx, name, client.DeployRequest{FunctionSpec: spec(), Code: code(t, version)})
		if err != nil {
			t.Logf("deploy %s: %v", name, err)
			return err
		}
		d[name] = fn
		return nil
	})
}

// checkNothingLost checks through every live controller that each deployed
// function is there at the version and code deployed, and nothing else.
func (c *cluster) checkNothingLost(d deployed) {
	c.t.Helper()
	for _, ctrl := range c.liveControllers() {
		cl := c.client(ctrl)
		waitFor(c.t, "controller "+ctrl.id+" to list every deployed function", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			fns, err := cl.List(ctx)
			if err != nil {
				return err
			}
			got := map[string]apiv1.Function{}
			for _, f := range fns {
				got[f.Name] = f
			}
			if len(got) != len(d) {
				return fmt.Errorf("lists %d functions, want %d", len(got), len(d))
			}
			for name, want := range d {
				f, ok := got[name]
				if !ok {
					return fmt.Errorf("function %s is missing", name)
				}
				if f.Version != want.Version || f.CodeDigest != want.CodeDigest {
					return fmt.Errorf("function %s is at version %d code %s, want version %d code %s",
						name, f.Version, f.CodeDigest, want.Version, want.CodeDigest)
				}
			}
			return nil
		})
	}
}

// running is what runs where: the instances each worker reports in the
// membership and the instances each controller routes to.
type running struct {
	onWorker map[string]int                 // worker id → instances it reports
	routed   map[string]map[string][]string // controller id → worker id → instance ids
	// owners is, per function, the owner each controller names;
	// routers is, per function, the controllers that say they serve it.
	owners  map[string]map[string]string // function → controller id → owner named
	routers map[string][]string
}

func (r running) String() string {
	var b strings.Builder
	ws := make([]string, 0, len(r.onWorker))
	for w := range r.onWorker {
		ws = append(ws, w)
	}
	slices.Sort(ws)
	for _, w := range ws {
		fmt.Fprintf(&b, "%s runs %d;", w, r.onWorker[w])
		for _, ctrl := range sortedKeys(r.routed) {
			fmt.Fprintf(&b, " %s routes %d", ctrl, len(r.routed[ctrl][w]))
		}
		b.WriteString("; ")
	}
	for _, ctrl := range sortedKeys(r.routed) {
		for w, ids := range r.routed[ctrl] {
			if _, ok := r.onWorker[w]; !ok {
				fmt.Fprintf(&b, "%s routes %d to %s, not a member; ", ctrl, len(ids), w)
			}
		}
	}
	return strings.TrimSuffix(b.String(), "; ")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// observe reads what runs where through the public API.
func (c *cluster) observe(ctx context.Context) (running, error) {
	r := running{onWorker: map[string]int{}, routed: map[string]map[string][]string{},
		owners: map[string]map[string]string{}, routers: map[string][]string{}}
	ctrls := c.liveControllers()
	if len(ctrls) == 0 {
		return r, fmt.Errorf("no controller runs")
	}
	nodes, err := c.client(ctrls[0]).Nodes(ctx)
	if err != nil {
		return r, fmt.Errorf("nodes through %s: %w", ctrls[0].id, err)
	}
	for _, n := range nodes {
		if slices.Contains(n.Roles, "worker") {
			r.onWorker[n.ID] = n.Instances
		}
	}
	for _, ctrl := range ctrls {
		// A plain list shows every function with its owner's status,
		// whichever controller answers: it says who the owner is.
		fns, err := c.client(ctrl).List(ctx)
		if err != nil {
			return r, fmt.Errorf("functions through %s: %w", ctrl.id, err)
		}
		for _, f := range fns {
			if r.owners[f.Name] == nil {
				r.owners[f.Name] = map[string]string{}
			}
			r.owners[f.Name][ctrl.id] = f.Status.Owner
		}
		// ?owned=true is what the controller itself serves, with the
		// instances its own router routes to.
		owned, err := c.ownedBy(ctx, ctrl)
		if err != nil {
			return r, err
		}
		byWorker := map[string][]string{}
		for _, f := range owned {
			r.routers[f.Name] = append(r.routers[f.Name], ctrl.id)
			for _, in := range f.Status.Instances {
				byWorker[in.Worker] = append(byWorker[in.Worker], in.ID)
			}
		}
		r.routed[ctrl.id] = byWorker
	}
	return r, nil
}

// ownedBy lists the functions a controller serves itself (the API's
// ?owned=true, which the Go client has no call for).
func (c *cluster) ownedBy(ctx context.Context, ctrl *node) ([]apiv1.Function, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url(ctrl)+"/v1/functions?owned=true", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("functions %s owns: %w", ctrl.id, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("functions %s owns: %w", ctrl.id, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("functions %s owns: HTTP %d: %s", ctrl.id, resp.StatusCode, body)
	}
	var list apiv1.FunctionList
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("functions %s owns: %w", ctrl.id, err)
	}
	return list.Functions, nil
}

// agreeWithin bounds how long the instances workers report may take to
// agree with the controllers' routes: a heartbeat (1 s) reports a
// worker's count, and an orphan is to be stopped on the worker's next
// contact with a controller.
const agreeWithin = 30 * time.Second

// checkNoOrphansOrDuplicates waits until what runs and what is routed
// agree: every worker runs exactly the instances the controllers route to
// it (more would be orphans nobody routes to, fewer would be instances
// routed to that do not run), no instance is routed to by two controllers
// (a duplicate owner), nothing is routed to a worker that is not a member,
// every controller names the same live owner for a function, and that
// owner and no other serves it. A disagreement fails the test but lets it
// go on, so that the later steps of a scenario are seen too. It returns
// the last state seen, which the test logs.
func (c *cluster) checkNoOrphansOrDuplicates() running {
	c.t.Helper()
	var last running
	err := poll(agreeWithin, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := c.observe(ctx)
		if err != nil {
			return err
		}
		last = r
		owner := map[string]string{}
		perWorker := map[string]int{}
		for _, ctrl := range sortedKeys(r.routed) {
			for w, ids := range r.routed[ctrl] {
				if _, ok := r.onWorker[w]; !ok {
					return fmt.Errorf("%s routes instances %v to %q, which is not a member", ctrl, ids, w)
				}
				for _, id := range ids {
					if o, dup := owner[id]; dup {
						return fmt.Errorf("instance %s on %s is routed to by %s and %s", id, w, o, ctrl)
					}
					owner[id] = ctrl
					perWorker[w]++
				}
			}
		}
		for _, w := range sortedKeys(r.onWorker) {
			if n := r.onWorker[w]; n != perWorker[w] {
				return fmt.Errorf("worker %s runs %d instances, the controllers route to %d", w, n, perWorker[w])
			}
		}
		live := c.liveIDs()
		for _, fn := range sortedKeys(r.owners) {
			named := r.owners[fn]
			var owner string
			for _, ctrl := range sortedKeys(named) {
				if owner == "" {
					owner = named[ctrl]
				}
				if named[ctrl] != owner {
					return fmt.Errorf("function %s: the controllers name different owners %v", fn, named)
				}
			}
			if !slices.Contains(live, owner) {
				return fmt.Errorf("function %s: owner %q is not a live controller", fn, owner)
			}
			if !slices.Equal(r.routers[fn], []string{owner}) {
				return fmt.Errorf("function %s is owned by %s but served by %v", fn, owner, r.routers[fn])
			}
		}
		return nil
	})
	if err != nil {
		c.t.Errorf("the instances workers run are not those the controllers route to after %s: %v (%s)", agreeWithin, err, last)
	} else {
		c.t.Logf("left running: %s", last)
	}
	return last
}

// waitFor polls cond until it returns nil, failing the test with its last
// error after settle.
func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	if err := poll(settle, cond); err != nil {
		t.Fatalf("%s: still not so after %s: %v", what, settle, err)
	}
}

// poll calls cond until it returns nil or timeout passed, and returns its
// last error.
func poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
