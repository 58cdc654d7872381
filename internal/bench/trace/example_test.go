package trace_test

import (
	"fmt"
	"log"
	"time"

	"github.com/baton-faas/baton/internal/bench/trace"
)

// Replay ten minutes of the mini trace with five representative functions,
// four times faster than real time.
func Example() {
	tr, err := trace.Load("testdata/azure-mini", trace.Options{})
	if err != nil {
		log.Fatal(err)
	}
	fns, err := tr.Sample(5, 600, 10, 1)
	if err != nil {
		log.Fatal(err)
	}
	arrivals, err := trace.Schedule(fns, 600, 10, trace.PlacementPoisson, 4, 1)
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range fns {
		fmt.Printf("%s %-13s p50 %5.0f ms, %d invocations that day\n", f.ID, f.Trigger, f.Duration.Quantile(0.5), f.Total)
	}
	last := arrivals[len(arrivals)-1]
	fmt.Printf("%d arrivals, the last at %v\n", len(arrivals), last.At.Truncate(time.Second))
	// Output:
	// 0b53ffb728bb http          p50  1118 ms, 17377 invocations that day
	// 1dd6e3f60f16 timer         p50  2364 ms, 96 invocations that day
	// df69d600ecad http          p50     4 ms, 719811 invocations that day
	// f35925373473 queue         p50     4 ms, 28968 invocations that day
	// f5fdb2047ca8 timer         p50    27 ms, 288 invocations that day
	// 5635 arrivals, the last at 2m29s
}
