#!/usr/bin/env bash
# Service mode end to end (make test-services; CI runs it after make test):
# stack up -> bru deploy -> two workers -> bru campaign submit configs/smoke.yaml --wait
# -> check every store -> bru results -> stack down. Logs are kept, and printed on failure.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
export BRU_STACK_DIR=${BRU_STACK_DIR:-$(mktemp -d /tmp/bru-stack-XXXXXX)}
chmod 755 "$BRU_STACK_DIR"
STACK=infra/local/stack.sh
BIN=.venv/bin

on_exit() {
  local status=$?
  if ((status != 0)); then
    echo "---- test-services failed (exit $status); logs in $BRU_STACK_DIR/logs" >&2
    for log in "$BRU_STACK_DIR"/logs/*.log; do
      [[ -f $log ]] || continue
      echo "---- $log (last 40 lines)" >&2
      tail -n 40 "$log" >&2
    done
  fi
  $STACK down || true
  exit $status
}
trap on_exit EXIT

started=$SECONDS
exports=$($STACK up)   # an assignment, so that a failing stack up stops the script (set -e)
eval "$exports"
echo "stack up in $((SECONDS - started)) s"
$BIN/bru deploy
$STACK workers 2
$BIN/bru campaign submit configs/smoke.yaml --wait --patience 60
$BIN/python infra/local/check_stores.py configs/smoke.yaml
$BIN/bru results --campaign smoke --what comparisons
echo "service mode end to end in $((SECONDS - started)) s"
