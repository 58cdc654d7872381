package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/assemble"
)

func newWorkflowCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "workflow",
		Short: "Workflows in Amazon States Language (deploy, ls, get, rm, start, executions, describe)",
	}
	cmd.AddCommand(newWorkflowDeployCmd(), newWorkflowListCmd(), newWorkflowGetCmd(), newWorkflowRemoveCmd(),
		newWorkflowStartCmd(), newWorkflowExecutionsCmd(), newWorkflowDescribeCmd())
	return cmd
}

func oneWorkflow(_ *cobra.Command, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("want exactly one workflow NAME, got %d arguments", len(args))
	}
	return nil
}

func newWorkflowDeployCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	var file string
	cmd := &cobra.Command{
		Use:   "deploy NAME --definition FILE",
		Short: "Deploy a workflow (its next version) from an ASL definition, JSON or YAML; - reads standard input",
		Args:  oneWorkflow,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return errors.New("--definition FILE is required (an Amazon States Language definition, JSON or YAML)")
			}
			var src []byte
			var err error
			if file == "-" {
				src, err = io.ReadAll(cmd.InOrStdin())
			} else {
				src, err = os.ReadFile(file)
			}
			if err != nil {
				return fmt.Errorf("--definition: %w", err)
			}
			c, err := connect()
			if err != nil {
				return err
			}
			wf, err := c.DeployWorkflow(cmd.Context(), args[0], src)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "workflow %s version %d deployed\n", wf.Name, wf.Version)
			return nil
		},
	}
	connect = serverFlag(cmd)
	cmd.Flags().StringVarP(&file, "definition", "f", "", "the definition file (JSON or YAML; - for standard input)")
	return cmd
}

func newWorkflowListCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List workflows",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			wfs, err := c.Workflows(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tUPDATED")
			for _, wf := range wfs {
				fmt.Fprintf(tw, "%s\t%d\t%s\n", wf.Name, wf.Version, wf.Updated.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	connect = serverFlag(cmd)
	return cmd
}

func newWorkflowGetCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "Show a workflow and its definition (JSON)",
		Args:  oneWorkflow,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			wf, err := c.Workflow(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), wf)
		},
	}
	connect = serverFlag(cmd)
	return cmd
}

func newWorkflowRemoveCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	cmd := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a workflow (running executions finish on their version)",
		Args:  oneWorkflow,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			if err := c.DeleteWorkflow(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "workflow %s removed\n", args[0])
			return nil
		},
	}
	connect = serverFlag(cmd)
	return cmd
}

func newWorkflowStartCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	var input, key string
	var sync bool
	cmd := &cobra.Command{
		Use:   "start NAME [--input JSON|@file] [--sync] [--idempotency-key KEY]",
		Short: "Start an execution: its id, or with --sync its output (a failed execution exits non-zero with its error)",
		Args:  oneWorkflow,
		RunE: func(cmd *cobra.Command, args []string) error {
			data := []byte(input)
			if file, ok := strings.CutPrefix(input, "@"); ok {
				var err error
				if data, err = os.ReadFile(file); err != nil {
					return fmt.Errorf("--input: %w", err)
				}
			}
			if len(strings.TrimSpace(string(data))) == 0 {
				data = []byte("{}")
			}
			if !json.Valid(data) {
				return errors.New("--input is not valid JSON")
			}
			c, err := connect()
			if err != nil {
				return err
			}
			x, err := c.StartExecution(cmd.Context(), args[0], data, client.StartOptions{Sync: sync, IdempotencyKey: key})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if !sync {
				if x.Existing {
					fmt.Fprintf(cmd.ErrOrStderr(), "the idempotency key was used before: this is its execution (%s)\n", x.Status)
				}
				fmt.Fprintln(out, x.ID)
				return nil
			}
			switch x.Status {
			case apiv1.ExecutionSucceeded:
				_, err := fmt.Fprintln(out, string(x.Output))
				return err
			case apiv1.ExecutionFailed:
				return fmt.Errorf("execution %s failed: %s: %s", x.ID, x.Error, x.Cause)
			}
			return fmt.Errorf("execution %s is still %s", x.ID, x.Status)
		},
	}
	connect = serverFlag(cmd)
	f := cmd.Flags()
	f.StringVarP(&input, "input", "d", "{}", "the execution's input: JSON, or @file")
	f.BoolVar(&sync, "sync", false, "wait for the execution to end and print its output")
	f.StringVar(&key, "idempotency-key", "", "a repeated start with this key returns the first execution")
	return cmd
}

func newWorkflowExecutionsCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	var limit int
	cmd := &cobra.Command{
		Use:   "executions NAME",
		Short: "List a workflow's executions, newest first",
		Args:  oneWorkflow,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			xs, err := c.Executions(cmd.Context(), args[0], limit)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "EXECUTION\tSTATUS\tVERSION\tSTEPS\tSTARTED\tDURATION")
			for _, x := range xs {
				dur := "-"
				if !x.Stopped.IsZero() {
					dur = x.Stopped.Sub(x.Started).Round(time.Microsecond).String()
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", x.ID, x.Status, x.Version, x.Steps, x.Started.Local().Format(time.DateTime), dur)
			}
			return tw.Flush()
		},
	}
	connect = serverFlag(cmd)
	cmd.Flags().IntVar(&limit, "limit", 100, "most executions to list (1-10000)")
	return cmd
}

func newWorkflowDescribeCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "describe EXECUTION_ID",
		Short: "Show an execution: status, input, output or error, and its history (state by state, with the host and bus of each task)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			x, err := c.DescribeExecution(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, x)
			}
			fmt.Fprintf(out, "Execution: %s\nWorkflow:  %s (version %d)\nStatus:    %s\n", x.ID, x.Workflow, x.Version, x.Status)
			fmt.Fprintf(out, "Started:   %s\n", x.Started.Local().Format(time.RFC3339Nano))
			if !x.Stopped.IsZero() {
				fmt.Fprintf(out, "Stopped:   %s (%s)\n", x.Stopped.Local().Format(time.RFC3339Nano), x.Stopped.Sub(x.Started).Round(time.Microsecond))
			}
			if x.Runner != "" {
				fmt.Fprintf(out, "Runner:    %s (epoch %d)\n", x.Runner, x.Epoch)
			}
			fmt.Fprintf(out, "Input:     %s\n", x.Input)
			switch {
			case x.Status == apiv1.ExecutionSucceeded:
				fmt.Fprintf(out, "Output:    %s\n", x.Output)
			case x.Status == apiv1.ExecutionFailed:
				fmt.Fprintf(out, "Error:     %s\nCause:     %s\n", x.Error, x.Cause)
			case x.ResumeAt != "":
				fmt.Fprintf(out, "Next:      %s\n", x.ResumeAt)
			}
			fmt.Fprintln(out, "\nHistory:")
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tEVENT\tSTATE\tATTEMPT\tMS\tHOST\tBUS\tERROR")
			for _, ev := range x.History {
				state := ev.State
				if ev.Path != "" {
					state = ev.Path + "/" + ev.State
				}
				ms, attempt := "", ""
				if ev.Millis > 0 {
					ms = fmt.Sprintf("%.3f", ev.Millis)
				}
				if ev.Attempt > 0 {
					attempt = fmt.Sprint(ev.Attempt)
				}
				errText := ev.Error
				if ev.Cause != "" {
					errText += ": " + ev.Cause
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.Time.Local().Format("15:04:05.000000"), ev.Kind, state, attempt, ms,
					ev.Host, ev.Bus, errText)
			}
			return tw.Flush()
		},
	}
	connect = serverFlag(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the execution as JSON")
	return cmd
}

// workflowFlags registers the workflow settings of `baton server` and
// `baton controller`; check reports a bad value.
func workflowFlags(f *pflag.FlagSet, cfg *assemble.WorkflowConfig) (check func() error) {
	f.DurationVar(&cfg.Retention, "workflow-retention", 7*24*time.Hour, "how long workflow executions and their histories are kept")
	f.StringVar(&cfg.Bus, "workflow-bus", "auto", "how workflow steps travel: auto (the local bus where the function is served here, else the global bus) or global (always JetStream, to compare)")
	return func() error {
		if cfg.Retention < time.Minute {
			return fmt.Errorf("--workflow-retention %s: at least 1m", cfg.Retention)
		}
		if cfg.Bus != "auto" && cfg.Bus != "global" {
			return fmt.Errorf("--workflow-bus %q: want auto or global", cfg.Bus)
		}
		return nil
	}
}

// bothChecks runs two flag checks.
func bothChecks(a, b func() error) func() error {
	return func() error {
		if err := a(); err != nil {
			return err
		}
		return b()
	}
}
