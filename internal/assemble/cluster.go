package assemble

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/async"
	"github.com/baton-faas/baton/internal/cluster/membership"
	"github.com/baton-faas/baton/internal/cluster/ownership"
	"github.com/baton-faas/baton/internal/clusterpki"
	"github.com/baton-faas/baton/internal/controlplane/controller"
	"github.com/baton-faas/baton/internal/controlplane/httpapi"
	"github.com/baton-faas/baton/internal/controlplane/metrics"
	"github.com/baton-faas/baton/internal/controlplane/router"
	"github.com/baton-faas/baton/internal/datalayer"
	"github.com/baton-faas/baton/internal/store/jsstore"
	"github.com/baton-faas/baton/internal/store/natsd"
	"github.com/baton-faas/baton/internal/transfer"
	"github.com/baton-faas/baton/internal/triggers"
	"github.com/baton-faas/baton/internal/workerapi/remote"
)

// NodeConfig is what the cluster roles share.
type NodeConfig struct {
	// NATS lists the URLs of the cluster's NATS servers.
	NATS []string
	// Advertise is the address peers reach this node's listener at;
	// empty means the listener's own address.
	Advertise string
	DataDir   string
	// PKIDir holds the node's identity (ca.crt, node.crt, node.key) as
	// `baton cluster issue` writes it.
	PKIDir string
	// Heartbeat is the membership's heartbeat interval when this node
	// creates the membership (a node is dead after three missed); nodes
	// that join an existing one follow its interval. Zero means 1 s.
	Heartbeat     time.Duration
	Logger        *slog.Logger
	ShutdownGrace time.Duration
	// NATSAuth, when set, logs in to NATS with a user and password (the
	// --user of `baton nats`).
	NATSAuth *natsd.Credentials
	// AdminListen and AdminReady: as Config's.
	AdminListen string
	AdminReady  func(addr string)
	// NATSCA is a PEM file with the CA certificate(s) that NATS servers'
	// certificates must be signed by; empty means the cluster's CA
	// (ca.crt in PKIDir). The node presents its own certificate to NATS
	// servers that ask for one.
	NATSCA string
}

// WorkerConfig configures `baton worker`.
type WorkerConfig struct {
	NodeConfig
	// Listen is the worker API's address.
	Listen           string
	Sandbox          string
	FakeStartLatency time.Duration
	// NoMemoryReclaim: see Config.NoMemoryReclaim.
	NoMemoryReclaim bool
	MaxPayloadBytes int64
	MaxCodeBytes    int64
	CodeCacheBytes  int64
	// Prefetch: as Config.Prefetch.
	Prefetch bool
	// ZygoteKeep: as Config.ZygoteKeep.
	ZygoteKeep time.Duration
	// Data sizes the node's data layers (the global one is on the
	// cluster's NATS).
	Data datalayer.Config
	// Transfer configures direct transfers (the key is the cluster's,
	// in KV baton_transfer).
	Transfer transfer.Config
	// Ready, if set, is called with the worker API's address once it
	// serves.
	Ready func(addr string)
}

// ControllerConfig configures `baton controller`.
type ControllerConfig struct {
	NodeConfig
	// Listen is the HTTP API's address.
	Listen string
	// Workers are worker API addresses to route to besides the workers
	// that join through the cluster's membership.
	Workers          []string
	QueueSize        int
	QueueTimeout     time.Duration
	MaxPayloadBytes  int64
	MaxInflightBytes int64
	MaxRecords       int
	MaxCodeBytes     int64
	TokenFile        string
	NoAuth           bool
	// AsyncRetryBase is the wait before an asynchronous event's first
	// retry (default 1 s; doubling after).
	AsyncRetryBase time.Duration
	// AsyncDedupWindow and AsyncRetention: see Config.
	AsyncDedupWindow, AsyncRetention time.Duration
	Workflows                        WorkflowConfig
	Ready                            func(addr string)
}

