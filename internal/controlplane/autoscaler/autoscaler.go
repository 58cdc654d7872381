// Package autoscaler decides how many instances a function needs. It is a
// pure function of the router's state so that the policy can be tested
// without processes or clocks.
//
// Policy: every in-flight or queued request needs a slot; an instance has
// Concurrency slots. Scale-up is immediate (a waiting request is a request
// that is getting slower); scale-down removes instances that have been idle
// longer than the idle timeout, never below MinScale or below what current
// demand needs.
package autoscaler

import (
	"sort"
	"time"
)

// IdleInstance is a ready instance with no events in flight.
type IdleInstance struct {
	ID    string
	Since time.Time
}

// Input is the router's view of one function's current version.
type Input struct {
	// Demand counts requests in flight plus requests queued.
	Demand      int
	Concurrency int
	// Ready and Starting count instances of the current version.
	Ready    int
	Starting int
	MinScale int
	MaxScale int
	Idle     []IdleInstance
	// IdleTimeout is how long an instance may stay idle before removal.
	IdleTimeout time.Duration
	Now         time.Time
}

// Decision is what the router should do.
type Decision struct {
	Start int
	Stop  []string
}

// Desired returns the instance count the demand calls for, within bounds.
func Desired(in Input) int {
	c := in.Concurrency
	if c < 1 {
		c = 1
	}
	want := (in.Demand + c - 1) / c
	if want < in.MinScale {
		want = in.MinScale
	}
	if in.MaxScale > 0 && want > in.MaxScale {
		want = in.MaxScale
	}
	return want
}

// Plan decides which instances to start and stop.
func Plan(in Input) Decision {
	want := Desired(in)
	have := in.Ready + in.Starting
	var d Decision
	if want > have {
		d.Start = want - have
		return d
	}
	// Only instances idle past the timeout may go, oldest first, and
	// never so many that fewer than `want` remain.
	expired := make([]IdleInstance, 0, len(in.Idle))
	for _, i := range in.Idle {
		if in.Now.Sub(i.Since) >= in.IdleTimeout {
			expired = append(expired, i)
		}
	}
	sort.Slice(expired, func(a, b int) bool { return expired[a].Since.Before(expired[b].Since) })
	for _, i := range expired {
		if have-len(d.Stop) <= want {
			break
		}
		d.Stop = append(d.Stop, i.ID)
	}
	return d
}
