// Package e2e holds Baton's end-to-end tests. Every test starts a real
// `baton server` process (see test/harness) with its own data
// directory and drives it only from outside: through the HTTP API, the Go
// client and the `baton` command line, with real Python, Node and Go
// (aws-lambda-go) functions from testdata/. Process-level checks (nothing
// left running after delete, scale-to-zero or shutdown) read /proc, so the
// package needs Linux.
//
// Tests that need python3 or node skip with a message when the interpreter
// is missing.
package e2e