// joinCluster does what every cluster role does first: it locks the data
// directory, loads the node's identity and checks its role, and connects
// to NATS (waiting for it until ctx ends; TLS and login as configured).
// The returned function undoes it.
func joinCluster(ctx context.Context, cfg *NodeConfig, role clusterpki.Role) (*clusterpki.Identity, string, *nats.Conn, func(), error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 30 * time.Second
	}
	if len(cfg.NATS) == 0 {
		return nil, "", nil, nil, errors.New("--nats: at least one NATS URL is required")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, "", nil, nil, fmt.Errorf("data dir: %w", err)
	}
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, "", nil, nil, err
	}
	identity, err := clusterpki.LoadIdentity(cfg.PKIDir)
	if err != nil {
		unlock()
		return nil, "", nil, nil, fmt.Errorf("--pki %s: %w (create it with baton cluster issue)", cfg.PKIDir, err)
	}
	id, got, err := identity.Node()
	if err != nil {
		unlock()
		return nil, "", nil, nil, fmt.Errorf("--pki %s: %w", cfg.PKIDir, err)
	}
	if got != role {
		unlock()
		return nil, "", nil, nil, fmt.Errorf("--pki %s: the certificate is for a %s, not a %s", cfg.PKIDir, got, role)
	}
	nc, err := dialNATS(ctx, cfg, identity, "baton "+string(role)+" "+id)
	if err != nil {
		unlock()
		return nil, "", nil, nil, err
	}
	return identity, id, nc, func() { nc.Close(); unlock() }, nil
}

// dialNATS connects a node to the cluster's NATS: its certificate is its
// client certificate, the servers' must be from NATSCA (or the cluster's
// CA) whenever the connection is TLS.
func dialNATS(ctx context.Context, cfg *NodeConfig, identity *clusterpki.Identity, name string) (*nats.Conn, error) {
	conf, err := identity.ClientTLS()
	if err != nil {
		return nil, fmt.Errorf("--pki %s: %w", cfg.PKIDir, err)
	}
	ca := filepath.Join(cfg.PKIDir, clusterpki.CACertFile)
	if cfg.NATSCA != "" {
		ca = cfg.NATSCA
		pem, err := os.ReadFile(cfg.NATSCA)
		if err != nil {
			return nil, fmt.Errorf("--nats-tls-ca: %w", err)
		}
		conf.RootCAs = x509.NewCertPool()
		if !conf.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--nats-tls-ca %s: no PEM certificate in it", cfg.NATSCA)
		}
	}
	log := cfg.Logger.With("component", "nats")
	nc, err := natsd.Dial(ctx, cfg.NATS, natsd.DialOptions{Name: name, TLS: conf, Auth: cfg.NATSAuth, Logger: log})
	var refused *natsd.RefusedError
	switch {
	case err == nil:
	case errors.As(err, &refused):
		return nil, fmt.Errorf("join the cluster: %w; %s", err, refusalHint(refused.Reason, cfg, ca))
	default:
		return nil, fmt.Errorf("join the cluster: %w", err)
	}
	if _, err := nc.TLSConnectionState(); err != nil {
		if host, _, _ := net.SplitHostPort(nc.ConnectedAddr()); !isLoopbackHost(host) {
			log.Warn("the NATS connection is not encrypted (a nats:// URL to a server without TLS): anyone on the network path can read and change the cluster's state",
				"server", nc.ConnectedUrlRedacted())
		}
	}
	return nc, nil
}

// refusalHint tells the operator which flag to fix.
func refusalHint(r natsd.Refusal, cfg *NodeConfig, ca string) string {
	switch r {
	case natsd.LoginRefused:
		if cfg.NATSAuth == nil {
			return "give the user with --nats-user and its password in " + natsd.PasswordEnv + " (those of baton nats --user)"
		}
		return "check --nats-user and the password in " + natsd.PasswordEnv + " (those of baton nats --user)"
	case natsd.ClientCertRefused:
		return "the NATS servers accept client certificates from their --tls-ca only; this node's certificate (--pki " + cfg.PKIDir + ") must be from that CA"
	case natsd.ServerUntrusted:
		return "the NATS servers' certificates must be signed by the CA in " + ca + " (--nats-tls-ca; default ca.crt in --pki) and name the host of the --nats URL (baton cluster issue --role nats --host ...)"
	case natsd.TLSUnavailable:
		return "the servers at the tls:// URLs offer no TLS: start them with --tls-cert, --tls-key and --tls-ca, or use nats:// URLs"
	}
	return ""
}

