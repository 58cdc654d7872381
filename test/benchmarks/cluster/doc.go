// Package cluster holds the cluster-mode performance benchmarks of Baton
// (issue 9): sandbox churn (cold starts per second through one controller
// and fake workers behind the real worker API) and the scale of the control
// plane (a thousand workers heart-beating through the NATS membership). It
// has no non-test code.
//
// The benchmarks never run during a plain `go test ./...`; run them with
//
//	go test -run '^$' -bench . -benchtime 1x -count 1 -timeout 60m ./test/benchmarks/cluster/
//
// Environment variables shorten or reshape a run (see env_test.go):
// BATON_CHURN_RATES, BATON_CHURN_DURATION, BATON_CHURN_WORKERS,
// BATON_CHURN_PROFILE_DIR, BATON_SCALE_WORKERS, BATON_SCALE_WINDOW, ...
// Results and their interpretation are in docs/BENCHMARKS.md, section 10.
package cluster
