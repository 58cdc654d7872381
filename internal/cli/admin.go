package cli

import (
	"github.com/spf13/pflag"

	"github.com/baton-faas/baton/internal/assemble"
)

// adminFlag registers --admin-addr, the opt-in admin listener of the
// long-running roles (server, controller, worker).
func adminFlag(f *pflag.FlagSet, addr *string) {
	f.StringVar(addr, assemble.AdminAddrFlag, "", "serve Go's profiles (/debug/pprof/) on this loopback host:port, a listener of its own (off by default; "+
		"e.g. go tool pprof http://127.0.0.1:6060/debug/pprof/profile?seconds=30)")
}