// RunWorker runs `baton worker`: a host's node behind the worker API,
// reading function code from the cluster's code store.
func RunWorker(ctx context.Context, cfg WorkerConfig) error {
	identity, id, nc, leave, err := joinCluster(ctx, &cfg.NodeConfig, clusterpki.Worker)
	if err != nil {
		return err
	}
	defer leave()
	log := cfg.Logger.With("node", id)
	serverTLS, err := identity.ServerTLS()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	defer ln.Close()
	stopAdmin, err := startAdmin(cfg.AdminListen, log, cfg.AdminReady)
	if err != nil {
		return err
	}
	defer stopAdmin()
	// The records stream's limits as a controller with default flags sets
	// them, so that a worker starting does not change them.
	st, err := jsstore.Open(ctx, nc, recordStoreOptions(0))
	if err != nil {
		return err
	}
	codeLimits := codeLimitsFor(cfg.MaxCodeBytes)
	xferKey, err := clusterTransferKey(ctx, nc, log)
	if err != nil {
		return err
	}
	clientTLS, err := identity.ClientTLS()
	if err != nil {
		return err
	}
	// Pulls from other workers go with this worker's own certificate.
	peers := remote.NewPeers(clientTLS, remote.ClientOptions{Logger: log.With("component", "transfer-peers")})
	defer peers.Close()
	wk, closeNode, err := newHostNode(ctx, hostConfig{
		ID: id, DataDir: cfg.DataDir, Sandbox: cfg.Sandbox, FakeStartLatency: cfg.FakeStartLatency, NoMemoryReclaim: cfg.NoMemoryReclaim,
		MaxPayloadBytes: cfg.MaxPayloadBytes, CodeLimits: codeLimits, CodeCacheBytes: cfg.CodeCacheBytes,
		Data: cfg.Data, NATS: nc, Transfer: cfg.Transfer, TransferKey: xferKey, Advertise: advertised(cfg.Advertise, ln),
		Peers:    peers,
		Prefetch: cfg.Prefetch, ZygoteKeep: cfg.ZygoteKeep,
		// Functions' calls of functions go over the global bus.
		Invoker: &busInvoker{nc: nc, fns: st, log: log.With("component", "invoke")},
	}, blobCode{st}, log)
	if err != nil {
		return err
	}
	defer closeNode()
	defer followFunctionVersions(ctx, st, wk, cfg.ZygoteKeep, log)()
	srv, err := remote.NewServer(wk, serverTLS, remote.ServerOptions{Logger: log.With("component", "workerapi")})
	if err != nil {
		return err
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	_, self, err := joinMembers(ctx, nc, cfg.Heartbeat, membership.Self{ID: id, Roles: []membership.Role{membership.RoleWorker},
		Address: advertised(cfg.Advertise, ln), Load: membership.WorkerLoad(wk), Logger: log.With("component", "membership")})
	if err != nil {
		_ = srv.Stop(context.Background())
		return err
	}
	// Leave before the worker API stops: controllers stop routing here
	// first, and the calls still running finish within the grace.
	defer func() {
		if self != nil {
			leaveMembers(self, log)
		}
	}()
	wk.Prepare() // once ready: background work must not delay readiness
	log.Info("baton worker ready", "listen", ln.Addr().String(), "advertise", advertised(cfg.Advertise, ln), "dataDir", cfg.DataDir)
	if cfg.Ready != nil {
		cfg.Ready(ln.Addr().String())
	}
	var failed error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		failed = err
	}
	log.Info("shutting down", "grace", cfg.ShutdownGrace)
	leaveMembers(self, log)
	self = nil
	stopCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := srv.Stop(stopCtx); err != nil {
		log.Warn("worker API shutdown", "err", err)
	}
	if failed == nil {
		failed = <-serveErr // nil once Stop ended it
	}
	log.Info("stopped")
	return failed
}

