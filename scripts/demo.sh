#!/usr/bin/env bash
# The seed's demo on one machine (`make demo`): push the built add-header module to a
# local registry, run the tsb/ tree's gateway with real Envoy, wasmfetcher and httpbin,
# and send the seed's request. Keeps running until Ctrl-C, or exits after the request
# with DEMO_ONESHOT=1.
set -euo pipefail

MESHWASM=${MESHWASM:-.venv/bin/meshwasm}
WASM=${WASM:-build/add-header.wasm}
TREE=${TREE:-tsb}
HOST=httpbin.tetrate.io
state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT

"$MESHWASM" up "$TREE" --registry --push "$WASM" --state-file "$state/up.json" &
up_pid=$!
# SIGTERM, not SIGINT: a non-interactive shell starts background jobs with SIGINT ignored.
stop() { kill -TERM "$up_pid" 2>/dev/null || true; wait "$up_pid" || true; }
trap 'stop; rm -rf "$state"' INT TERM

for _ in $(seq 1 600); do
  [[ -s $state/up.json ]] && break
  kill -0 "$up_pid" 2>/dev/null || { wait "$up_pid"; exit 1; }
  sleep 0.2
done
[[ -s $state/up.json ]] || { echo "demo: the gateway did not become ready" >&2; stop; exit 1; }
port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ports"]["80"])' "$state/up.json")

echo
echo "\$ curl -s \"http://$HOST:$port/get\" --resolve \"$HOST:$port:127.0.0.1\" -v --header \"x-request-header: some value\""
curl -s "http://$HOST:$port/get" --resolve "$HOST:$port:127.0.0.1" -v --header "x-request-header: some value" 2>&1 \
  | grep -v '^\* \|^{ \[' || true
echo

if [[ ${DEMO_ONESHOT:-0} == 1 ]]; then
  stop
  exit 0
fi
echo "the gateway keeps running; edit $TREE/ to change it live, \`$MESHWASM inspect\` to look inside, Ctrl-C to stop"
wait "$up_pid"
