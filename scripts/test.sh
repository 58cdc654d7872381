#!/usr/bin/env bash
# Sets up the machine and runs Baton's whole test suite.
#
# The suite runs in parts: go vet, every package but the end-to-end suites,
# the end-to-end suite (test/e2e) under the server's default sandbox (auto:
# containers as root), the end-to-end suite once more under process
# sandboxes, the asynchronous soak test (test/soak), the multi-host
# cluster tests (test/multihost: hosts as network namespaces, which need
# root; they skip without it) and, on the same hosts, the cluster's
# asynchronous soak. A failing
# part does not stop the others: every part runs, the failing ones are
# listed at the end and the script exits non-zero if any failed. Not as
# root the default sandbox already means process sandboxes, so the
# container run is skipped with a message instead.
#
# Time budget on a busy 2-core machine: each part's test binaries are
# stopped by `go test -timeout` (7 + 14 + 14 + 12 + 8 + 10 minutes at most);
# each soak takes 2-4 minutes on a busy machine, and the whole run about 25.
set -uo pipefail
cd "$(dirname "$0")/.."
# Without the tools nothing else can run: a failed setup ends the run.
bash scripts/setup.sh || { echo "test: setup failed" >&2; exit 1; }
export PATH="$PATH:/usr/local/go/bin"

failed=()
# part NAME CMD...: runs one part and records it if it fails.
part() {
  local name=$1
  shift
  echo "test: ${name}" >&2
  if ! "$@"; then
    echo "test: FAILED: ${name}" >&2
    failed+=("$name")
  fi
}

# An inherited BATON_TEST_SANDBOX would make both end-to-end runs the same.
unset BATON_TEST_SANDBOX

part "go vet" go vet ./...

# Every package but the end-to-end suites, which run below on their own.
packages=$(go list ./... | grep -v -e '/test/e2e$' -e '/test/multihost$' -e '/test/soak$') || { echo "test: go list failed" >&2; exit 1; }
# shellcheck disable=SC2086 # one word per package
part "unit and package tests" go test -race -count=1 -timeout 7m $packages

if [ "$(id -u)" -eq 0 ]; then
  part "end-to-end tests under the default sandbox (auto: containers as root)" \
    go test -race -count=1 -timeout 14m ./test/e2e/
else
  echo "test: not root: skipping the end-to-end run under container sandboxes (they need root); running it under process sandboxes only" >&2
fi

part "end-to-end tests under process sandboxes (BATON_TEST_SANDBOX=process)" \
  env BATON_TEST_SANDBOX=process go test -race -count=1 -timeout 14m ./test/e2e/

part "asynchronous soak (test/soak: 10,000 events, the server killed -9 three times)" \
  go test -race -count=1 -timeout 12m ./test/soak/

part "multi-host cluster tests (test/multihost: netns hosts, real processes)" \
  go test -race -count=1 -timeout 8m -skip '^TestAsyncSoakRandomKills$' ./test/multihost/

part "cluster asynchronous soak (10,000 events, workers and controllers killed -9 at random)" \
  go test -race -count=1 -timeout 10m -run '^TestAsyncSoakRandomKills$' ./test/multihost/

if [ "${#failed[@]}" -gt 0 ]; then
  echo >&2
  echo "test: ${#failed[@]} part(s) failed:" >&2
  for f in "${failed[@]}"; do
    echo "  - ${f}" >&2
  done
  exit 1
fi
echo "test: all parts passed" >&2
