package assemble

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/clusterpki"
	"github.com/baton-faas/baton/internal/controlplane/controller"
	"github.com/baton-faas/baton/internal/controlplane/httpapi"
	"github.com/baton-faas/baton/internal/controlplane/metrics"
	"github.com/baton-faas/baton/internal/controlplane/records"
	"github.com/baton-faas/baton/internal/controlplane/registry"
	"github.com/baton-faas/baton/internal/controlplane/router"
	"github.com/baton-faas/baton/internal/store/jsstore"
	"github.com/baton-faas/baton/internal/workerapi/remote"
)

// NodeConfig is what the cluster roles share.
type NodeConfig struct {
	// NATS lists the URLs of the cluster's NATS servers.
	NATS    []string
	DataDir string
	// PKIDir holds the node's identity (ca.crt, node.crt, node.key) as
	// `baton cluster issue` writes it.
	PKIDir        string
	Logger        *slog.Logger
	ShutdownGrace time.Duration
}

// WorkerConfig configures `baton worker`.
type WorkerConfig struct {
	NodeConfig
	// Listen is the worker API's address.
	Listen           string
	Sandbox          string
	FakeStartLatency time.Duration
	MaxPayloadBytes  int64
	MaxCodeBytes     int64
	CodeCacheBytes   int64
	// Ready, if set, is called with the worker API's address once it
	// serves.
	Ready func(addr string)
}

// ControllerConfig configures `baton controller`.
type ControllerConfig struct {
	NodeConfig
	// Listen is the HTTP API's address.
	Listen string
	// Workers are the worker API addresses to route to.
	Workers          []string
	QueueSize        int
	QueueTimeout     time.Duration
	MaxPayloadBytes  int64
	MaxInflightBytes int64
	MaxRecords       int
	MaxCodeBytes     int64
	TokenFile        string
	NoAuth           bool
	Ready            func(addr string)
}

// joinCluster does what every cluster role does first: it locks the data
// directory, loads the node's identity and checks its role, and connects
// to NATS. The returned function undoes it.
func joinCluster(cfg *NodeConfig, role clusterpki.Role) (*clusterpki.Identity, string, *nats.Conn, func(), error) {
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
	nc, err := nats.Connect(strings.Join(cfg.NATS, ","), nats.Name("baton "+string(role)+" "+id),
		nats.MaxReconnects(-1), nats.RetryOnFailedConnect(false))
	if err != nil {
		unlock()
		return nil, "", nil, nil, fmt.Errorf("connect to NATS at %s: %w", strings.Join(cfg.NATS, ","), err)
	}
	return identity, id, nc, func() { nc.Close(); unlock() }, nil
}

// RunWorker runs `baton worker`: a host's node behind the worker API,
// reading function code from the cluster's code store.
func RunWorker(ctx context.Context, cfg WorkerConfig) error {
	identity, id, nc, leave, err := joinCluster(&cfg.NodeConfig, clusterpki.Worker)
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
	st, err := jsstore.Open(ctx, nc, jsstore.Options{})
	if err != nil {
		return err
	}
	codeLimits := archive.Limits{MaxTotalBytes: cfg.MaxCodeBytes, MaxFileBytes: cfg.MaxCodeBytes}
	wk, closeNode, err := newHostNode(hostConfig{
		ID: id, DataDir: cfg.DataDir, Sandbox: cfg.Sandbox, FakeStartLatency: cfg.FakeStartLatency,
		MaxPayloadBytes: cfg.MaxPayloadBytes, CodeLimits: codeLimits, CodeCacheBytes: cfg.CodeCacheBytes,
	}, blobCode{st}, log)
	if err != nil {
		return err
	}
	defer closeNode()
	srv, err := remote.NewServer(wk, serverTLS, remote.ServerOptions{Logger: log.With("component", "workerapi")})
	if err != nil {
		return err
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("baton worker ready", "listen", ln.Addr().String(), "dataDir", cfg.DataDir)
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
	identity, id, nc, leave, err := joinCluster(&cfg.NodeConfig, clusterpki.Controller)
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
	st, err := jsstore.Open(ctx, nc, jsstore.Options{MaxRecords: int64(max(cfg.MaxRecords, 5000)), MaxRecordBytes: 512 << 20})
	if err != nil {
		return err
	}
	codeLimits := archive.Limits{MaxTotalBytes: cfg.MaxCodeBytes, MaxFileBytes: cfg.MaxCodeBytes}
	reg := registry.New(st, st, codeLimits, log)
	recs, err := records.Open(ctx, records.Options{Max: cfg.MaxRecords, Store: st, Logger: log})
	if err != nil {
		return err
	}
	defer recs.Close()
	m := metrics.New()
	ctrl := controller.New(controller.Options{
		Registry: reg, Records: recs, Metrics: m, Logger: log.With("component", "controller"),
		Router: router.Options{QueueSize: cfg.QueueSize, QueueTimeout: cfg.QueueTimeout},
	})
	runCtx, stopLoops := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLoops()
	if err := ctrl.Start(runCtx); err != nil {
		return err
	}
	var clients []*remote.Client
	defer func() {
		for _, c := range clients {
			_ = c.Close()
		}
	}()
	var joining sync.WaitGroup
	defer joining.Wait() // before the clients close
	for _, addr := range cfg.Workers {
		c, err := remote.Dial(addr, clientTLS, remote.ClientOptions{Logger: log.With("component", "workerapi", "worker", addr)})
		if err != nil {
			return fmt.Errorf("--workers %s: %w", addr, err)
		}
		clients = append(clients, c)
		joining.Add(1)
		go func() {
			defer joining.Done()
			addUntilJoined(runCtx, ctrl, c, addr, log)
		}()
	}
	handler := httpapi.New(httpapi.Options{Controller: ctrl, Metrics: m.Handler(), Logger: log,
		MaxPayloadBytes: cfg.MaxPayloadBytes, MaxInflightBytes: cfg.MaxInflightBytes, Token: token})
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

// addUntilJoined adds a worker to the controller, retrying while it is
// unreachable (it may start after the controller), until ctx ends.
func addUntilJoined(ctx context.Context, ctrl *controller.Controller, w *remote.Client, addr string, log *slog.Logger) {
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := ctrl.AddWorker(callCtx, w)
		cancel()
		if err == nil {
			log.Info("worker joined", "worker", addr)
			return
		}
		log.Debug("worker not reachable yet", "worker", addr, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
