#!/usr/bin/env bash
# The bru-lab service stack as plain processes, for a host without Docker:
# PostgreSQL (initdb/pg_ctl), an MLflow tracking server, a Prefect server, N Prefect workers.
#
#   infra/local/stack.sh up [--workers N]   start what is not running; print the settings as export lines
#   infra/local/stack.sh workers N          start N more workers on the pool
#   infra/local/stack.sh down               stop everything it started (logs are kept)
#   infra/local/stack.sh status             what runs, where
#   infra/local/stack.sh env                the export lines again (eval "$(infra/local/stack.sh env)")
#
# Everything lives in BRU_STACK_DIR (default <repo>/.bru/stack): data, pid files, logs/.
# Ports (all on 127.0.0.1): BRU_STACK_PG_PORT 5433, BRU_STACK_MLFLOW_PORT 5000,
# BRU_STACK_PREFECT_PORT 4200. A port already taken, or a service that is not healthy in
# time (BRU_STACK_TIMEOUT, 120 s), stops what this call started and names the service and
# its log. PostgreSQL trusts connections from 127.0.0.1 only: a single-user development
# stack; docker-compose.yml is the password-protected one.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK=${BRU_STACK_DIR:-$ROOT/.bru/stack}
BIN=${BRU_STACK_BIN:-$ROOT/.venv/bin}
HOST=127.0.0.1
PG_PORT=${BRU_STACK_PG_PORT:-5433}
MLFLOW_PORT=${BRU_STACK_MLFLOW_PORT:-5000}
PREFECT_PORT=${BRU_STACK_PREFECT_PORT:-4200}
TIMEOUT=${BRU_STACK_TIMEOUT:-120}
POOL=${BRU_STACK_POOL:-bru-gpu}
DATABASES="mlflow prefect optuna results"
LOGS=$STACK/logs
PIDS=$STACK/pids
STARTED=()   # services started by this call, stopped again if a later one fails

say() { echo "stack: $*" >&2; }
die() { echo "error: $*" >&2; exit "${2:-2}"; }

pg_bin() {
  local found
  found=$(command -v "$1" 2>/dev/null || true)
  [[ -n $found ]] || found=$(ls /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1)
  [[ -n $found ]] || die "$1 not found: install PostgreSQL 15 (apt-get install postgresql)"
  echo "$found"
}

# initdb and pg_ctl refuse to run as root: use the postgres user then.
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

port_free() {  # SO_REUSEADDR, as the servers use: a port in TIME_WAIT is free for them
  "$BIN/python" -c "import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('$HOST', int(sys.argv[1])))" "$1" 2>/dev/null
}

alive() { [[ -f $PIDS/$1.pid ]] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }

pg_alive() { [[ -d $STACK/postgres/data ]] && as_pg "$(pg_bin pg_ctl)" -D "$STACK/postgres/data" status >/dev/null 2>&1; }

settings() {
  cat <<EOF
export PREFECT_API_URL=http://$HOST:$PREFECT_PORT/api
export BRU_TRACKING_URI=http://$HOST:$MLFLOW_PORT
export BRU_OPTUNA_STORAGE=postgresql+psycopg://postgres@$HOST:$PG_PORT/optuna
export BRU_RESULTS_URL=postgresql+psycopg://postgres@$HOST:$PG_PORT/results
export BRU_HOME=$STACK/bru
EOF
}

# start NAME COMMAND...: in its own session (so its children stop with it), logged, pid recorded
start() {
  local name=$1; shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
  STARTED+=("$name")
}

rollback() {
  local failed=$1 log=$2
  say "$failed failed; stopping what this call started: ${STARTED[*]:-nothing}"
  local name
  for name in "${STARTED[@]}"; do stop_one "$name"; done
  echo "error: $failed did not become healthy within ${TIMEOUT}s; see $log" >&2
  tail -n 20 "$log" >&2 2>/dev/null || true
  exit 1
}

