// Package multihost holds Baton's multi-host cluster tests: every test
// builds its own cluster of real `baton` processes on hosts that are
// network namespaces (harness.Network): three `baton nats` nodes, two
// controllers and three workers with fake sandboxes, each on a host of its
// own. The test process talks to the controllers' HTTP APIs from the
// hosts' bridge, and breaks the cluster the way machines break: kill -9 of
// a process, a host's link cut and restored.
//
// The tests need root (network namespaces); without it they skip.
package multihost
