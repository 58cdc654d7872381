package membership_test

import (
	"context"
	"errors"
	"testing"

	"github.com/baton-faas/baton/internal/cluster/membership"
	"github.com/baton-faas/baton/internal/workerapi"
)

type infoFunc func() (workerapi.Info, error)

func (f infoFunc) Info(context.Context) (workerapi.Info, error) { return f() }

func TestWorkerLoadKeepsTheLastLoadWhenInfoFails(t *testing.T) {
	info := workerapi.Info{ID: "w1", Capacity: workerapi.Resources{MemoryMB: 1024, MilliCPUs: 2000},
		Reserved: workerapi.Resources{MemoryMB: 256, MilliCPUs: 100}, Instances: 4, Sandboxes: 2}
	var fail bool
	load := membership.WorkerLoad(infoFunc(func() (workerapi.Info, error) {
		if fail {
			return workerapi.Info{}, errors.New("busy")
		}
		return info, nil
	}))
	want := membership.Load{Capacity: info.Capacity, Reserved: info.Reserved, Instances: 4, Sandboxes: 2}
	if got := load(context.Background()); got != want {
		t.Fatalf("load = %+v, want %+v", got, want)
	}
	fail = true
	if got := load(context.Background()); got != want {
		t.Fatalf("after a failed Info: load = %+v, want the last one %+v", got, want)
	}
}
