// Package soak holds Baton's single-node soak test of asynchronous
// invocations (issue 10's guarantees): a real `baton server` with process
// sandboxes receives thousands of asynchronous invocations of real Python
// functions (mixed durations, some that always fail, some that time out)
// while the test kills it with SIGKILL and restarts it on the same data
// directory. Afterwards every accepted invocation must have a final state,
// and the functions' side effects (a line per execution in a file) must
// show each ran at least once and, apart from attempts cut short by the
// kills, exactly as often as its state's attempts say.
//
// The test needs Linux and python3; it skips without them. The number of
// invocations is 10,000; BATON_SOAK_INVOCATIONS sets another for a quick
// local run.
package soak
