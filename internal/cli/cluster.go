package cli

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/assemble"
	"github.com/baton-faas/baton/internal/clusterpki"
	"github.com/baton-faas/baton/internal/node"
	"github.com/baton-faas/baton/internal/store/natsd"
)

// nodeFlags registers the flags every cluster role has.
func nodeFlags(cmd *cobra.Command, cfg *assemble.NodeConfig, fl *nodeFlagValues) {
	f := cmd.Flags()
	f.StringSliceVar(&cfg.NATS, "nats", nil, "URLs of the cluster's NATS servers (comma-separated or repeated): nats://host:4222, or tls://host:4222 to require TLS")
	f.StringVar(&fl.natsUser, "nats-user", "", "log in to NATS as this user, with the password in "+natsd.PasswordEnv+" (those of baton nats --user)")
	f.StringVar(&cfg.NATSCA, "nats-tls-ca", "", "PEM CA certificate(s) the NATS servers' certificates must be signed by (default: ca.crt in --pki); the node presents its --pki certificate to NATS servers that ask for one")
	f.StringVar(&cfg.DataDir, "data-dir", assemble.DefaultDataDir(), "directory for this node's state")
	f.StringVar(&cfg.Advertise, "advertise", "", "address peers reach this node's listener at (default: the --listen address)")
	f.StringVar(&cfg.PKIDir, "pki", "", "directory with this node's identity (ca.crt, node.crt, node.key) from baton cluster issue")
	f.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", 30*time.Second, "how long in-flight invocations may finish on SIGINT/SIGTERM")
	f.DurationVar(&cfg.Heartbeat, "heartbeat", time.Second, "heartbeat interval of the cluster's membership; a node is dead after 3 missed. Cluster-wide: the first node to start sets it, the others follow")
	f.StringVar(&fl.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	adminFlag(f, &cfg.AdminListen)
}

// nodeFlagValues are the shared flags that are not NodeConfig's fields
// as they are.
type nodeFlagValues struct {
	logLevel, natsUser string
}

// checkNode validates the shared flags and sets up the logger.
func checkNode(cfg *assemble.NodeConfig, fl nodeFlagValues) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(fl.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", fl.logLevel)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if len(cfg.NATS) == 0 {
		return fmt.Errorf("--nats: name at least one NATS server URL (nats://host:4222)")
	}
	if cfg.Heartbeat < 100*time.Millisecond || cfg.Heartbeat > time.Minute {
		return fmt.Errorf("--heartbeat %s: want between 100ms and 1m", cfg.Heartbeat)
	}
	if strings.TrimSpace(cfg.DataDir) == "" {
		return fmt.Errorf("--data-dir must not be empty")
	}
	if cfg.PKIDir == "" {
		return fmt.Errorf("--pki: name the directory with this node's certificate (see baton cluster issue)")
	}
	for _, u := range cfg.NATS {
		if !strings.HasPrefix(u, "nats://") && !strings.HasPrefix(u, "tls://") {
			return fmt.Errorf("--nats %q: want nats://host:port or tls://host:port", u)
		}
	}
	if fl.natsUser != "" {
		pw := os.Getenv(natsd.PasswordEnv)
		if pw == "" {
			return fmt.Errorf("--nats-user %q needs its password in the environment variable %s", fl.natsUser, natsd.PasswordEnv)
		}
		cfg.NATSAuth = &natsd.Credentials{User: fl.natsUser, Password: pw}
	}
	return nil
}

func newWorkerCmd() *cobra.Command {
	cfg := assemble.WorkerConfig{}
	var fl nodeFlagValues
	memoryReclaim := true
	var checkData func() error
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run a cluster worker: this host's sandboxes and instances behind the worker API",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkNode(&cfg.NodeConfig, fl); err != nil {
				return err
			}
			if err := checkData(); err != nil {
				return err
			}
			if err := checkZygoteKeep(cfg.ZygoteKeep); err != nil {
				return err
			}
			cfg.NoMemoryReclaim = !memoryReclaim
			return assemble.RunWorker(cmd.Context(), cfg)
		},
	}
	nodeFlags(cmd, &cfg.NodeConfig, &fl)
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:7070", "address of the worker API (mutual TLS)")
	f.StringVar(&cfg.Sandbox, "sandbox", "auto", "isolation: auto, container, process or fake (see baton server --help)")
	f.DurationVar(&cfg.FakeStartLatency, "fake-start-latency", 0, "with --sandbox fake: how long each instance takes to start")
	f.BoolVar(&memoryReclaim, "memory-reclaim", true, memoryReclaimUsage)
	f.Int64Var(&cfg.MaxPayloadBytes, "max-payload", 32<<20, "largest response payload in bytes")
	f.Int64Var(&cfg.MaxCodeBytes, "max-code-bytes", archive.DefaultMaxTotalBytes, "largest unpacked size of one function's code in bytes")
	f.Int64Var(&cfg.CodeCacheBytes, "code-cache-bytes", node.DefaultCodeCacheBytes, "disk the host's code cache may use in bytes")
	f.BoolVar(&cfg.Prefetch, "prefetch", true, "record and prefetch cold starts' working sets on this host (see baton server --help)")
	f.DurationVar(&cfg.ZygoteKeep, "zygote-keep", node.DefaultZygoteKeep, zygoteKeepUsage)
	checkData = bothChecks(dataFlags(f, &cfg.Data), transferFlags(f, &cfg.Transfer))
	return cmd
}

