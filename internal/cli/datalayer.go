package cli

import (
	"github.com/spf13/pflag"

	"github.com/baton-faas/baton/internal/datalayer"
)

// dataFlags registers the data layers' settings, the same on `baton
// server` and `baton worker`; check reports values that cannot work.
func dataFlags(f *pflag.FlagSet, cfg *datalayer.Config) (check func() error) {
	f.Int64Var(&cfg.LocalBytes, "data-local-bytes", datalayer.DefaultLocalBytes, "memory the host's local data layer may hold, in bytes (least recently used values are evicted first)")
	f.Int64Var(&cfg.LocalAppBytes, "data-local-app-bytes", datalayer.DefaultLocalAppBytes, "memory one application may hold in the host's local data layer, in bytes")
	f.DurationVar(&cfg.LocalTTL, "data-local-ttl", datalayer.DefaultLocalTTL, "how long a value stays in the local data layer after it was written")
	f.Int64Var(&cfg.MaxValue, "data-max-value", datalayer.DefaultMaxValue, "largest value a function may put in the data layers, in bytes (beyond: 413)")
	f.DurationVar(&cfg.GlobalTTL, "data-global-ttl", 0, "how long the global data layer keeps a value after it was written (0: until deleted); cluster-wide, the last node to start sets it")
	return cfg.Check
}
