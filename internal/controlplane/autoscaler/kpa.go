package autoscaler

import (
	"math"
	"time"
)

// KPAConfig tunes the KPA policy; zero fields take Knative's defaults.
type KPAConfig struct {
	// StableWindow is the window demand is averaged over (60 s).
	StableWindow time.Duration
	// PanicWindow is the short window that detects bursts (6 s: 10 % of
	// the stable window).
	PanicWindow time.Duration
	// PanicThreshold: panic when the panic window asks for this multiple
	// of the ready instances (2.0: 200 %).
	PanicThreshold float64
	// TargetUtilization is the share of an instance's slots the policy
	// aims to fill (0.7), so that bursts find room. An instance serving one
	// event at a time is targeted at one event: a fraction of one slot
	// would only double the instances.
	TargetUtilization float64
	// MaxScaleUpRate bounds growth per decision to this multiple of the
	// ready instances (1000), MaxScaleDownRate shrinkage to the ready
	// instances divided by it (2).
	MaxScaleUpRate   float64
	MaxScaleDownRate float64
	// ScaleToZeroGrace is how long the last instance stays after the
	// stable window saw no demand at all (30 s).
	ScaleToZeroGrace time.Duration
}

func (c KPAConfig) withDefaults() KPAConfig {
	if c.StableWindow <= 0 {
		c.StableWindow = 60 * time.Second
	}
	if c.PanicWindow <= 0 {
		c.PanicWindow = c.StableWindow / 10
	}
	if c.PanicThreshold <= 0 {
		c.PanicThreshold = 2
	}
	if c.TargetUtilization <= 0 || c.TargetUtilization > 1 {
		c.TargetUtilization = 0.7
	}
	if c.MaxScaleUpRate <= 1 {
		c.MaxScaleUpRate = 1000
	}
	if c.MaxScaleDownRate <= 1 {
		c.MaxScaleDownRate = 2
	}
	if c.ScaleToZeroGrace <= 0 {
		c.ScaleToZeroGrace = 30 * time.Second
	}
	return c
}

// bucketWidth is the resolution of the demand history: one bucket per
// second holds the highest demand seen in it, as Knative aggregates
// per-second concurrency.
const bucketWidth = time.Second

// KPA is Knative's pod autoscaler. Create it with NewKPA.
type KPA struct {
	cfg KPAConfig
	// buckets[i] is the peak demand of second first+i.
	buckets []float64
	first   int64 // the second of buckets[0]
	// panicUntil: panic mode lasts until a stable window passed without
	// the panic condition; panicFloor is the most the panic asked for,
	// below which panic mode never scales.
	panicUntil time.Time
	panicFloor int
	// lastDemand is when demand was last above zero.
	lastDemand time.Time
}

// NewKPA returns a KPA policy with no history.
func NewKPA(cfg KPAConfig) *KPA { return &KPA{cfg: cfg.withDefaults()} }

// record notes demand at now, keeping one stable window of buckets.
func (k *KPA) record(now time.Time, demand float64) {
	sec := now.Truncate(bucketWidth).Unix()
	if len(k.buckets) == 0 {
		k.first = sec
		k.buckets = append(k.buckets, demand)
	} else {
		last := k.first + int64(len(k.buckets)) - 1
		if sec < last { // a clock step back: treat as now
			sec = last
		}
		if sec == last {
			k.buckets[len(k.buckets)-1] = max(k.buckets[len(k.buckets)-1], demand)
		} else {
			// Seconds without a decision held the demand last seen.
			for carry := k.buckets[len(k.buckets)-1]; last < sec-1; last++ {
				k.buckets = append(k.buckets, carry)
			}
			k.buckets = append(k.buckets, demand)
		}
	}
	keep := int(k.cfg.StableWindow / bucketWidth)
	if drop := len(k.buckets) - keep; drop > 0 {
		k.buckets = append(k.buckets[:0], k.buckets[drop:]...)
		k.first += int64(drop)
	}
	if demand > 0 {
		k.lastDemand = now
	}
}

// average is the mean demand over the last window (over the history there
// is, when it is shorter).
func (k *KPA) average(window time.Duration) float64 {
	n := min(len(k.buckets), max(1, int(window/bucketWidth)))
	if n == 0 {
		return 0
	}
	sum := 0.0
	for _, v := range k.buckets[len(k.buckets)-n:] {
		sum += v
	}
	return sum / float64(n)
}

// Plan implements Policy.
func (k *KPA) Plan(in Input) Decision {
	k.record(in.Now, float64(in.Demand))
	c := max(1, in.Concurrency)
	target := 1.0
	if c > 1 {
		target = float64(c) * k.cfg.TargetUtilization
	}
	stable := int(math.Ceil(k.average(k.cfg.StableWindow) / target))
	panicWant := int(math.Ceil(k.average(k.cfg.PanicWindow) / target))

	ready := max(1, in.Ready) // Knative counts no ready instance as one
	if float64(panicWant) >= k.cfg.PanicThreshold*float64(ready) {
		k.panicUntil = in.Now.Add(k.cfg.StableWindow)
	}
	want := stable
	if in.Now.Before(k.panicUntil) {
		// In panic the count only grows: a burst is not over because
		// its second half arrived more slowly.
		k.panicFloor = max(k.panicFloor, panicWant, in.Ready+in.Starting)
		want = max(panicWant, k.panicFloor)
	} else {
		k.panicFloor = 0
	}

	// Queued requests must not wait for a window to fill up: from zero,
	// the demand present now is what counts.
	if in.Ready+in.Starting == 0 && in.Demand > 0 {
		want = max(want, (in.Demand+c-1)/c)
	}
	if in.Ready > 0 {
		want = min(want, int(math.Ceil(k.cfg.MaxScaleUpRate*float64(in.Ready))))
		want = max(want, int(math.Floor(float64(in.Ready)/k.cfg.MaxScaleDownRate)))
	}
	// The last instance goes only after a grace without any demand.
	if want == 0 && in.Ready > 0 && in.Now.Sub(k.lastDemand) < k.cfg.ScaleToZeroGrace {
		want = 1
	}
	want = max(want, in.MinScale)
	if in.MaxScale > 0 {
		want = min(want, in.MaxScale)
	}
	// Busy instances are never stopped: toward stops idle ones only.
	return toward(in, want, 0)
}
