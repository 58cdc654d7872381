// Package assemble assembles `baton server`: embedded NATS JetStream, the
// stores, a controller and an in-process worker, and the HTTP API.
package assemble

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/async"
	"github.com/baton-faas/baton/internal/cluster/membership"
	"github.com/baton-faas/baton/internal/controlplane/controller"
	"github.com/baton-faas/baton/internal/controlplane/httpapi"
	"github.com/baton-faas/baton/internal/controlplane/metrics"
	"github.com/baton-faas/baton/internal/controlplane/router"
	"github.com/baton-faas/baton/internal/datalayer"
	"github.com/baton-faas/baton/internal/image"
	"github.com/baton-faas/baton/internal/image/baseimage"
	"github.com/baton-faas/baton/internal/node"
	"github.com/baton-faas/baton/internal/requestid"
	"github.com/baton-faas/baton/internal/sandbox"
	"github.com/baton-faas/baton/internal/sandbox/container"
	"github.com/baton-faas/baton/internal/sandbox/fake"
	"github.com/baton-faas/baton/internal/sandbox/process"
	"github.com/baton-faas/baton/internal/store/natsd"
	"github.com/baton-faas/baton/internal/transfer"
	"github.com/baton-faas/baton/internal/triggers"
)

// Config is the server's configuration.
type Config struct {
	Listen  string
	DataDir string
	Logger  *slog.Logger
	// ShutdownGrace bounds how long in-flight invocations may run on
	// SIGINT/SIGTERM before instances are killed.
	ShutdownGrace   time.Duration
	QueueSize       int
	QueueTimeout    time.Duration
	MaxPayloadBytes int64
	// MaxInflightBytes caps the request payload bytes held at once.
	MaxInflightBytes int64
	MaxRecords       int
	// MaxCodeBytes bounds the unpacked size of one function's code;
	// CodeCacheBytes bounds the code cache of the host. Zero means the
	// defaults (archive.DefaultMaxTotalBytes, node.DefaultCodeCacheBytes).
	MaxCodeBytes   int64
	CodeCacheBytes int64
	// Prefetch records each function version's cold-start working set
	// on its first cold start and prefetches it on later ones (the CLI's
	// --prefetch, on by default there).
	Prefetch bool
	// ZygoteKeep keeps a version's zygote and sandbox after its last
	// instance was stopped (node.Options.ZygoteKeep).
	ZygoteKeep time.Duration
	// Sandbox selects the isolation: "container", "process", or "auto"
	// (containers where this host can run them, else processes); empty
	// means "auto".
	Sandbox string
	// TokenFile holds the API token (created on first start); empty
	// means <DataDir>/api-token.
	TokenFile string
	// NoAuth serves the management API without a token (tests only);
	// refused off loopback unless NoAuthOnNetwork (see CheckNoAuthListen).
	NoAuth bool
	// NATSListen, when set (a loopback host:port), lets local clients
	// reach the embedded NATS, e.g. to publish to NATS-subject triggers.
	NATSListen string
	// AsyncRetryBase is the wait before an asynchronous event's first
	// retry (default 1 s; doubling after).
	AsyncRetryBase time.Duration
	// AsyncDedupWindow is how long an idempotency key maps to its first
	// invocation; AsyncRetention how long an async invocation's state and
	// result are kept after it last changed (0: the queue's defaults).
	AsyncDedupWindow, AsyncRetention time.Duration
	Workflows                        WorkflowConfig
	NoAuthOnNetwork                  bool
	// FakeStartLatency delays each fake instance's first poll (Sandbox
	// "fake" only).
	FakeStartLatency time.Duration
	// NoMemoryReclaim turns off the container sandboxes' memory reclaim
	// (--memory-reclaim=false), for comparison.
	NoMemoryReclaim bool
	// Ready, if set, is called with the API's address once it serves.
	Ready func(addr string)
	// AdminListen, if set (a loopback host:port), opens the admin
	// listener: Go's profiles at /debug/pprof/, never on the API's
	// listener. AdminReady, if set, gets its address.
	AdminListen string
	AdminReady  func(addr string)
	// Data sizes the node's data layers (the global one is on the
	// embedded NATS).
	Data datalayer.Config
	// Transfer configures direct transfers of workflow steps' outputs
	// (the key is <DataDir>/transfer.key, created on first start).
	Transfer transfer.Config
}

