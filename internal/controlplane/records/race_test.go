//go:build race

package records

// raceEnabled: the race detector's instrumentation allocates on its own.
const raceEnabled = true
