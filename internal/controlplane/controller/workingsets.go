package controller

import (
	"context"
	"sort"
	"time"

	"github.com/baton-faas/baton/internal/workerapi"
)

// workingSetTimeout bounds the question to each worker: a slow or lost
// worker leaves its working set out of the answer rather than holding
// `baton get` up.
const workingSetTimeout = 2 * time.Second

// HostWorkingSet is a worker's recorded working set of a version.
type HostWorkingSet struct {
	Worker string
	workerapi.WorkingSet
}

// WorkingSets asks every worker which working set it recorded for the
// function version (REAP), in worker order. The workers are asked one
// after the other without a lock held.
func (c *Controller) WorkingSets(ctx context.Context, name string, version int) []HostWorkingSet {
	c.wmu.Lock()
	workers := make(map[string]workerapi.Worker, len(c.workers))
	for id, l := range c.workers {
		workers[id] = l.api
	}
	c.wmu.Unlock()
	ids := make([]string, 0, len(workers))
	for id := range workers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var out []HostWorkingSet
	for _, id := range ids {
		ictx, cancel := context.WithTimeout(ctx, workingSetTimeout)
		info, err := workers[id].Info(ictx)
		cancel()
		if err != nil {
			c.log.Debug("worker info for working sets", "worker", id, "err", err)
			continue
		}
		for _, ws := range info.WorkingSets {
			if ws.Function == name && ws.Version == version {
				out = append(out, HostWorkingSet{Worker: id, WorkingSet: ws})
			}
		}
	}
	return out
}