wait_http() {  # wait_http NAME URL: until it answers 200, or roll back
  local name=$1 url=$2 deadline=$((SECONDS + TIMEOUT))
  while ((SECONDS < deadline)); do
    if "$BIN/python" -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)" "$url" 2>/dev/null; then
      return 0
    fi
    if ! alive "$name"; then break; fi
    sleep 0.5
  done
  rollback "$name" "$LOGS/$name.log"
}

start_postgres() {
  if pg_alive; then say "postgres already running on $HOST:$PG_PORT"; return; fi
  local data=$STACK/postgres/data
  mkdir -p "$STACK/postgres"
  if [[ $(id -u) == 0 ]]; then
    chown postgres "$STACK/postgres"
    runuser -u postgres -- test -x "$STACK/postgres" \
      || die "the postgres user cannot reach $STACK (a parent folder is private): set BRU_STACK_DIR to a folder under /tmp or make the parents traversable (chmod o+x)"
  fi
  if [[ ! -f $data/PG_VERSION ]]; then
    as_pg "$(pg_bin initdb)" -D "$data" -U postgres --auth=trust --no-sync >"$LOGS/postgres-initdb.log" 2>&1 \
      || { echo "error: initdb failed; see $LOGS/postgres-initdb.log" >&2; exit 1; }
  fi
  touch "$LOGS/postgres.log"
  [[ $(id -u) == 0 ]] && chown postgres "$LOGS/postgres.log"
  if ! as_pg "$(pg_bin pg_ctl)" -D "$data" -w -t "$TIMEOUT" -l "$LOGS/postgres.log" \
      -o "-c listen_addresses=$HOST -p $PG_PORT -k $STACK/postgres" start >/dev/null; then
    rollback postgres "$LOGS/postgres.log"
  fi
  STARTED+=(postgres)
  local db
  for db in $DATABASES; do
    "$BIN/python" - "$PG_PORT" "$db" <<'PY' >>"$LOGS/postgres.log" 2>&1 || rollback postgres "$LOGS/postgres.log"
import sys, psycopg
from psycopg import sql
port, name = sys.argv[1], sys.argv[2]
with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as conn:
    if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
PY
  done
}

start_mlflow() {
  if alive mlflow; then say "mlflow already running on $HOST:$MLFLOW_PORT"; return; fi
  mkdir -p "$STACK/mlartifacts"
  # The same command as the mlflow service of docker-compose.yml (tests/test_infra.py checks).
  # The store URI goes in the environment: a password in it would show on the command line (ps).
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_BACKEND_STORE_URI="postgresql+psycopg://postgres@$HOST:$PG_PORT/mlflow" \
    start mlflow "$BIN/mlflow" server \
    --artifacts-destination "$STACK/mlartifacts" --serve-artifacts \
    --host "$HOST" --port "$MLFLOW_PORT" --workers 1 \
    --allowed-hosts "$HOST,$HOST:$MLFLOW_PORT,localhost,localhost:$MLFLOW_PORT"
  wait_http mlflow "http://$HOST:$MLFLOW_PORT/health"
}

start_prefect() {
  if alive prefect-server; then say "prefect-server already running on $HOST:$PREFECT_PORT"; return; fi
  mkdir -p "$STACK/prefect"
  PREFECT_HOME=$STACK/prefect \
  PREFECT_API_DATABASE_CONNECTION_URL="postgresql+asyncpg://postgres@$HOST:$PG_PORT/prefect" \
  PREFECT_SERVER_ANALYTICS_ENABLED=false \
    start prefect-server "$BIN/prefect" server start --host "$HOST" --port "$PREFECT_PORT"
  wait_http prefect-server "http://$HOST:$PREFECT_PORT/api/health"
}

