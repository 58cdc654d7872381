#!/usr/bin/env bash
# Installs what Baton needs to build, run and test, idempotently: Debian
# packages only when something is missing, then the Go modules.
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$PATH:/usr/local/go/bin"

need_pkgs=()
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
command -v node >/dev/null 2>&1 || need_pkgs+=(nodejs)
command -v gcc >/dev/null 2>&1 || need_pkgs+=(gcc libc6-dev)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
command -v zip >/dev/null 2>&1 || need_pkgs+=(zip)
# seccomp filters for container sandboxes are built with cgo against libseccomp.
dpkg -s libseccomp-dev >/dev/null 2>&1 || need_pkgs+=(libseccomp-dev)
command -v pkg-config >/dev/null 2>&1 || need_pkgs+=(pkg-config)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing ${need_pkgs[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "setup: installing ${need_pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! command -v go >/dev/null 2>&1; then
  echo "setup: Go is not installed (expected in /usr/local/go); Baton needs the Go version named in go.mod" >&2
  exit 1
fi
go mod download
