// Package autoscaler decides how many instances a function needs. A Policy
// sees only the router's view of one function (Input, with the time in it)
// so that policies are tested without processes or clocks.
//
// Two policies exist, chosen per function (spec field "autoscaler"):
//
//   - immediate (the default, Plan): every in-flight or queued request
//     needs a slot; an instance has Concurrency slots. Scale-up is
//     immediate (a waiting request is a request that is getting slower);
//     scale-down removes instances that have been idle longer than the
//     idle timeout, never below MinScale or below what current demand
//     needs.
//   - kpa (KPA): Knative's pod autoscaler as Dirigent runs it: demand
//     averaged over a stable window (60 s) and a panic window (6 s); panic
//     mode when the short window asks for twice the ready instances; rates
//     that bound how fast the count may grow and shrink.
package autoscaler

import (
	"fmt"
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

// Policy plans one function's scale. A policy may keep state between
// calls (windows of past demand); the router keeps one per function and
// calls it under that function's lock, so a Policy need not be safe for
// concurrent use.
type Policy interface {
	Plan(in Input) Decision
}

// Names of the policies, as in function specs.
const (
	NameImmediate = "immediate"
	NameKPA       = "kpa"
)

// New returns a fresh policy by name ("" is immediate).
func New(name string) (Policy, error) {
	switch name {
	case "", NameImmediate:
		return Immediate{}, nil
	case NameKPA:
		return NewKPA(KPAConfig{}), nil
	}
	return nil, fmt.Errorf("unknown autoscaler %q (want %s or %s)", name, NameImmediate, NameKPA)
}

// Immediate is the default policy (see Plan).
type Immediate struct{}

// Plan implements Policy.
func (Immediate) Plan(in Input) Decision { return Plan(in) }

// Plan decides which instances to start and stop under the immediate
// policy.
func Plan(in Input) Decision {
	return toward(in, Desired(in), in.IdleTimeout)
}

// toward starts or stops instances to move toward want: starts at once;
// stops only instances idle for at least minIdle, oldest first, never so
// many that fewer than want remain.
func toward(in Input, want int, minIdle time.Duration) Decision {
	have := in.Ready + in.Starting
	var d Decision
	if want > have {
		d.Start = want - have
		return d
	}
	expired := make([]IdleInstance, 0, len(in.Idle))
	for _, i := range in.Idle {
		if in.Now.Sub(i.Since) >= minIdle {
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
