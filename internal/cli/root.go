// Package cli is the `baton` command line: the server and the client
// commands that drive it through the HTTP API.
package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/assemble"
)

// DefaultServer is the API address client commands use unless told
// otherwise (flag --server or BATON_SERVER).
const DefaultServer = "http://127.0.0.1:8080"

// NewRoot builds the command tree.
func NewRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "baton",
		Short:         "Baton: serverless functions with millisecond cold starts",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newWorkflowCmd(), newServerCmd(), newDeployCmd(), newInvokeCmd(), newListCmd(), newGetCmd(), newRemoveCmd(), newLogsCmd(), newBenchCmd(), newReplayCmd(), newImageCmd(),
		newNodesCmd(), newWorkerCmd(), newControllerCmd(), newClusterCmd(), newNATSCmd(), newInvocationCmd(), newDLQCmd(), newTriggerCmd())
	return root
}

// Execute runs the CLI and returns the process exit code.
func Execute() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := NewRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "baton:", err)
		return 1
	}
	return 0
}

// serverFlag adds --server and --token to a client command and returns a
// constructor for the API client.
func serverFlag(cmd *cobra.Command) func() (*client.Client, error) {
	addr := cmd.Flags().String("server", defaultServer(), "URL of the baton API, or several comma-separated (a cluster's controllers: the next is tried when one is unreachable) (env BATON_SERVER)")
	token := cmd.Flags().String("token", "", "API token (env BATON_TOKEN; default: read from "+assemble.DefaultTokenFile()+" when readable)")
	return func() (*client.Client, error) { return client.New(*addr, nil, client.WithToken(apiToken(*token))) }
}

// apiToken picks the API token: the flag, else BATON_TOKEN, else the
// token file of a server with the default data directory on this host
// (readable by the user that runs the server). No token is fine for
// servers started with --no-auth and for invocations.
func apiToken(flag string) string {
	if flag != "" {
		return flag
	}
	if t := os.Getenv("BATON_TOKEN"); t != "" {
		return t
	}
	t, _ := assemble.ReadToken(assemble.DefaultTokenFile())
	return t
}
