package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
)

func newNodesCmd() *cobra.Command {
	var connect func() (*client.Client, error)
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "nodes",
		Short: "List the cluster's nodes: role, address, state, load, last heartbeat",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			nodes, err := c.Nodes(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), apiv1.NodeList{Nodes: nodes})
			}
			return printNodes(cmd.OutOrStdout(), nodes, time.Now())
		},
	}
	connect = serverFlag(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the nodes as JSON")
	return cmd
}

// printNodes writes the table of `baton nodes`; now dates the heartbeats.
func printNodes(w io.Writer, nodes []apiv1.Node, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tROLES\tADDRESS\tSTATE\tMEMORY (RESERVED/CAPACITY)\tCPU\tINSTANCES\tSANDBOXES\tHEARTBEAT")
	for _, n := range nodes {
		mem, cpu := "-", "-"
		if n.Capacity.MemoryMB > 0 {
			mem = fmt.Sprintf("%d/%d MB", n.Reserved.MemoryMB, n.Capacity.MemoryMB)
		}
		if n.Capacity.MilliCPUs > 0 {
			cpu = fmt.Sprintf("%.1f/%.1f", float64(n.Reserved.MilliCPUs)/1000, float64(n.Capacity.MilliCPUs)/1000)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", n.ID, strings.Join(n.Roles, ","), n.Address, n.State,
			mem, cpu, n.Instances, n.Sandboxes, ago(now, n.LastHeartbeat))
	}
	return tw.Flush()
}

// ago says how long before now t was, coarsely: heartbeats are seconds
// apart.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "now" // the node's clock is ahead of ours
	case d < time.Minute:
		return fmt.Sprintf("%.1fs ago", d.Seconds())
	}
	return d.Round(time.Second).String() + " ago"
}
