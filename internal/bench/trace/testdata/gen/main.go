// Command gen writes azure-mini, a small synthetic day (d01) of the Azure
// Functions Trace 2019 in the dataset's exact file format, used by the tests
// of package trace. The output is deterministic (fixed seed). Regenerate it
// from the repository root with
//
//	go generate ./internal/bench/trace
//
// which runs `go run ./testdata/gen -out testdata/azure-mini` inside
// internal/bench/trace. If the generator changes, update the golden values in
// load_test.go.
//
// The day has 30 functions in 10 apps of 7 owners: four popular functions
// (hundreds of invocations per minute, following a daily cycle), steady
// ones, timers, bursty ones and many rare ones. Some rows exercise the
// cleaning rules: function 7 has decreasing percentiles, function 15 has no
// duration row, functions 17 and 29 have Count=0 (17 is never invoked), app
// a7 has no memory row, and one duration and one memory row belong to
// nothing in the invocation file.
package main

import (
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
)

const minutes = 1440

type profile int

const (
	popular profile = iota // Poisson around rate with a daily cycle
	steady                 // Poisson around rate, mild daily cycle
	timer                  // one invocation every rate minutes
	bursty                 // a few bursts of tens to hundreds per minute
	rare                   // rate invocations in the whole day
	silent                 // never invoked
)

type fnSpec struct {
	app     int
	trigger string
	prof    profile
	rate    float64
}

// appOwner maps app index to owner index.
var appOwner = []int{0, 0, 1, 2, 2, 3, 4, 4, 5, 6}

var specs = []fnSpec{
	{0, "http", popular, 300}, // 0: golden function, fixed durations and memory
	{0, "queue", steady, 20},
	{0, "timer", timer, 5},
	{1, "http", popular, 150},
	{1, "http", rare, 8},
	{1, "event", bursty, 0},
	{2, "http", steady, 12},
	{2, "timer", timer, 1}, // 7: decreasing percentiles
	{2, "http", rare, 3},
	{3, "orchestration", steady, 6},
	{3, "orchestration", rare, 15}, // 10: long, up to the 60 s limit
	{3, "queue", bursty, 0},
	{4, "http", popular, 500}, // 12: the most popular
	{4, "storage", rare, 2},
	{4, "timer", timer, 60},
	{5, "http", rare, 1}, // 15: no duration row
	{5, "http", rare, 5},
	{5, "others", silent, 0}, // 17: never invoked, Count=0
	{6, "queue", steady, 35},
	{6, "http", rare, 20},
	{6, "timer", timer, 15},
	{7, "event", bursty, 0},
	{7, "http", rare, 4},
	{7, "http", rare, 10},
	{8, "http", steady, 3},
	{8, "queue", rare, 6},
	{8, "timer", timer, 30},
	{9, "http", rare, 2},
	{9, "storage", bursty, 0},
	{9, "http", popular, 120}, // 29: invoked but Count=0 in durations
}

func hash(label string) string {
	s := sha256.Sum256([]byte("azure-mini/" + label))
	return hex.EncodeToString(s[:])
}

func ownerHash(o int) string { return hash(fmt.Sprintf("owner-%d", o)) }
func appHash(a int) string   { return hash(fmt.Sprintf("app-%d", a)) }
func fnHash(f int) string    { return hash(fmt.Sprintf("function-%d", f)) }