// RunController runs `baton controller`: the control plane (HTTP API,
// registry, router) on the cluster's stores, routing to remote workers.
func RunController(ctx context.Context, cfg ControllerConfig) error {
	identity, id, nc, leave, err := joinCluster(ctx, &cfg.NodeConfig, clusterpki.Controller)
	if err != nil {
		return err
	}
	defer leave()
	log := cfg.Logger.With("node", id)
	clientTLS, err := identity.ClientTLS()
	if err != nil {
		return err
	}
	token := ""
	if !cfg.NoAuth {
		path := cfg.TokenFile
		if path == "" {
			path = filepath.Join(cfg.DataDir, TokenFileName)
		}
		if token, err = loadOrCreateToken(path); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	defer ln.Close()
	stopAdmin, err := startAdmin(cfg.AdminListen, log, cfg.AdminReady)
	if err != nil {
		return err
	}
	defer stopAdmin()
	state, err := openControlState(ctx, nc, cfg.MaxRecords, cfg.MaxCodeBytes,
		async.Options{DedupWindow: cfg.AsyncDedupWindow, Retention: cfg.AsyncRetention}, log)
	if err != nil {
		return err
	}
	st, reg, recs := state.store, state.registry, state.records
	defer recs.Close()
	m := metrics.New()
	members, self, err := joinMembers(ctx, nc, cfg.Heartbeat, membership.Self{ID: id, Roles: []membership.Role{membership.RoleController},
		Address: advertised(cfg.Advertise, ln), Logger: log.With("component", "membership")})
	if err != nil {
		return err
	}
	defer leaveMembers(self, log)
	// Ownership reports changes from its own goroutine, possibly before
	// the controller exists; the controller's own loop catches up then.
	var ctrlRef atomic.Pointer[controller.Controller]
	own, err := startOwnership(ctx, nc, members, id, advertised(cfg.Advertise, ln), self.Interval(), log,
		func(ch ownership.Change) {
			if c := ctrlRef.Load(); c != nil {
				c.ShardsChanged(ch.Gained, ch.Lost)
			}
		})
	if err != nil {
		return err
	}
	ctrl := controller.New(controller.Options{
		Registry: reg, Records: recs, Metrics: m, Logger: log.With("component", "controller"), Changes: st,
		Router:    router.Options{QueueSize: cfg.QueueSize, QueueTimeout: cfg.QueueTimeout},
		Ownership: own, Self: id, HoldOwnership: true, Async: state.queue, AsyncRetryBase: cfg.AsyncRetryBase,
		Suspect: func(ctx context.Context, node string) {
			// A probe sent before NATS noticed the closed connection
			// goes unanswered rather than finding no responder: ask a
			// few times.
			for try := 0; try < 3; try++ {
				gone, err := own.Expel(ctx, node)
				if err != nil {
					log.Warn("check an unreachable node", "node", node, "err", err)
					return
				}
				if gone {
					log.Info("node expelled: its process is gone (no NATS connection)", "node", node)
					return
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
		},
	})
	ctrlRef.Store(ctrl)
	runCtx, stopLoops := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLoops()
	// Shutdown hands the functions over first; this is for the paths
	// that never get there.
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		own.Close(closeCtx)
	}()
	if err := ctrl.Start(runCtx); err != nil {
		return err
	}
	pool := &workerPool{ctrl: ctrl, tls: clientTLS, log: log, clients: map[string]*remote.Client{}}
	defer pool.close() // after the loops below ended
	var loops sync.WaitGroup
	defer loops.Wait()
	for _, addr := range cfg.Workers {
		loops.Add(1)
		go func() {
			defer loops.Done()
			pool.addStatic(runCtx, addr)
		}()
	}
	watch, err := members.Watch(runCtx)
	if err != nil {
		return err
	}
	// The workers already in the cluster first: functions taken over
	// then find their instances on them.
	pool.joinAll(runCtx, watch.Snapshot())
	ctrl.OpenOwnership()
	loops.Add(1)
	go func() {
		defer loops.Done()
		pool.follow(runCtx, watch)
	}()
	trig, err := triggers.Open(ctx, nc, state.queue, ctrl.OwnsFunction, log.With("component", "triggers"))
	if err != nil {
		return err
	}
	defer trig.Close()
	// A controller's executions are held by its node id: when the
	// membership loses it, another controller resumes them.
	xferKey, err := clusterTransferKey(ctx, nc, log)
	if err != nil {
		return err
	}
	signer, err := transfer.NewSigner(xferKey)
	if err != nil {
		return err
	}
	wf, closeWorkflows, err := openWorkflows(ctx, nc, ctrl, id, members, cfg.Workflows, signer, log)
	if err != nil {
		return err
	}
	defer closeWorkflows()
	handler := httpapi.New(httpapi.Options{Workflows: wf, Controller: ctrl, Metrics: m.Handler(), Logger: log, Nodes: members,
		MaxPayloadBytes: cfg.MaxPayloadBytes, MaxInflightBytes: cfg.MaxInflightBytes, Token: token, Self: id, Triggers: trig})
	err = serveAPI(ctx, ln, handler, ctrl, cfg.ShutdownGrace, log, func(addr string) {
		log.Info("baton controller ready", "listen", addr, "workers", cfg.Workers)
		if cfg.Ready != nil {
			cfg.Ready(addr)
		}
	})
	stopLoops()
	log.Info("stopped")
	return err
}

// startOwnership takes this controller's share of the functions (see
// internal/cluster/ownership), renewing its leases at the heartbeat.
func startOwnership(ctx context.Context, nc *nats.Conn, members *membership.Members, id, addr string,
	interval time.Duration, log *slog.Logger, onChange func(ownership.Change)) (*ownership.Ownership, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("ownership: %w", err)
	}
	own, err := ownership.Start(ctx, ownership.Options{JS: js, Members: members, Self: id, Address: addr,
		Interval: interval, Replicas: jsstore.ReplicasFor(nc), OnChange: onChange,
		Logger: log.With("component", "ownership")})
	if err != nil {
		return nil, fmt.Errorf("ownership: %w", err)
	}
	return own, nil
}

// advertised is the address peers should dial: the flag, or the
// listener's.
func advertised(flag string, ln net.Listener) string {
	if flag != "" {
		return flag
	}
	return ln.Addr().String()
}

// workerPool keeps a controller's connections to workers in step with the
// membership: a worker that joins is dialed and added to the controller,
// one that leaves (or is declared dead) is removed and its connection
// closed. Its methods run on the loops RunController owns.
type workerPool struct {
	ctrl *controller.Controller
	tls  *tls.Config
	log  *slog.Logger

	mu      sync.Mutex // guards clients; never held across a call
	clients map[string]*remote.Client
}

// follow applies the membership's snapshot and changes until ctx ends.
func (p *workerPool) follow(ctx context.Context, w *membership.Watch) {
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events():
			if !ok {
				if err := w.Err(); err != nil && ctx.Err() == nil {
					p.log.Error("membership watch ended; workers that join or leave are not seen", "err", err)
				}
				return
			}
			if !ev.Node.Has(membership.RoleWorker) {
				continue
			}
			switch ev.Kind {
			case membership.Joined:
				p.join(ctx, ev.Node)
			case membership.Left:
				p.leave(ev.Node.ID, "left the membership")
			}
		}
	}
}