func newControllerCmd() *cobra.Command {
	cfg := assemble.ControllerConfig{}
	var fl nodeFlagValues
	var noAuthOnNetwork bool
	var checkAsync func() error
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run a cluster controller: the HTTP API and the router, on the cluster's stores, routing to workers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkNode(&cfg.NodeConfig, fl); err != nil {
				return err
			}
			if err := assemble.CheckNoAuthListen(cfg.Listen, cfg.NoAuth, noAuthOnNetwork); err != nil {
				return err
			}
			if err := checkAsync(); err != nil {
				return err
			}
			if cfg.NoAuth {
				cfg.Logger.Warn("the management API is open to anyone who can reach " + cfg.Listen + " (--no-auth)")
			}
			return assemble.RunController(cmd.Context(), cfg)
		},
	}
	nodeFlags(cmd, &cfg.NodeConfig, &fl)
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "address of the HTTP API")
	f.StringSliceVar(&cfg.Workers, "workers", nil, "worker API addresses to route to besides the workers that join through the cluster's membership (comma-separated or repeated; each must be named in its worker's certificate)")
	f.IntVar(&cfg.QueueSize, "queue-size", 1000, "requests that may wait per function while instances start")
	f.DurationVar(&cfg.QueueTimeout, "queue-timeout", 60*time.Second, "how long a request may wait for an instance")
	f.Int64Var(&cfg.MaxPayloadBytes, "max-payload", 32<<20, "largest request or response payload in bytes")
	f.Int64Var(&cfg.MaxInflightBytes, "max-inflight-bytes", 1<<30, "request payload bytes the controller holds at once (beyond: 429)")
	f.IntVar(&cfg.MaxRecords, "max-records", 5000, "invocation records kept")
	f.Int64Var(&cfg.MaxCodeBytes, "max-code-bytes", archive.DefaultMaxTotalBytes, "largest unpacked size of one function's code in bytes (beyond: deploy refused with 413)")
	f.StringVar(&cfg.TokenFile, "token-file", "", "file with the API token, created with a random token if missing (default <data-dir>/api-token)")
	checkAsync = bothChecks(asyncFlags(f, &cfg.AsyncRetryBase, &cfg.AsyncDedupWindow, &cfg.AsyncRetention), workflowFlags(f, &cfg.Workflows))
	f.BoolVar(&cfg.NoAuth, "no-auth", false, "serve the management API without a token (tests only; loopback --listen only, see --"+assemble.NoAuthOnNetworkFlag+")")
	f.BoolVar(&noAuthOnNetwork, assemble.NoAuthOnNetworkFlag, false, "allow --no-auth on a --listen address other hosts can reach: anyone there may deploy and run code")
	return cmd
}

func newClusterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Create the cluster's certificate authority and its nodes' certificates",
	}
	cmd.AddCommand(newClusterInitCmd(), newClusterIssueCmd())
	return cmd
}

func newClusterInitCmd() *cobra.Command {
	var dir, name string
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create the cluster's CA (ca.crt, ca.key) in --dir; keep ca.key off the nodes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return fmt.Errorf("--dir: name the directory for the CA")
			}
			ca, err := clusterpki.NewCA(name, 0)
			if err != nil {
				return err
			}
			if err := ca.Save(dir); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created the CA of cluster %s in %s\n", name, dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory for ca.crt and ca.key (must not hold a CA already)")
	cmd.Flags().StringVar(&name, "name", "baton", "the cluster's name")
	return cmd
}

func newClusterIssueCmd() *cobra.Command {
	var caDir, out, id, role string
	var hosts []string
	cmd := &cobra.Command{
		Use:   "issue",
		Short: "Issue a node's certificate (ca.crt, node.crt, node.key in --out) from the CA in --ca",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if caDir == "" || out == "" || id == "" {
				return fmt.Errorf("--ca, --out and --id are required")
			}
			ca, err := clusterpki.LoadCA(caDir)
			if err != nil {
				return err
			}
			identity, err := ca.Issue(clusterpki.NodeRequest{ID: id, Role: clusterpki.Role(role), Hosts: hosts})
			if err != nil {
				return err
			}
			if err := identity.Save(out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "issued the certificate of %s %s in %s\n", role, id, out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&caDir, "ca", "", "directory of the CA (from baton cluster init)")
	f.StringVar(&out, "out", "", "directory for the node's identity")
	f.StringVar(&id, "id", "", "the node's stable id")
	f.StringVar(&role, "role", "", "controller, worker or nats (a baton nats node: its node.crt and node.key are its --tls-cert and --tls-key, ca.crt its --tls-ca)")
	f.StringSliceVar(&hosts, "host", nil, "addresses peers dial the node at (IPs or DNS names; repeated or comma-separated)")
	return cmd
}
