package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	apiv1 "github.com/baton-faas/baton/api/v1"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/runtimes"
)

func newDeployCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	var (
		spec     apiv1.FunctionSpec
		code     string
		envVars  []string
		asyncCfg apiv1.AsyncConfig
		retries  int
		prefetch bool
	)
	cmd := &cobra.Command{
		Use:   "deploy NAME --runtime " + strings.Join(runtimes.Names(), "|") + " --handler HANDLER --code DIR_OR_ZIP",
		Short: "Register a function or deploy a new version of it",
		Long: `Register a function or update it. The flags describe the whole function:
a flag left out takes its default, not the previous value. Changing code,
runtime, handler, env, memory, timeout or concurrency makes a new version;
running invocations finish on the old one.

A .zip file is streamed to the server, a directory is zipped in memory first.
A deploy request larger than 1 MiB is first checked against the server's limit
(reported by /healthz), so an oversized archive fails at once without being sent.`,
		Args: exactName,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			if code == "" {
				return errors.New("--code is required: a directory or a .zip file with the function's code")
			}
			zipped, size, err := openCode(code)
			if err != nil {
				return err
			}
			defer zipped.Close()
			if cmd.Flags().Changed("max-retry-attempts") {
				asyncCfg.MaxRetryAttempts = &retries
			}
			if asyncCfg != (apiv1.AsyncConfig{}) {
				spec.Async = &asyncCfg
			}
			if cmd.Flags().Changed("prefetch") {
				spec.Prefetch = &prefetch
			}
			spec.Env = map[string]string{}
			for _, kv := range envVars {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return fmt.Errorf("--env %q: want KEY=VALUE", kv)
				}
				spec.Env[k] = v
			}
			reqSize, err := client.DeployRequestSize(spec, size)
			if err != nil {
				return err
			}
			if err := checkLimit(cmd, c, reqSize, func(h apiv1.Health) int64 { return h.MaxDeployBytes },
				fmt.Sprintf("the code archive (%d bytes) makes a deploy request of %d bytes", size, reqSize)); err != nil {
				return err
			}
			v, err := c.DeployCode(cmd.Context(), args[0], spec, zipped, size)
			if err != nil {
				return err
			}
			switch {
			case v.Created:
				fmt.Fprintf(cmd.OutOrStdout(), "created function %s version %d (%s)\n", v.Name, v.Version, v.Spec.Runtime)
			case v.NewVersion:
				fmt.Fprintf(cmd.OutOrStdout(), "deployed function %s version %d\n", v.Name, v.Version)
			default:
				fmt.Fprintf(cmd.OutOrStdout(), "function %s unchanged at version %d (settings updated)\n", v.Name, v.Version)
			}
			return nil
		},
	}
	connect = serverFlag(cmd)
	f := cmd.Flags()
	f.StringVar(&spec.Runtime, "runtime", "", runtimes.NameList())
	f.StringVar(&spec.Handler, "handler", "", "handler, e.g. app.handler (file app, function handler)")
	f.StringVar(&code, "code", "", "directory or .zip file with the code")
	f.StringArrayVar(&envVars, "env", nil, "environment variable KEY=VALUE (repeatable)")
	f.IntVar(&spec.MemoryMB, "memory", 0, fmt.Sprintf("memory in MB (default %d)", function.DefaultMemoryMB))
	f.IntVar(&spec.TimeoutSeconds, "timeout", 0, fmt.Sprintf("timeout in seconds (default %d)", function.DefaultTimeoutSeconds))
	f.IntVar(&spec.Concurrency, "concurrency", 0, "events one instance serves at once (runtimes that allow it: "+strings.Join(runtimes.Concurrent(), ", ")+"; default 1)")
	f.IntVar(&spec.MinScale, "min-scale", 0, "instances kept even when idle")
	f.IntVar(&spec.MaxScale, "max-scale", 0, fmt.Sprintf("most instances (default %d)", function.DefaultMaxScale))
	f.BoolVar(&spec.Idempotent, "idempotent", false, "running an event twice is harmless: an invocation whose worker is lost is run again elsewhere instead of failing with worker-lost")
	f.StringVar(&spec.Autoscaler, "autoscaler", "", "scaling policy: immediate (default: up at once on queued demand, down after the idle timeout) or kpa (Knative: 60 s stable / 6 s panic windows)")
	f.IntVar(&retries, "max-retry-attempts", function.DefaultMaxRetryAttempts, "asynchronous invocations: retries after a failed attempt (0-2)")
	f.IntVar(&asyncCfg.MaxEventAgeSeconds, "max-event-age", 0, fmt.Sprintf("asynchronous invocations: seconds an event may wait for a successful attempt (%d-%d; default %d)", function.MinEventAgeSeconds, function.MaxEventAgeSeconds, function.DefaultMaxEventAgeSeconds))
	f.StringVar(&asyncCfg.OnSuccess, "on-success", "", "asynchronous invocations: where a success goes: function:NAME or dlq:NAME")
	f.StringVar(&asyncCfg.OnFailure, "on-failure", "", "asynchronous invocations: where a final failure goes: function:NAME or dlq:NAME")
	f.IntVar(&asyncCfg.Concurrency, "async-concurrency", 0, "asynchronous events running at once (default: half of max-scale × concurrency)")
	f.StringVar(&spec.App, "app", "", "application: functions of one app share a sandbox per host (default: the function's name)")
	f.StringVar(&spec.Network, "network", "", "isolated (own network namespace, loopback only; default) or host")
	f.StringVar(&spec.Image, "image", "", "root filesystem image (default: the runtime's base image)")
	f.BoolVar(&prefetch, "prefetch", true, "record the working set of each version's first cold start on a host and prefetch it on later cold starts there; --prefetch=false turns both off for this function")
	f.IntVar(&spec.IdleTimeoutSeconds, "idle-timeout", 0, fmt.Sprintf("seconds an idle instance is kept (default %d)", function.DefaultIdleSeconds))
	return cmd
}

