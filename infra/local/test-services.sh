#!/usr/bin/env bash
# Service mode end to end (make test-services; CI runs it after make test):
# stack up (every password, auth string and role in place) -> bru deploy -> two workers ->
# bru campaign submit configs/smoke.yaml --wait -> check every store -> bru results ->
# who gets in (infra/local/check_access.py; a client without the login is one line) ->
# stack down. Logs are kept, and printed on failure.
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
$BIN/python infra/local/check_access.py

# bru itself, without the login: one line naming the setting, exit 2, for each service.
expect_refusal() {  # expect_refusal FRAGMENT COMMAND...
  local fragment=$1 out status=0; shift
  out=$("$@" 2>&1) || status=$?
  if ((status != 2)) || [[ $(printf '%s\n' "$out" | grep -c .) != 1 || $out != "error: "*"$fragment"* ]]; then
    echo "FAIL expected exit 2 and one line with '$fragment' from: $*; got exit $status:" >&2
    printf '%s\n' "$out" >&2
    exit 1
  fi
  echo "ok   $out"
}
expect_refusal "requires a login: set PREFECT_API_AUTH_STRING" env PREFECT_API_AUTH_STRING= $BIN/bru deploy
expect_refusal "refused the login of MLFLOW_TRACKING_USERNAME=admin" \
  env MLFLOW_TRACKING_PASSWORD=wrong $BIN/bru campaign run configs/smoke.yaml
echo "service mode end to end in $((SECONDS - started)) s"
