package cli

import (
	"errors"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/baton-faas/baton/client"
)

func newInvocationCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	cmd := &cobra.Command{
		Use:   "invocation ID",
		Short: "Show an invocation: an asynchronous one's state, attempts and result, or a synchronous one's record (JSON)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			inv, err := c.AsyncInvocation(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if inv.State == "" {
				// Not an asynchronous invocation: the answer is a record.
				rec, err := c.Invocation(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				return printJSON(cmd.OutOrStdout(), rec)
			}
			return printJSON(cmd.OutOrStdout(), inv)
		},
	}
	connect = serverFlag(cmd)
	return cmd
}

func newDLQCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "dlq", Short: "Dead-letter queues of asynchronous invocations (ls, show, redrive)"}
	cmd.AddCommand(newDLQListCmd(), newDLQShowCmd(), newDLQRedriveCmd())
	return cmd
}

func newDLQListCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	var limit int
	cmd := &cobra.Command{
		Use:   "ls NAME",
		Short: "List a dead-letter queue, oldest first",
		Args:  exactName,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			entries, err := c.DeadLetters(cmd.Context(), args[0], limit)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tINVOCATION\tFUNCTION\tCONDITION\tTIME")
			for _, e := range entries {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", e.Seq, e.ID, e.Function, e.Condition, e.Time.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	connect = serverFlag(cmd)
	cmd.Flags().IntVar(&limit, "limit", 100, "most entries to list (1-10000)")
	return cmd
}

func newDLQShowCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	cmd := &cobra.Command{
		Use:   "show NAME SEQ",
		Short: "Show one entry of a dead-letter queue: the event and how it failed (JSON)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			seq, err := strconv.ParseUint(args[1], 10, 64)
			if err != nil || seq == 0 {
				return errors.New("SEQ must be an entry's sequence number, as baton dlq ls shows it")
			}
			c, err := connect()
			if err != nil {
				return err
			}
			e, err := c.DeadLetter(cmd.Context(), args[0], seq)
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), e)
		},
	}
	connect = serverFlag(cmd)
	return cmd
}

func newDLQRedriveCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	cmd := &cobra.Command{
		Use:   "redrive NAME",
		Short: "Send every event of a dead-letter queue back to its function for another try; prints the new invocation ids",
		Args:  exactName,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			ids, err := c.Redrive(cmd.Context(), args[0])
			for _, id := range ids {
				fmt.Fprintln(cmd.OutOrStdout(), id)
			}
			return err
		},
	}
	connect = serverFlag(cmd)
	return cmd
}

// asyncFlags registers the asynchronous queue's settings, the same on
// `baton server` and `baton controller`; check reports a bad value.
func asyncFlags(f *pflag.FlagSet, retryBase, dedupWindow, retention *time.Duration) (check func() error) {
	f.DurationVar(retryBase, "async-retry-base", time.Second, "wait before an asynchronous event's first retry (doubling after, with jitter, at most 5m)")
	f.DurationVar(dedupWindow, "async-dedup-window", 10*time.Minute, "how long an idempotency key returns its first invocation's id")
	f.DurationVar(retention, "async-retention", 24*time.Hour, "how long an asynchronous invocation's state and result are kept after it last changed")
	return func() error {
		for _, d := range []struct {
			flag string
			v    time.Duration
		}{{"async-retry-base", *retryBase}, {"async-dedup-window", *dedupWindow}, {"async-retention", *retention}} {
			if d.v <= 0 {
				return fmt.Errorf("--%s %s: must be positive", d.flag, d.v)
			}
		}
		if *retention < time.Minute || *dedupWindow < time.Second {
			return fmt.Errorf("--async-retention %s / --async-dedup-window %s: at least 1m / 1s", *retention, *dedupWindow)
		}
		return nil
	}
}
