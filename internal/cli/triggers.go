package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
)

func newTriggerCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "trigger", Short: "Schedules and NATS subjects that invoke functions asynchronously (add, ls, rm)"}
	cmd.AddCommand(newTriggerAddCmd(), newTriggerListCmd(), newTriggerRemoveCmd())
	return cmd
}

func newTriggerAddCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	var req apiv1.TriggerRequest
	var event string
	cmd := &cobra.Command{
		Use:   `add NAME (--schedule "rate(5 minutes)"|"cron(0/5 * * * ? *)" [--event JSON] | --nats-subject SUBJECT)`,
		Short: "Invoke a function on a schedule or for every message on a NATS subject; prints the trigger's id",
		Long: `Invoke a function asynchronously on a schedule (EventBridge's rate(...) and
cron(...) forms, UTC; rate(N seconds) too), with a fixed event, or for every
message published on a NATS subject of the cluster's NATS (the event is
{"subject": ..., "data": ...}). Each tick fires once across all controllers;
ticks that pass while no controller can fire them are counted as missed (see
baton trigger ls). Retries and destinations are the function's.`,
		Args: exactName,
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Function = args[0]
			if (req.Schedule == "") == (req.NATSSubject == "") {
				return errors.New("give one of --schedule and --nats-subject")
			}
			if event != "" {
				if !json.Valid([]byte(event)) {
					return errors.New("--event is not valid JSON")
				}
				req.Event = json.RawMessage(event)
			}
			c, err := connect()
			if err != nil {
				return err
			}
			t, err := c.AddTrigger(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), t.ID)
			return nil
		},
	}
	connect = serverFlag(cmd)
	cmd.Flags().StringVar(&req.Schedule, "schedule", "", `rate(N unit) or cron(minutes hours day-of-month month day-of-week year), UTC`)
	cmd.Flags().StringVar(&event, "event", "", "the event each tick sends (JSON; default {})")
	cmd.Flags().StringVar(&req.NATSSubject, "nats-subject", "", "NATS subject (wildcards allowed) whose messages become invocations")
	return cmd
}

func newTriggerListCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	var fn string
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List triggers with how often they fired and missed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			ts, err := c.Triggers(cmd.Context(), fn)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tFUNCTION\tSOURCE\tFIRED\tMISSED\tLAST TICK\tLAST ERROR")
			for _, t := range ts {
				source := t.Schedule
				if t.Kind == "nats" {
					source = "nats:" + t.NATSSubject
				}
				last := "-"
				if !t.LastTick.IsZero() {
					last = t.LastTick.Local().Format(time.DateTime)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", t.ID, t.Function, source, t.Fired, t.Missed, last, t.LastError)
			}
			return tw.Flush()
		},
	}
	connect = serverFlag(cmd)
	cmd.Flags().StringVar(&fn, "function", "", "only this function's triggers")
	return cmd
}

func newTriggerRemoveCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	cmd := &cobra.Command{
		Use:   "rm ID",
		Short: "Delete a trigger",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			return c.RemoveTrigger(cmd.Context(), args[0])
		},
	}
	connect = serverFlag(cmd)
	return cmd
}