func exactName(_ *cobra.Command, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("want exactly one function NAME, got %d arguments", len(args))
	}
	return nil
}

// openCode zips a directory (in memory), or opens a zip file to stream
// it as is; it returns the archive and its size.
func openCode(path string) (io.ReadCloser, int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, 0, fmt.Errorf("--code: %w", err)
	}
	if st.IsDir() {
		var buf bytes.Buffer
		if err := archive.ZipDir(path, &buf); err != nil {
			return nil, 0, fmt.Errorf("zip %s: %w", path, err)
		}
		return io.NopCloser(&buf), int64(buf.Len()), nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("--code: %w", err)
	}
	return f, st.Size(), nil
}

// checkLimitAbove is the request size from which the CLI asks the server
// for its limits before sending; smaller requests are sent at once.
const checkLimitAbove = 1 << 20

// checkLimit refuses a request of size bytes that is over the server's
// limit (read from /healthz), before anything large is built or sent.
// A server that does not report the limit answers 413 itself.
func checkLimit(cmd *cobra.Command, c *client.Client, size int64, limit func(apiv1.Health) int64, what string) error {
	if size <= checkLimitAbove {
		return nil
	}
	h, err := c.Health(cmd.Context())
	if err != nil {
		return err
	}
	if l := limit(h); l > 0 && size > l {
		return fmt.Errorf("%s, over the server's limit of %d bytes; nothing was sent", what, l)
	}
	return nil
}

func newInvokeCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	var data, key string
	var verbose, async bool
	cmd := &cobra.Command{
		Use:   "invoke NAME [--data JSON|@file] [--async [--idempotency-key KEY]]",
		Short: "Invoke a function and print its result",
		Long: `Invoke a function and print its result. An event from a file (--data @file)
is streamed to the server, not read into memory. An event larger than 1 MiB is
first checked against the server's payload limit (its --max-payload, reported
by /healthz), so that an oversized event fails at once without being sent.`,
		Args: exactName,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			var event io.Reader
			var size int64
			if rest, ok := strings.CutPrefix(data, "@"); ok {
				// A file is streamed; the server checks that it is JSON.
				f, err := os.Open(rest)
				if err != nil {
					return fmt.Errorf("--data: %w", err)
				}
				defer f.Close()
				st, err := f.Stat()
				if err != nil {
					return fmt.Errorf("--data: %w", err)
				}
				event, size = f, st.Size()
			} else {
				if data != "" && !json.Valid([]byte(data)) {
					return errors.New("--data is not valid JSON")
				}
				event, size = strings.NewReader(data), int64(len(data))
			}
			if err := checkLimit(cmd, c, size, func(h apiv1.Health) int64 { return h.MaxPayloadBytes },
				fmt.Sprintf("the event is %d bytes", size)); err != nil {
				return err
			}
			if key != "" && !async {
				return errors.New("--idempotency-key applies to --async invocations only")
			}
			if async {
				payload, err := io.ReadAll(event)
				if err != nil {
					return fmt.Errorf("--data: %w", err)
				}
				acc, err := c.InvokeAsync(cmd.Context(), args[0], payload, key)
				if err != nil {
					return err
				}
				if acc.Duplicate {
					fmt.Fprintf(cmd.ErrOrStderr(), "idempotency key seen before: this is the first invocation's id\n")
				}
				fmt.Fprintln(cmd.OutOrStdout(), acc.ID)
				return nil
			}
			resp, err := c.InvokeStream(cmd.Context(), args[0], event, size)
			if verbose && resp.Status != 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "invocation %s  status %d  cold %v  version %d\nServer-Timing: %s\n",
					resp.ID, resp.Status, resp.Cold, resp.Version, resp.Header.Get("Server-Timing"))
			}
			if err != nil {
				var apiErr *client.Error
				if errors.As(err, &apiErr) && len(apiErr.Body.StackTrace) > 0 {
					return fmt.Errorf("%w\n  %s", err, strings.Join(apiErr.Body.StackTrace, "\n  "))
				}
				return err
			}
			out := cmd.OutOrStdout()
			_, _ = out.Write(resp.Body)
			if len(resp.Body) == 0 || resp.Body[len(resp.Body)-1] != '\n' {
				fmt.Fprintln(out)
			}
			return nil
		},
	}
	connect = serverFlag(cmd)
	cmd.Flags().StringVarP(&data, "data", "d", "", "event as JSON, or @file to read it from a file")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print invocation id, cold flag and timings to stderr")
	cmd.Flags().BoolVar(&async, "async", false, "invoke asynchronously: print the invocation id once the event is stored (see baton invocation ID)")
	cmd.Flags().StringVar(&key, "idempotency-key", "", "with --async: a repeat with the same key within the server's dedup window returns the first id")
	return cmd
}

func newListCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List functions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			fns, err := c.List(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tRUNTIME\tHANDLER\tINSTANCES\tQUEUED\tUPDATED")
			for _, f := range fns {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%s\n", f.Name, f.Version, f.Spec.Runtime, f.Spec.Handler,
					len(f.Status.Instances), f.Status.Queued, f.UpdatedAt.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	connect = serverFlag(cmd)
	return cmd
}

func newGetCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "Show a function, its settings and its live instances (JSON)",
		Args:  exactName,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			v, err := c.Get(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			warnIsolation(cmd.ErrOrStderr(), v.Isolation)
			if err := printJSON(cmd.OutOrStdout(), v); err != nil {
				return err
			}
			// On stderr, beside the isolation warning, so that stdout
			// stays JSON.
			if v.WorkingSet != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "working set: %s\n", v.WorkingSet.Summary)
			}
			return nil
		},
	}
	connect = serverFlag(cmd)
	return cmd
}

// warnIsolation says loudly, on stderr so that the JSON on stdout stays
// parseable, when the server runs functions without container isolation.
func warnIsolation(w io.Writer, isolation string) {
	if !strings.HasPrefix(isolation, "container (") {
		fmt.Fprintf(w, "WARNING: SANDBOX ISOLATION IS OFF on this server: %s\n", isolation)
	}
}

func newRemoveCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	cmd := &cobra.Command{
		Use:   "rm NAME",
		Short: "Delete a function",
		Args:  exactName,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			if err := c.Delete(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted function %s\n", args[0])
			return nil
		},
	}
	connect = serverFlag(cmd)
	return cmd
}

func newLogsCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Show recent invocation records of a function with their output",
		Args:  exactName,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			if _, err := c.Get(cmd.Context(), args[0]); err != nil {
				return err
			}
			recs, err := c.Invocations(cmd.Context(), args[0], limit)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), recs)
			}
			out := cmd.OutOrStdout()
			// Oldest first, as a log reads.
			for i := len(recs) - 1; i >= 0; i-- {
				r := recs[i]
				cold := ""
				if r.Cold {
					cold = fmt.Sprintf(" cold (init %.1f ms)", r.InitMs)
				}
				async := ""
				if r.Attempt > 0 {
					async = fmt.Sprintf("  async attempt %d", r.Attempt)
				}
				fmt.Fprintf(out, "%s  %s  v%d  %s%s  %.1f ms (wait %.1f, exec %.1f)%s  instance %s\n",
					r.Start.Local().Format("2006-01-02 15:04:05.000"), r.ID, r.Version, r.Status, async, r.DurationMs, r.WaitMs, r.ExecMs, cold, r.Instance)
				if r.Error != nil {
					fmt.Fprintf(out, "  error: %s: %s\n", r.Error.Type, r.Error.Message)
				}
				for _, line := range strings.Split(strings.TrimRight(r.Logs, "\n"), "\n") {
					if line != "" {
						fmt.Fprintf(out, "  | %s\n", line)
					}
				}
				if r.LogsTruncated {
					fmt.Fprintln(out, "  | … output truncated")
				}
			}
			return nil
		},
	}
	connect = serverFlag(cmd)
	cmd.Flags().IntVarP(&limit, "limit", "n", 20, "number of records")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the records as JSON")
	return cmd
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