// DefaultDataDir is $XDG_DATA_HOME/baton, or ~/.local/share/baton.
func DefaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "baton")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "baton")
	}
	return filepath.Join(os.TempDir(), "baton")
}

// Run serves until ctx ends, then shuts down gracefully.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 30 * time.Second
	}
	if err := CheckNoAuthListen(cfg.Listen, cfg.NoAuth, cfg.NoAuthOnNetwork); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	defer unlock()
	token := ""
	if !cfg.NoAuth {
		path := cfg.TokenFile
		if path == "" {
			path = filepath.Join(cfg.DataDir, TokenFileName)
		}
		if token, err = loadOrCreateToken(path); err != nil {
			return err
		}
	} else {
		log.Warn("the management API is open to anyone who can reach " + cfg.Listen + " (--no-auth)")
	}
	// Listen before anything starts processes, so a taken port fails fast.
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

	if loopback, err := IsLoopbackListen(cfg.NATSListen); cfg.NATSListen != "" && (err != nil || !loopback) {
		return fmt.Errorf("--nats-listen %s: the embedded NATS has no credentials, so it listens on loopback only (use cluster mode's baton nats with --user/--tls-* for other hosts)", cfg.NATSListen)
	}
	ns, err := natsd.Start(ctx, natsd.Options{DataDir: cfg.DataDir, Logger: log, Listen: cfg.NATSListen})
	if err != nil {
		return err
	}
	defer ns.Shutdown()
	nc, err := ns.Connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	state, err := openControlState(ctx, nc, cfg.MaxRecords, cfg.MaxCodeBytes,
		async.Options{DedupWindow: cfg.AsyncDedupWindow, Retention: cfg.AsyncRetention}, log)
	if err != nil {
		return err
	}
	reg, recs := state.registry, state.records
	defer recs.Close()
	codeLimits := codeLimitsFor(cfg.MaxCodeBytes)
	m := metrics.New()

	nodeID, err := membership.LoadOrCreateID(cfg.DataDir)
	if err != nil {
		return err
	}
	xferKey, err := serverTransferKey(cfg.DataDir)
	if err != nil {
		return err
	}
	var signer *transfer.Signer
	if cfg.Transfer.Threshold > 0 {
		if signer, err = transfer.NewSigner(xferKey); err != nil {
			return err
		}
	}
	invoker := &serverInvoker{}
	wk, closeNode, err := newHostNode(ctx, hostConfig{
		ID: nodeID, DataDir: cfg.DataDir, Sandbox: cfg.Sandbox, FakeStartLatency: cfg.FakeStartLatency, NoMemoryReclaim: cfg.NoMemoryReclaim,
		MaxPayloadBytes: cfg.MaxPayloadBytes, CodeLimits: codeLimits, CodeCacheBytes: cfg.CodeCacheBytes,
		Data: cfg.Data, NATS: nc, Transfer: cfg.Transfer, TransferKey: xferKey, Prefetch: cfg.Prefetch,
		Invoker: invoker, ZygoteKeep: cfg.ZygoteKeep,
	}, reg, log)
	if err != nil {
		return err
	}
	// Whatever happens from here on, no instance outlives Run.
	defer closeNode()
	defer followFunctionVersions(ctx, state.store, wk, cfg.ZygoteKeep, log)()
	// The controller holds the node as a workerapi.Worker directly: in
	// `baton server` the worker API is an in-process call, and the image
	// store is the node's alone.
	ctrl := controller.New(controller.Options{
		Registry: reg, Worker: wk, Records: recs, Metrics: m, Logger: log.With("component", "controller"),
		Router: router.Options{QueueSize: cfg.QueueSize, QueueTimeout: cfg.QueueTimeout},
		Async:  state.queue, AsyncRetryBase: cfg.AsyncRetryBase,
	})
	runCtx, stopLoops := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLoops()
	if err := ctrl.Start(runCtx); err != nil {
		return err
	}
	invoker.c.Store(ctrl)

	// The one node is both roles; it shows up in baton nodes like a
	// cluster's nodes do.
	members, self, err := joinMembers(ctx, nc, 0, membership.Self{ID: nodeID,
		Roles: []membership.Role{membership.RoleController, membership.RoleWorker}, Address: ln.Addr().String(),
		Load: membership.WorkerLoad(wk), Logger: log.With("component", "membership")})
	if err != nil {
		return err
	}
	defer leaveMembers(self, log)
	trig, err := triggers.Open(ctx, nc, state.queue, ctrl.OwnsFunction, log.With("component", "triggers"))
	if err != nil {
		return err
	}
	defer trig.Close()
	// A server's executions are held by this run of it: after a restart
	// the next run resumes them.
	wf, closeWorkflows, err := openWorkflows(ctx, nc, ctrl, nodeID+"/"+requestid.New(), nil, cfg.Workflows, signer, log)
	if err != nil {
		return err
	}
	defer closeWorkflows()
	handler := httpapi.New(httpapi.Options{Workflows: wf, Controller: ctrl, Metrics: m.Handler(), Logger: log, Nodes: members,
		MaxPayloadBytes: cfg.MaxPayloadBytes, MaxInflightBytes: cfg.MaxInflightBytes, Token: token, Triggers: trig})
	err = serveAPI(ctx, ln, handler, ctrl, cfg.ShutdownGrace, log, func(addr string) {
		// Once ready: background work must not delay readiness.
		wk.Prepare()
		log.Info("baton server ready", "listen", addr, "dataDir", cfg.DataDir)
		if cfg.Ready != nil {
			cfg.Ready(addr)
		}
	})
	stopLoops()
	log.Info("stopped")
	return err
}

