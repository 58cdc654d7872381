package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
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

// triggerPasswordEnv holds the password of an external NATS trigger's
// --nats-user (not a flag: the process list would show it). Not
// BATON_NATS_PASSWORD, which is Baton's own cluster's and must not be
// sent to another server by mistake.
const triggerPasswordEnv = "BATON_TRIGGER_NATS_PASSWORD"

func newTriggerAddCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	var req apiv1.TriggerRequest
	var event string
	var ext apiv1.ExternalNATS
	var passwordFile, credsFile string
	cmd := &cobra.Command{
		Use:   `add NAME (--schedule "rate(5 minutes)"|"cron(0/5 * * * ? *)" [--event JSON] | --nats-subject SUBJECT [--nats-url URL ...])`,
		Short: "Invoke a function on a schedule or for every message on a NATS subject; prints the trigger's id",
		Long: `Invoke a function asynchronously on a schedule (EventBridge's rate(...) and
cron(...) forms, UTC; rate(N seconds) too), with a fixed event, or for every
message published on a NATS subject (the event is {"subject": ..., "data": ...}).
Each tick fires once across all controllers; ticks that pass while no
controller can fire them are not fired late but reported as missed, with
when (see baton trigger ls). Retries and destinations are the function's.

The subject is on Baton's own NATS, or with --nats-url on an external NATS
server with JetStream, which the server connects to (now, to check it, and
whenever it forwards) with --nats-user (password in ` + triggerPasswordEnv + ` or
--nats-password-file) or --nats-creds. Baton creates a stream there for the
subject (BATON_TRIGGER_<id>, deleted with the trigger), so messages published
while Baton is down wait for it; --nats-stream consumes an existing stream
that captures the subject instead (messages published from now on), and only
Baton's consumer is deleted with the trigger. A message is acknowledged
there once its event is stored in Baton's queue (at least once). The
credentials are stored with the trigger and never shown.`,
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
			external, err := externalNATS(cmd, &ext, passwordFile, credsFile)
			if err != nil {
				return err
			}
			if external {
				if req.NATSSubject == "" {
					return errors.New("--nats-url and its flags apply to --nats-subject")
				}
				req.NATS = &ext
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
	f := cmd.Flags()
	f.StringVar(&req.Schedule, "schedule", "", `rate(N unit) or cron(minutes hours day-of-month month day-of-week year), UTC`)
	f.StringVar(&event, "event", "", "the event each tick sends (JSON; default {})")
	f.StringVar(&req.NATSSubject, "nats-subject", "", "NATS subject (wildcards allowed) whose messages become invocations")
	f.StringVar(&ext.URL, "nats-url", "", "external NATS server(s) of --nats-subject: nats://host:port or tls://host:port, comma-separated (default: Baton's own NATS)")
	f.StringVar(&ext.User, "nats-user", "", "log in to --nats-url as this user, with the password in "+triggerPasswordEnv+" or --nats-password-file")
	f.StringVar(&passwordFile, "nats-password-file", "", "file holding the password of --nats-user")
	f.StringVar(&credsFile, "nats-creds", "", "log in to --nats-url with this .creds file (user JWT and nkey seed)")
	f.StringVar(&ext.Stream, "nats-stream", "", "consume this existing stream of --nats-url (it must capture the subject) instead of one Baton creates")
	return cmd
}

// externalNATS reads the external NATS flags into ext; false when none
// was given.
func externalNATS(cmd *cobra.Command, ext *apiv1.ExternalNATS, passwordFile, credsFile string) (bool, error) {
	given := ext.URL != "" || ext.User != "" || passwordFile != "" || credsFile != "" || ext.Stream != ""
	if !given {
		return false, nil
	}
	if ext.URL == "" {
		return false, errors.New("--nats-user, --nats-password-file, --nats-creds and --nats-stream need --nats-url")
	}
	if ext.User != "" && credsFile != "" {
		return false, errors.New("give --nats-user or --nats-creds, not both")
	}
	if passwordFile != "" && ext.User == "" {
		return false, errors.New("--nats-password-file needs --nats-user")
	}
	if ext.User != "" {
		if passwordFile != "" {
			b, err := os.ReadFile(passwordFile)
			if err != nil {
				return false, fmt.Errorf("--nats-password-file: %w", err)
			}
			ext.Password = strings.TrimRight(string(b), "\r\n")
		} else {
			ext.Password = os.Getenv(triggerPasswordEnv)
		}
		if ext.Password == "" {
			return false, fmt.Errorf("--nats-user %q needs a password: in %s or --nats-password-file", ext.User, triggerPasswordEnv)
		}
	}
	if credsFile != "" {
		b, err := os.ReadFile(credsFile)
		if err != nil {
			return false, fmt.Errorf("--nats-creds: %w", err)
		}
		ext.Creds = string(b)
	}
	return true, nil
}

func newTriggerListCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	var fn string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List triggers with how often they fired and which ticks they missed",
		Long: `List triggers with how often they fired. MISSED counts a schedule's ticks that
passed while no controller could fire them (an outage): they are not fired
late. MISSED TICKS shows the latest run of them (first to last tick, local
time, and how many); --json shows the last ten runs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			ts, err := c.Triggers(cmd.Context(), fn)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(apiv1.TriggerList{Triggers: ts})
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tFUNCTION\tSOURCE\tFIRED\tMISSED\tMISSED TICKS\tLAST TICK\tLAST ERROR")
			for _, t := range ts {
				last := "-"
				if !t.LastTick.IsZero() {
					last = t.LastTick.Local().Format(time.DateTime)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", t.ID, t.Function, triggerSource(t), t.Fired, t.Missed,
					missedTicks(t.MissedTicks), last, t.LastError)
			}
			return tw.Flush()
		},
	}
	connect = serverFlag(cmd)
	cmd.Flags().StringVar(&fn, "function", "", "only this function's triggers")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the triggers as JSON")
	return cmd
}

// triggerSource says where a trigger's events come from; of an external
// NATS server's credentials only which kind is stored.
func triggerSource(t apiv1.Trigger) string {
	if t.Kind != "nats" {
		return t.Schedule
	}
	if t.NATS == nil {
		return "nats:" + t.NATSSubject
	}
	var auth string
	switch t.NATS.Auth {
	case "password":
		auth = "user " + t.NATS.User + ", password set"
	case "creds":
		auth = "creds set"
	default:
		auth = "no login"
	}
	stream := ""
	if !t.NATS.StreamOwned {
		stream = " stream " + t.NATS.Stream
	}
	return fmt.Sprintf("nats:%s@%s%s (%s)", t.NATSSubject, t.NATS.URL, stream, auth)
}

// missedTicks shows the latest run of missed ticks: "first – last (n)",
// and how many runs came before it.
func missedTicks(runs []apiv1.MissedTicks) string {
	if len(runs) == 0 {
		return "-"
	}
	r := runs[len(runs)-1]
	first, last := r.First.Local(), r.Last.Local()
	lastFmt := time.TimeOnly
	if first.YearDay() != last.YearDay() || first.Year() != last.Year() {
		lastFmt = time.DateTime
	}
	out := fmt.Sprintf("%s – %s (%d)", first.Format(time.DateTime), last.Format(lastFmt), r.Count)
	if len(runs) > 1 {
		out += fmt.Sprintf(" +%d earlier", len(runs)-1)
	}
	return out
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
