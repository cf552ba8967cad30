#!/usr/bin/env bash
# The README's quickstart command, tried as a newcomer would: from an empty directory, on a
# fresh clone. It passes when the banner appears and the curl command it prints lists the demo
# tools through the gateway. When the default port is taken, it follows the printed advice.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# The command exactly as the README gives it.
CMD=$(awk '/^## Quickstart/{q=1} q && /^cargo run/{print; exit}' README.md)
[ -n "$CMD" ] || { echo "no quickstart command in README.md"; exit 1; }
case "$CMD" in *"-- quickstart"*) ;; *) echo "unexpected quickstart command: $CMD"; exit 1;; esac
command -v curl >/dev/null || { echo "curl is needed to try the quickstart (scripts/test.sh installs it)"; exit 1; }
DIR=$(mktemp -d)
# The gateway ends cleanly on SIGTERM (it closes its audit log) before its directory goes.
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"' EXIT
cd "$DIR"
# cargo finds the workspace from the working directory; from elsewhere it needs the manifest.
read -r -a ARGS <<< "${CMD#cargo run }"
RUN=(cargo run --quiet --manifest-path "$ROOT/Cargo.toml" "${ARGS[@]}")
echo "== $CMD   (in an empty directory)"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p portcullis
start() {
  : > out; : > err
  "${RUN[@]}" "$@" > out 2> err &
  for _ in $(seq 1 120); do
    grep -q -- "--method tools/list" out 2>/dev/null && return 0
    kill -0 $! 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}
if ! start; then
  cat err
  # A taken port: the quickstart names a free one, and wrote nothing.
  PORT=$(grep -o 'quickstart --port [0-9]*' err | grep -o '[0-9]*$' || true)
  [ -n "$PORT" ] && [ ! -e portcullis.yaml ] || { echo "quickstart failed"; exit 1; }
  echo "== following the advice: --port $PORT"
  start --port "$PORT" || { cat out err; exit 1; }
fi
cat out
# The command the banner prints to try it: curl, or the Inspector where Node.js 22+ is present.
LINE=$(awk '/curl -sS/{c=1} c{sub(/\\$/,""); printf "%s", $0} c && /-d /{exit}' out)
WHAT="curl command"
if [ -z "$LINE" ]; then
  # Node.js 22 or newer is here, so the banner offers the MCP Inspector only.
  LINE=$(awk '/npx -y @modelcontextprotocol\/inspector/{c=1} c{sub(/\\$/,""); printf "%s", $0} c && /--method/{exit}' out)
  WHAT="MCP Inspector command"
fi
RESULT=$(sh -c "$LINE")
echo "$RESULT" | grep -q '"notes__search_notes"' || { echo "tools/list failed: $RESULT"; exit 1; }
echo "== the printed $WHAT listed the tools"
