#!/usr/bin/env bash
# Builds Baton, starts `baton server` on its embedded defaults and deploys
# the example function "hello". Ctrl-C stops the server gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PATH:/usr/local/go/bin"

mkdir -p bin
go build -o bin/ ./cmd/baton ./cmd/baton-reaper

listen="${BATON_LISTEN:-127.0.0.1:8080}"
server="http://$listen"
bin/baton server --listen "$listen" "$@" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' INT TERM

for _ in $(seq 1 100); do
  if curl -fsS "$server/healthz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then wait "$pid"; exit 1; fi
  sleep 0.1
done

bin/baton deploy hello --server "$server" --runtime python3 --handler app.handler --code examples/hello-python
echo
echo "Baton is running at $server with the example function \"hello\". Try:"
echo "  bin/baton invoke hello --server $server --data '{\"name\":\"Baton\"}'"
echo "  curl -s -X POST $server/v1/functions/hello/invoke -d '{\"name\":\"Baton\"}'"
echo "  bin/baton logs hello --server $server"
echo "Press Ctrl-C to stop."
wait "$pid"