start_workers() {
  local n=$1 i=0 name
  eval "$(settings)"
  export PREFECT_WORKER_QUERY_SECONDS=${PREFECT_WORKER_QUERY_SECONDS:-2} PREFECT_SERVER_ANALYTICS_ENABLED=false
  while ((n > 0)); do
    i=$((i + 1)); name=worker-$i
    if alive "$name"; then continue; fi
    # The same command as the worker service of docker-compose.yml.
    start "$name" "$BIN/bru" worker --pool "$POOL"
    say "$name polling pool $POOL (log $LOGS/$name.log)"
    n=$((n - 1))
  done
}

stop_one() {
  local name=$1 pid
  if [[ $name == postgres ]]; then
    pg_alive && as_pg "$(pg_bin pg_ctl)" -D "$STACK/postgres/data" -m fast stop >/dev/null 2>&1 || true
    return
  fi
  alive "$name" || { rm -f "$PIDS/$name.pid"; return; }
  pid=$(cat "$PIDS/$name.pid")
  if [[ $name == worker-* ]]; then  # a Prefect worker stops on the second SIGINT
    kill -INT -- "-$pid" 2>/dev/null || true; sleep 1; kill -INT -- "-$pid" 2>/dev/null || true
  else
    kill -TERM -- "-$pid" 2>/dev/null || true
  fi
  local deadline=$((SECONDS + 20))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$PIDS/$name.pid"
}

cmd_up() {
  local workers=0
  while (($#)); do
    case $1 in
      --workers) workers=${2:?--workers needs a number}; shift 2 ;;
      *) die "up: unknown option $1 (use --workers N)" ;;
    esac
  done
  [[ -x $BIN/mlflow && -x $BIN/prefect && -x $BIN/bru ]] || die "no bru-lab environment at $BIN: run make test (or make demo) once, or set BRU_STACK_BIN"
  mkdir -p "$LOGS" "$PIDS" "$STACK/bru"
  chmod 755 "$STACK" "$LOGS"
  # Check every port first: nothing is started when one is taken by something else.
  pg_alive || port_free "$PG_PORT" || die "port $PG_PORT (postgres) is taken; set BRU_STACK_PG_PORT"
  alive mlflow || port_free "$MLFLOW_PORT" || die "port $MLFLOW_PORT (mlflow) is taken; set BRU_STACK_MLFLOW_PORT"
  alive prefect-server || port_free "$PREFECT_PORT" || die "port $PREFECT_PORT (prefect-server) is taken; set BRU_STACK_PREFECT_PORT"
  start_postgres
  start_mlflow
  start_prefect
  ((workers > 0)) && start_workers "$workers"
  settings >"$STACK/env.sh"
  say "up; settings in $STACK/env.sh (eval \"\$(infra/local/stack.sh env)\")"
  settings
}

cmd_down() {
  local name
  for f in "$PIDS"/worker-*.pid; do [[ -e $f ]] && stop_one "$(basename "$f" .pid)"; done
  for name in prefect-server mlflow postgres; do stop_one "$name"; done
  say "down (logs kept in $LOGS)"
}

cmd_status() {
  local name
  if pg_alive; then echo "postgres        running  $HOST:$PG_PORT"; else echo "postgres        stopped"; fi
  for name in mlflow prefect-server; do
    if alive "$name"; then echo "$name$(printf '%*s' $((16 - ${#name})) '')running  pid $(cat "$PIDS/$name.pid")"; else echo "$name$(printf '%*s' $((16 - ${#name})) '')stopped"; fi
  done
  for f in "$PIDS"/worker-*.pid; do
    [[ -e $f ]] || continue
    name=$(basename "$f" .pid)
    if alive "$name"; then echo "$name        running  pid $(cat "$f")"; fi
  done
}

case ${1:-} in
  up) shift; cmd_up "$@" ;;
  workers) mkdir -p "$LOGS" "$PIDS"; start_workers "${2:?workers needs a number}" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) settings ;;
  *) die "usage: infra/local/stack.sh up [--workers N] | workers N | down | status | env" ;;
esac
