package membership

import (
	"context"

	"github.com/baton-faas/baton/internal/workerapi"
)

// WorkerLoad returns a Self.Load for a worker: its load from Info, or when
// Info fails, the last load it got (a heartbeat must not report an empty
// worker because one call failed). Give each Member its own.
func WorkerLoad(w interface {
	Info(context.Context) (workerapi.Info, error)
}) func(context.Context) Load {
	var last Load // only the heartbeat's goroutine calls the function
	return func(ctx context.Context) Load {
		if info, err := w.Info(ctx); err == nil {
			last = Load{Capacity: info.Capacity, Reserved: info.Reserved, Instances: info.Instances, Sandboxes: info.Sandboxes}
		}
		return last
	}
}