// joinAll adds the workers among nodes, at once, and returns when each
// was added or failed (join bounds each).
func (p *workerPool) joinAll(ctx context.Context, nodes []membership.Node) {
	var wg sync.WaitGroup
	for _, n := range nodes {
		if !n.Has(membership.RoleWorker) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.join(ctx, n)
		}()
	}
	wg.Wait()
}

// join dials a worker and adds it to the controller.
func (p *workerPool) join(ctx context.Context, n membership.Node) {
	p.leave(n.ID, "joined again") // a new incarnation replaces the old
	c, err := remote.Dial(n.Address, p.tls, remote.ClientOptions{Logger: p.log.With("component", "workerapi", "worker", n.ID)})
	if err != nil {
		p.log.Error("worker joined but cannot be dialed", "worker", n.ID, "address", n.Address, "err", err)
		return
	}
	callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.ctrl.AddWorker(callCtx, c); err != nil {
		p.log.Warn("worker joined but could not be added", "worker", n.ID, "address", n.Address, "err", err)
		_ = c.Close()
		return
	}
	p.mu.Lock()
	p.clients[n.ID] = c
	p.mu.Unlock()
	p.log.Info("worker joined", "worker", n.ID, "address", n.Address)
}

// leave removes a worker and closes its connection.
func (p *workerPool) leave(id, why string) {
	p.mu.Lock()
	c := p.clients[id]
	delete(p.clients, id)
	p.mu.Unlock()
	if c == nil {
		return
	}
	p.ctrl.RemoveWorker(id)
	_ = c.Close()
	p.log.Info("worker removed", "worker", id, "why", why)
}

// addStatic adds a worker named on the command line, retrying while it is
// unreachable (it may start after the controller), until ctx ends.
func (p *workerPool) addStatic(ctx context.Context, addr string) {
	c, err := remote.Dial(addr, p.tls, remote.ClientOptions{Logger: p.log.With("component", "workerapi", "worker", addr)})
	if err != nil {
		p.log.Error("--workers: cannot dial", "worker", addr, "err", err)
		return
	}
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		info, err := c.Info(callCtx)
		if err == nil {
			err = p.ctrl.AddWorker(callCtx, c)
		}
		cancel()
		if err == nil {
			p.mu.Lock()
			p.clients[info.ID] = c
			p.mu.Unlock()
			p.log.Info("worker added", "worker", info.ID, "address", addr)
			return
		}
		if errors.Is(err, router.ErrWorkerExists) { // it joined through the membership
			_ = c.Close()
			return
		}
		p.log.Debug("worker not reachable yet", "worker", addr, "err", err)
		select {
		case <-ctx.Done():
			_ = c.Close()
			return
		case <-time.After(wait):
		}
	}
}

// close closes every connection; the controller has shut down.
func (p *workerPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, c := range p.clients {
		_ = c.Close()
		delete(p.clients, id)
	}
}
