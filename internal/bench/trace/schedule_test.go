package trace

import (
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// scheduleFns picks popular, steady, timer, bursty and rare functions.
func scheduleFns(t *testing.T) []Function {
	tr := loadMini(t)
	var fns []Function
	for _, i := range []int{0, 1, 5, 7, 12, 21, 24} {
		fns = append(fns, tr.Functions[i])
	}
	return fns
}

type fnMinute struct {
	id     string
	minute int
}

// checkSchedule verifies the properties common to both placements and
// returns the offsets inside their minute of each function's arrivals.
func checkSchedule(t *testing.T, fns []Function, arr []Arrival, start, minutes int, compress float64) map[fnMinute][]time.Duration {
	t.Helper()
	minute := time.Duration(float64(time.Minute) / compress)
	if !slices.IsSortedFunc(arr, func(a, b Arrival) int { return int(a.At - b.At) }) {
		t.Error("arrivals not sorted by At")
	}
	offs := map[fnMinute][]time.Duration{}
	for _, a := range arr {
		if a.Minute < start || a.Minute >= start+minutes {
			t.Fatalf("arrival %+v outside minutes [%d, %d)", a, start, start+minutes)
		}
		base := time.Duration(a.Minute-start) * minute
		if a.At < base || a.At >= base+minute {
			t.Fatalf("arrival %+v outside its minute [%v, %v)", a, base, base+minute)
		}
		k := fnMinute{a.Function, a.Minute}
		offs[k] = append(offs[k], a.At-base)
	}
	total := 0
	for _, f := range fns {
		for m := start; m < start+minutes; m++ {
			if got := len(offs[fnMinute{f.ID, m}]); got != f.PerMinute[m] {
				t.Errorf("function %s minute %d: %d arrivals, trace has %d", f.ID, m, got, f.PerMinute[m])
			}
			total += f.PerMinute[m]
		}
	}
	if len(arr) != total {
		t.Errorf("%d arrivals, want %d", len(arr), total)
	}
	return offs
}

// gapCV returns the coefficient of variation of the gaps between
// consecutive offsets within one minute, averaged over the busy minutes
// (rates differ between minutes, so gaps are not pooled).
func gapCV(offs map[fnMinute][]time.Duration) float64 {
	var total float64
	busy := 0
	for _, o := range offs {
		if len(o) < 50 {
			continue
		}
		var sum, sq float64
		for i := 1; i < len(o); i++ {
			sum += float64(o[i] - o[i-1])
		}
		mean := sum / float64(len(o)-1)
		for i := 1; i < len(o); i++ {
			d := float64(o[i]-o[i-1]) - mean
			sq += d * d
		}
		total += math.Sqrt(sq/float64(len(o)-1)) / mean
		busy++
	}
	return total / float64(busy)
}

func TestScheduleCounts(t *testing.T) {
	fns := scheduleFns(t)
	for _, c := range []struct {
		placement      string
		compress       float64
		start, minutes int
	}{
		{PlacementPoisson, 1, 0, 1440}, // the whole day once: 1.4 million arrivals
		{PlacementPoisson, 6, 1000, 30},
		{PlacementUniform, 1, 1000, 30},
		{PlacementUniform, 6, 1410, 30},
	} {
		arr, err := Schedule(fns, c.start, c.minutes, c.placement, c.compress, 11)
		if err != nil {
			t.Fatal(err)
		}
		checkSchedule(t, fns, arr, c.start, c.minutes, c.compress)
	}
}

func TestSchedulePlacement(t *testing.T) {
	fns := scheduleFns(t)
	const start, minutes = 600, 10

	uni, err := Schedule(fns, start, minutes, PlacementUniform, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	offs := checkSchedule(t, fns, uni, start, minutes, 1)
	// Evenly spaced: offset i of n is (i+½)·minute/n, to the nanosecond.
	for k, o := range offs {
		n := time.Duration(len(o))
		for i, off := range o {
			want := (2*time.Duration(i) + 1) * time.Minute / (2 * n)
			if off != want {
				t.Fatalf("uniform %v: offset %d of %d = %v, want %v", k, i, n, off, want)
			}
		}
	}
	if cv := gapCV(offs); cv > 0.001 {
		t.Errorf("uniform gaps vary: CV %v", cv)
	}
	other, _ := Schedule(fns, start, minutes, PlacementUniform, 1, 2)
	if !reflect.DeepEqual(uni, other) {
		t.Error("uniform placement depends on the seed")
	}

	poi, err := Schedule(fns, start, minutes, PlacementPoisson, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	offs = checkSchedule(t, fns, poi, start, minutes, 1)
	// Uniform points in a minute: exponential-like gaps (CV near 1) and
	// positions spread evenly over the minute.
	if cv := gapCV(offs); cv < 0.85 || cv > 1.15 {
		t.Errorf("poisson gaps: CV %v, want about 1", cv)
	}
	var n, firstHalf float64
	var sum time.Duration
	for _, o := range offs {
		for _, off := range o {
			n++
			sum += off
			if off < 30*time.Second {
				firstHalf++
			}
		}
	}
	if mean := sum / time.Duration(n); mean < 29*time.Second || mean > 31*time.Second {
		t.Errorf("poisson mean offset %v, want about 30s", mean)
	}
	if f := firstHalf / n; math.Abs(f-0.5) > 0.02 {
		t.Errorf("poisson: %.3f of arrivals in the first half minute", f)
	}

	again, _ := Schedule(fns, start, minutes, PlacementPoisson, 1, 1)
	if !reflect.DeepEqual(poi, again) {
		t.Error("same seed, different poisson schedules")
	}
	reseeded, _ := Schedule(fns, start, minutes, PlacementPoisson, 1, 2)
	if reflect.DeepEqual(poi, reseeded) {
		t.Error("poisson schedule ignores the seed")
	}
}

// A function's arrivals do not depend on the other functions scheduled.
func TestScheduleIndependentStreams(t *testing.T) {
	fns := scheduleFns(t)
	alone, err := Schedule(fns[:1], 0, 60, PlacementPoisson, 1, 5)
	if err != nil {
		t.Fatal(err)
	}
	all, err := Schedule(fns, 0, 60, PlacementPoisson, 1, 5)
	if err != nil {
		t.Fatal(err)
	}
	var mine []Arrival
	for _, a := range all {
		if a.Function == fns[0].ID {
			mine = append(mine, a)
		}
	}
	if !reflect.DeepEqual(alone, mine) {
		t.Error("arrivals of a function change with the other functions")
	}
}

func TestScheduleCompress(t *testing.T) {
	fns := scheduleFns(t)[:1] // the popular function: every minute is busy
	const minutes = 20
	for _, compress := range []float64{1, 4, 60} {
		for _, placement := range []string{PlacementPoisson, PlacementUniform} {
			arr, err := Schedule(fns, 100, minutes, placement, compress, 3)
			if err != nil {
				t.Fatal(err)
			}
			span := time.Duration(float64(minutes*time.Minute) / compress)
			last := arr[len(arr)-1].At
			if last >= span || last < span-span/minutes {
				t.Errorf("%s compress %v: last arrival at %v, want in the last minute before %v", placement, compress, last, span)
			}
		}
	}
}

func TestScheduleErrors(t *testing.T) {
	fns := scheduleFns(t)
	for _, c := range []struct {
		fns       []Function
		start, n  int
		placement string
		compress  float64
		want      string
	}{
		{fns, 0, 10, "bursty", 1, `unknown placement "bursty"`},
		{fns, 0, 10, PlacementPoisson, 0.5, "compress must be a finite number >= 1, got 0.5"},
		{fns, 0, 10, PlacementPoisson, math.NaN(), "compress must be"},
		{fns, 0, 10, PlacementPoisson, math.Inf(1), "compress must be"},
		{fns, 1430, 20, PlacementPoisson, 1, "minutes [1430, 1450) are outside function " + fns[0].ID + "'s 1440 minutes"},
		{fns, -1, 20, PlacementPoisson, 1, "invalid window"},
		{fns, 0, 0, PlacementPoisson, 1, "invalid window"},
		{[]Function{fns[0], fns[0]}, 0, 10, PlacementUniform, 1, "function " + fns[0].ID + " given twice"},
	} {
		_, err := Schedule(c.fns, c.start, c.n, c.placement, c.compress, 1)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("err = %v, want %q", err, c.want)
		}
	}
	arr, err := Schedule(nil, 0, 10, PlacementPoisson, 1, 1)
	if err != nil || len(arr) != 0 {
		t.Errorf("no functions: %d arrivals, err %v", len(arr), err)
	}
}

func TestEvenOffsetLargeCounts(t *testing.T) {
	// (2i+1)·minute overflows int64 here; the 128-bit path must not.
	const c = 100_000_000
	if got, want := evenOffset(c-1, c, time.Minute), int64(time.Minute)-int64(time.Minute)/(2*c); got != want {
		t.Errorf("evenOffset = %d, want %d", got, want)
	}
}
