// Command baton is the Baton serverless platform: server and client in one
// binary.
package main

import (
	"os"

	"github.com/baton-faas/baton/internal/cli"
)

func main() {
	os.Exit(cli.Execute())
}