// NoAuthOnNetworkFlag is the flag that lets the HTTP API serve without a
// token beyond loopback; its name is meant to be read in a review.
const NoAuthOnNetworkFlag = "insecure-no-auth-on-network"

// CheckNoAuthListen refuses an HTTP API without a token (--no-auth) on an
// address other hosts can reach: anyone there could deploy code and run
// it. Loopback addresses (127.0.0.0/8, ::1, localhost) are allowed;
// everything else, all interfaces (":8080", "0.0.0.0") and host names
// included, needs onNetwork, the explicit override.
func CheckNoAuthListen(listen string, noAuth, onNetwork bool) error {
	if !noAuth {
		return nil
	}
	loopback, err := IsLoopbackListen(listen)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", listen, err)
	}
	if loopback || onNetwork {
		return nil
	}
	return fmt.Errorf("--no-auth with --listen %s: the API would let anyone who can reach this address deploy and run code; "+
		"listen on loopback (127.0.0.1), drop --no-auth and use the API token, or accept the risk with --%s", listen, NoAuthOnNetworkFlag)
}

// IsLoopbackListen reports whether a host:port listen address is
// reachable from this host only.
func IsLoopbackListen(listen string) (bool, error) {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false, errors.New("want host:port")
	}
	return isLoopbackHost(host), nil
}

