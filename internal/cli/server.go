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
	"github.com/baton-faas/baton/internal/node"
)

// zygoteKeepUsage describes --zygote-keep (server and worker).
const zygoteKeepUsage = "how long a function version's zygote (Python's grain worker) and its sandbox are kept, paused and with their page cache reclaimed, " +
	"after its last instance was stopped, so that its next cold start forks instead of importing again; a new version, a delete, " +
	"the node's memory and shutdown end a keep sooner; 0 keeps nothing"

// checkZygoteKeep refuses a negative --zygote-keep.
func checkZygoteKeep(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("--zygote-keep %s: want a duration of 0 (keep nothing) or more", d)
	}
	return nil
}

// memoryReclaimUsage describes --memory-reclaim (server and worker).
const memoryReclaimUsage = "give the memory of instances that leave a container sandbox back to the host at once " +
	"(shrink its limit in the background, reclaiming the page cache they charged); false leaves that cache until host memory pressure evicts it (for comparison)"

func newServerCmd() *cobra.Command {
	cfg := assemble.Config{}
	var logLevel string
	var checkAsync, checkData func() error
	memoryReclaim := true
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run controller, worker and embedded NATS JetStream in one process",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel)
			}
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			cfg.NoMemoryReclaim = !memoryReclaim
			if strings.TrimSpace(cfg.DataDir) == "" {
				return fmt.Errorf("--data-dir must not be empty")
			}
			if err := checkAsync(); err != nil {
				return err
			}
			if err := checkData(); err != nil {
				return err
			}
			if err := checkZygoteKeep(cfg.ZygoteKeep); err != nil {
				return err
			}
			return assemble.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "address of the HTTP API")
	adminFlag(f, &cfg.AdminListen)
	f.StringVar(&cfg.DataDir, "data-dir", assemble.DefaultDataDir(), "directory for durable state (functions, code, records)")
	f.StringVar(&cfg.Sandbox, "sandbox", "auto", "isolation: auto (containers where this host can run them, else processes with a warning), container (fail if unavailable), process (no isolation) or fake (no processes: instances echo events, for measuring the platform)")
	f.DurationVar(&cfg.FakeStartLatency, "fake-start-latency", 0, "with --sandbox fake: how long each instance takes to start")
	f.BoolVar(&memoryReclaim, "memory-reclaim", true, memoryReclaimUsage)
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", 30*time.Second, "how long in-flight invocations may finish on SIGINT/SIGTERM")
	f.IntVar(&cfg.QueueSize, "queue-size", 1000, "requests that may wait per function while instances start")
	f.DurationVar(&cfg.QueueTimeout, "queue-timeout", 60*time.Second, "how long a request may wait for an instance")
	f.Int64Var(&cfg.MaxPayloadBytes, "max-payload", 32<<20, "largest request or response payload in bytes")
	f.Int64Var(&cfg.MaxInflightBytes, "max-inflight-bytes", 1<<30, "request payload bytes the server holds at once (beyond: 429)")
	f.IntVar(&cfg.MaxRecords, "max-records", 5000, "invocation records kept")
	f.StringVar(&cfg.TokenFile, "token-file", "", "file with the API token, created with a random token if missing (default <data-dir>/api-token)")
	f.StringVar(&cfg.NATSListen, "nats-listen", "", "also serve the embedded NATS to local clients at this loopback host:port (to publish to NATS-subject triggers)")
	checkAsync = bothChecks(asyncFlags(f, &cfg.AsyncRetryBase, &cfg.AsyncDedupWindow, &cfg.AsyncRetention), workflowFlags(f, &cfg.Workflows))
	f.BoolVar(&cfg.NoAuth, "no-auth", false, "serve the management API without a token (for tests; anyone who can connect may manage functions; loopback --listen only, see --"+assemble.NoAuthOnNetworkFlag+")")
	f.BoolVar(&cfg.NoAuthOnNetwork, assemble.NoAuthOnNetworkFlag, false, "allow --no-auth on a --listen address other hosts can reach: anyone there may deploy and run code")
	f.Int64Var(&cfg.MaxCodeBytes, "max-code-bytes", archive.DefaultMaxTotalBytes, "largest unpacked size of one function's code in bytes (beyond: deploy refused with 413)")
	f.Int64Var(&cfg.CodeCacheBytes, "code-cache-bytes", node.DefaultCodeCacheBytes, "disk the host's code cache may use in bytes; unused code is evicted first, then instance starts are refused")
	f.DurationVar(&cfg.ZygoteKeep, "zygote-keep", node.DefaultZygoteKeep, zygoteKeepUsage)
	f.BoolVar(&cfg.Prefetch, "prefetch", true, "record each function version's cold-start working set (pages of its image and code read before the runtime asked for work) on its first cold start on this host and prefetch it in one pass on later cold starts; --prefetch=false turns both off")
	checkData = bothChecks(dataFlags(f, &cfg.Data), transferFlags(f, &cfg.Transfer))
	return cmd
}