// poisson draws a Poisson variate: Knuth's product method for small means,
// a rounded normal approximation for large ones (good enough for test data).
func poisson(r *rand.Rand, mean float64) int {
	if mean <= 0 {
		return 0
	}
	if mean > 30 {
		return max(0, int(math.Round(mean+math.Sqrt(mean)*r.NormFloat64())))
	}
	l, k, p := math.Exp(-mean), 0, 1.0
	for {
		p *= r.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// daily is a daily cycle peaking in the afternoon, between 1-depth and 1+depth.
func daily(m int, depth float64) float64 {
	return 1 + depth*math.Sin(2*math.Pi*(float64(m)/minutes-0.4))
}

func counts(r *rand.Rand, s fnSpec) []int {
	c := make([]int, minutes)
	switch s.prof {
	case popular:
		for m := range c {
			c[m] = poisson(r, s.rate*daily(m, 0.5))
		}
	case steady:
		for m := range c {
			c[m] = poisson(r, s.rate*daily(m, 0.2))
		}
	case timer:
		period := int(s.rate)
		for m := r.IntN(period); m < minutes; m += period {
			c[m] = 1
		}
	case bursty:
		for range 3 + r.IntN(4) {
			start, length, rate := r.IntN(minutes), 1+r.IntN(10), 20+r.Float64()*180
			for m := start; m < min(start+length, minutes); m++ {
				c[m] += poisson(r, rate)
			}
		}
	case rare:
		// Clustered around a couple of busy hours, as rare functions are.
		centres := []int{r.IntN(minutes), r.IntN(minutes)}
		for range int(s.rate) {
			m := centres[r.IntN(2)] + int(r.NormFloat64()*30)
			c[min(max(m, 0), minutes-1)]++
		}
	}
	return c
}

// durationRow returns Average and the percentiles 0,1,25,50,75,99,100 in ms.
func durationRow(r *rand.Rand, f int, s fnSpec) (float64, [7]float64) {
	switch f {
	case 0:
		return 152.25, [7]float64{3, 8, 45, 98, 170, 950, 4200}
	case 7:
		return 33.5, [7]float64{12, 14, 20, 31, 27, 60, 130} // p75 < p50
	case 10:
		return 21500, [7]float64{900, 1800, 9000, 18000, 30000, 58000, 60000}
	}
	// Log-normal: median 2 ms .. 5 s (popular functions are short).
	lo, hi := math.Log(2), math.Log(5000)
	if s.prof == popular {
		hi = math.Log(300)
	}
	median := math.Exp(lo + r.Float64()*(hi-lo))
	sigma := 0.3 + r.Float64()*0.9
	zs := [7]float64{-3.5, -2.326, -0.674, 0, 0.674, 2.326, 4}
	var p [7]float64
	for i, z := range zs {
		p[i] = min(max(math.Round(median*math.Exp(sigma*z)), 1), 60000)
	}
	avg := math.Round(min(median*math.Exp(sigma*sigma/2), 60000)*100) / 100
	return avg, p
}

// memoryRow returns AverageAllocatedMb and the percentiles 1,5,25,50,75,95,99,100.
func memoryRow(r *rand.Rand, a int) (float64, [8]float64) {
	if a == 0 {
		return 128.5, [8]float64{96, 101, 113, 124, 139, 168, 191, 212}
	}
	median := 25 + r.Float64()*225
	spread := 0.05 + r.Float64()*0.2
	zs := [8]float64{-2.326, -1.645, -0.674, 0, 0.674, 1.645, 2.326, 3.5}
	var p [8]float64
	for i, z := range zs {
		p[i] = min(max(math.Round(median*math.Exp(spread*z)), 20), 400)
	}
	return math.Round(median*100) / 100, p
}

func num(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func write(path string, rows [][]string) {
	f, err := os.Create(path)
	if err != nil {
		log.Fatal(err)
	}
	w := csv.NewWriter(f)
	if err := w.WriteAll(rows); err != nil {
		log.Fatal(err)
	}
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
}

func main() {
	out := flag.String("out", "testdata/azure-mini", "output directory")
	flag.Parse()
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	r := rand.New(rand.NewPCG(2019, 1))

	inv := [][]string{{"HashOwner", "HashApp", "HashFunction", "Trigger"}}
	for m := 1; m <= minutes; m++ {
		inv[0] = append(inv[0], strconv.Itoa(m))
	}
	dur := [][]string{{"HashOwner", "HashApp", "HashFunction", "Average", "Count", "Minimum", "Maximum",
		"percentile_Average_0", "percentile_Average_1", "percentile_Average_25", "percentile_Average_50",
		"percentile_Average_75", "percentile_Average_99", "percentile_Average_100"}}
	var durRows [][]string
	for f, s := range specs {
		owner, app, name := ownerHash(appOwner[s.app]), appHash(s.app), fnHash(f)
		c := counts(r, s)
		row := []string{owner, app, name, s.trigger}
		total := 0
		for _, v := range c {
			row = append(row, strconv.Itoa(v))
			total += v
		}
		inv = append(inv, row)

		avg, p := durationRow(r, f, s)
		if f == 15 {
			continue
		}
		if f == 17 || f == 29 {
			total, avg, p = 0, 0, [7]float64{}
		}
		d := []string{owner, app, name, num(avg), strconv.Itoa(total), num(p[0]), num(p[6])}
		for _, v := range p {
			d = append(d, num(v))
		}
		durRows = append(durRows, d)
	}
	durRows = append(durRows, []string{ownerHash(99), appHash(99), fnHash(99), "10", "5", "2", "40",
		"2", "3", "6", "9", "12", "30", "40"})
	// The dataset's files are not in the same row order; neither are these.
	r.Shuffle(len(durRows), func(i, j int) { durRows[i], durRows[j] = durRows[j], durRows[i] })
	dur = append(dur, durRows...)

	mem := [][]string{{"HashOwner", "HashApp", "SampleCount", "AverageAllocatedMb",
		"AverageAllocatedMb_pct1", "AverageAllocatedMb_pct5", "AverageAllocatedMb_pct25",
		"AverageAllocatedMb_pct50", "AverageAllocatedMb_pct75", "AverageAllocatedMb_pct95",
		"AverageAllocatedMb_pct99", "AverageAllocatedMb_pct100"}}
	var memRows [][]string
	for a, o := range appOwner {
		avg, p := memoryRow(r, a)
		if a == 7 {
			continue
		}
		row := []string{ownerHash(o), appHash(a), strconv.Itoa(100 + r.IntN(1340)), num(avg)}
		for _, v := range p {
			row = append(row, num(v))
		}
		memRows = append(memRows, row)
	}
	memRows = append(memRows, []string{ownerHash(98), appHash(98), "10", "64", "60", "61", "62", "63", "65", "68", "70", "72"})
	r.Shuffle(len(memRows), func(i, j int) { memRows[i], memRows[j] = memRows[j], memRows[i] })
	mem = append(mem, memRows...)

	write(filepath.Join(*out, "invocations_per_function_md.anon.d01.csv"), inv)
	write(filepath.Join(*out, "function_durations_percentiles.anon.d01.csv"), dur)
	write(filepath.Join(*out, "app_memory_percentiles.anon.d01.csv"), mem)
}