// isLoopbackHost: an empty host is every interface, and a host name other
// than localhost may resolve to anything.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// serveAPI serves the HTTP API on ln until ctx ends, then shuts down
// gracefully: in-flight invocations get grace to finish, the controller
// stops its instances, and every handler has returned before serveAPI
// does, so that the caller may close the stores behind them.
func serveAPI(ctx context.Context, ln net.Listener, handler http.Handler, ctrl *controller.Controller, grace time.Duration, log *slog.Logger, ready func(addr string)) error {
	// Bodies must arrive within ReadTimeout (slow clients must not hold
	// memory and goroutines); responses may take as long as functions run.
	var handlers inflight
	srv := &http.Server{Handler: handlers.wrap(handler), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 5 * time.Minute,
		IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	ready(ln.Addr().String())

	var failed error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		failed = fmt.Errorf("http server: %w", err)
	}
	log.Info("shutting down", "grace", grace)
	graceCtx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	// Stop taking connections and let in-flight requests finish; the
	// router refuses new invocations meanwhile. When the grace runs out
	// the router stops the instances, which fails what is still running
	// with a 503; the HTTP server gets a moment more to send those answers.
	httpCtx, cancelHTTP := context.WithTimeout(context.Background(), grace+3*time.Second)
	defer cancelHTTP()
	httpDone := make(chan error, 1)
	go func() { httpDone <- srv.Shutdown(httpCtx) }()
	if err := ctrl.Shutdown(graceCtx); err != nil {
		log.Warn("router shutdown", "err", err)
	}
	if err := <-httpDone; err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("http shutdown", "err", err)
		_ = srv.Close()
	}
	// Close does not wait for handlers; the stores closed after this
	// returns must outlive every one of them. They end soon: the router
	// is shut down and their connections are closed.
	drained := handlers.drained()
	for waiting := true; waiting; {
		select {
		case <-drained:
			waiting = false
		case <-time.After(5 * time.Second):
			log.Warn("waiting for HTTP handlers to return before closing the stores")
		}
	}
	return failed
}

// lockDataDir keeps two servers from sharing one data directory.
func lockDataDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data dir: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("data dir %s is in use by another baton server: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

// chooseSandboxes picks the sandbox runtime. Without containers the
// server still runs, with process isolation, and says so loudly.
func chooseSandboxes(cfg hostConfig, images *image.Store, bases *baseimage.Cache, log *slog.Logger) (sandbox.Runtime, node.RootFSProvider, error) {
	if cfg.FakeStartLatency != 0 && cfg.Sandbox != "fake" {
		return nil, nil, fmt.Errorf("--fake-start-latency applies to --sandbox fake only, not %q", cfg.Sandbox)
	}
	switch cfg.Sandbox {
	case "fake":
		f, err := fake.New(fake.Options{StartLatency: cfg.FakeStartLatency})
		if err != nil {
			return nil, nil, fmt.Errorf("--fake-start-latency: %w", err)
		}
		log.Warn("FAKE SANDBOXES: functions' code never runs; every instance echoes its event (" + f.Isolation() + ")")
		return f, nil, nil
	case "process":
		p := process.New()
		log.Warn("SANDBOX ISOLATION IS OFF: " + p.Isolation() + " (run as root with --sandbox auto or container for containers)")
		return p, nil, nil
	case "", "container", "auto":
		c, err := container.New(container.Options{StateDir: filepath.Join(cfg.DataDir, "sandboxes-state"),
			NoMemoryReclaim: cfg.NoMemoryReclaim, Logger: log.With("component", "sandbox")})
		if err == nil {
			log.Info("sandbox isolation: " + c.Isolation())
			return c, imageRootFS{store: images, base: bases, log: log, unavailable: &sync.Map{}}, nil
		}
		if cfg.Sandbox == "container" {
			return nil, nil, fmt.Errorf("--sandbox container: %w", err)
		}
		p := process.New()
		log.Warn("SANDBOX ISOLATION IS OFF: containers are unavailable here (" + err.Error() + "); " + p.Isolation())
		return p, nil, nil
	}
	return nil, nil, fmt.Errorf("--sandbox %q: want auto, container, process or fake", cfg.Sandbox)
}
