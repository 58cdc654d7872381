// Package clusterproc holds the cluster-mode benchmarks of Baton that run
// real processes (issue 9, "Performance, measured side by side"): controller
// failover under load (kill -9 and SIGTERM), a dead worker under load, the
// cost of the controller→worker hop and of the extra forward through a
// controller that does not own the function, and `baton replay` against a
// cluster next to `baton server`. It has no non-test code.
//
// Every node is a `baton` process on a loopback port of this one machine
// (NATS runs in the benchmark's process), so "hosts" share one kernel and
// two cores. BenchmarkWarmHopNetns and BenchmarkTraceReplayNetns
// (netns_test.go) repeat two of them with each process, the client
// included, on a network-namespace host of its own (they need root).
//
// The benchmarks never run during a plain `go test`; run them with
//
//	go test -run '^$' -bench . -benchtime 1x -count 1 -timeout 60m -v ./test/benchmarks/clusterproc/
//
// Environment variables reshape a run (see env_test.go). Results and their
// interpretation are in docs/BENCHMARKS.md, section 11 (11.5 for the netns runs).
package clusterproc
