// Package benchmarks holds Baton's reproducible performance benchmarks. It
// has no non-test code: every figure is a Benchmark function that starts
// what it measures (a real `baton server`, a zygote, a plain HTTP server)
// and measures a baseline in the same run.
//
// The benchmarks never run during a plain `go test ./...`. Run them with
//
//	go test -run '^$' -bench . -benchtime 1x -count 1 -timeout 20m ./test/benchmarks/
//
// One benchmark iteration is one complete measurement (a fixed number of
// samples); -benchtime Nx repeats it N times and pools the samples. The
// built-in ns/op is suppressed: the figures are the reported metrics
// (p50-ms, p99-ms, req/s, ...) and the table each benchmark logs. Results
// and their interpretation are recorded in docs/BENCHMARKS.md.
package benchmarks
