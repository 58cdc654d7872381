#!/usr/bin/env bash
# Sets up the machine and runs Baton's whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PATH:/usr/local/go/bin"

go vet ./...
go test -race -count=1 -timeout 25m ./...
