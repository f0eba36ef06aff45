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
# its log.
#
# Who gets in (docs/deploy.md, Security): the first `up` generates every secret into
# BRU_STACK_DIR/secrets.env (mode 0600, kept across restarts): a PostgreSQL role and password
# per store (infra/postgres/stores.sql), MLflow's admin password and Flask secret, Prefect's
# API auth string. PostgreSQL takes scram-sha-256 passwords on 127.0.0.1 and, on its private
# socket folder, only the OS account that runs it (peer); MLflow runs its basic-auth app;
# Prefect requires its auth string, checks CSRF tokens and allows only its own UI's origin.
# The export lines (env.sh, `env`) carry these credentials: they are for the account that
# ran `up`.
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
SECRETS=$STACK/secrets.env
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

# Every secret of the stack, generated once (hex: nothing to encode inside a URL), 0600.
SECRET_NAMES="BRU_PG_MLFLOW_PASSWORD BRU_PG_PREFECT_PASSWORD BRU_PG_OPTUNA_PASSWORD BRU_PG_RESULTS_PASSWORD
  MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY BRU_PREFECT_API_PASSWORD"

load_secrets() {
  local name
  if [[ ! -f $SECRETS ]]; then
    local tmp=$SECRETS.tmp
    mkdir -p "$STACK"
    (umask 077; : >"$tmp")
    for name in $SECRET_NAMES; do
      echo "$name=$("$BIN/python" -c 'import secrets; print(secrets.token_hex(24))')" >>"$tmp"
    done
    mv "$tmp" "$SECRETS"
    say "secrets generated in $SECRETS (mode 0600)"
  fi
  [[ -r $SECRETS ]] || die "cannot read $SECRETS: run the stack as the account that created it"
  chmod 600 "$SECRETS"
  # shellcheck disable=SC1090
  source "$SECRETS"
  for name in $SECRET_NAMES; do
    [[ -n ${!name:-} ]] || die "$name is missing from $SECRETS: add it, or remove the file to generate all again (then restart the stack)"
  done
}

settings() {
  load_secrets
  cat <<EOF
export PREFECT_API_URL=http://$HOST:$PREFECT_PORT/api
export PREFECT_API_AUTH_STRING=bru:$BRU_PREFECT_API_PASSWORD
export BRU_TRACKING_URI=http://$HOST:$MLFLOW_PORT
export MLFLOW_TRACKING_USERNAME=admin
export MLFLOW_TRACKING_PASSWORD=$MLFLOW_AUTH_ADMIN_PASSWORD
export BRU_OPTUNA_STORAGE=postgresql+psycopg://bru_optuna:$BRU_PG_OPTUNA_PASSWORD@$HOST:$PG_PORT/optuna
export BRU_RESULTS_URL=postgresql+psycopg://bru_results:$BRU_PG_RESULTS_PASSWORD@$HOST:$PG_PORT/results
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

rollback() {  # rollback NAME LOG [WHAT WENT WRONG]
  local failed=$1 log=$2 what=${3:-did not become healthy within ${TIMEOUT}s}
  say "$failed failed; stopping what this call started: ${STARTED[*]:-nothing}"
  local name
  for name in "${STARTED[@]}"; do stop_one "$name"; done
  echo "error: $failed $what; see $log" >&2
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
    as_pg "$(pg_bin initdb)" -D "$data" -U postgres --auth-local=peer --auth-host=scram-sha-256 --no-sync \
      >"$LOGS/postgres-initdb.log" 2>&1 \
      || { echo "error: initdb failed; see $LOGS/postgres-initdb.log" >&2; exit 1; }
  fi
  # Written on every start, so that a cluster made by an older stack.sh (trust) is closed too:
  # the superuser only through the socket and only for the OS account that runs the cluster;
  # every role by password over TCP on 127.0.0.1; nothing else.
  local owner
  owner=$(as_pg id -un)
  printf '%s\n' "# written by infra/local/stack.sh" "local all postgres peer map=owner" \
    "host  all all 127.0.0.1/32 scram-sha-256" | as_pg tee "$data/pg_hba.conf" >/dev/null
  echo "owner $owner postgres" | as_pg tee "$data/pg_ident.conf" >/dev/null
  mkdir -p "$STACK/postgres/socket"
  [[ $(id -u) == 0 ]] && chown postgres "$STACK/postgres/socket"
  chmod 700 "$STACK/postgres/socket"
  touch "$LOGS/postgres.log"
  [[ $(id -u) == 0 ]] && chown postgres "$LOGS/postgres.log"
  if ! as_pg "$(pg_bin pg_ctl)" -D "$data" -w -t "$TIMEOUT" -l "$LOGS/postgres.log" \
      -o "-c listen_addresses=$HOST -p $PG_PORT -k $STACK/postgres/socket -c unix_socket_permissions=0700" \
      start >/dev/null; then
    rollback postgres "$LOGS/postgres.log"
  fi
  STARTED+=(postgres)
  # A role and a database per store. psql reads the passwords from its environment (runuser
  # keeps it), never from a command line that ps shows.
  load_secrets
  if ! (export BRU_PG_MLFLOW_PASSWORD BRU_PG_PREFECT_PASSWORD BRU_PG_OPTUNA_PASSWORD BRU_PG_RESULTS_PASSWORD
        as_pg "$(pg_bin psql)" -X -q -h "$STACK/postgres/socket" -p "$PG_PORT" -U postgres -d postgres \
          -f "$ROOT/infra/postgres/stores.sql") >>"$LOGS/postgres.log" 2>&1; then
    rollback postgres "$LOGS/postgres.log" "could not create the stores' roles and databases"
  fi
}

start_mlflow() {
  if alive mlflow; then say "mlflow already running on $HOST:$MLFLOW_PORT"; return; fi
  mkdir -p "$STACK/mlartifacts"
  load_secrets
  # The same command as the mlflow service of docker-compose.yml (tests/test_infra.py checks).
  # Every secret goes through the environment, none on the command line (ps): the store
  # URIs name no host or role, libpq takes them and the password from PG* variables.
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
  MLFLOW_BACKEND_STORE_URI=postgresql+psycopg:///mlflow \
  MLFLOW_AUTH_CONFIG_PATH=$ROOT/infra/mlflow/basic-auth.ini \
  MLFLOW_AUTH_ADMIN_PASSWORD=$MLFLOW_AUTH_ADMIN_PASSWORD \
  MLFLOW_FLASK_SERVER_SECRET_KEY=$MLFLOW_FLASK_SERVER_SECRET_KEY \
  PGHOST=$HOST PGPORT=$PG_PORT PGUSER=bru_mlflow PGPASSWORD=$BRU_PG_MLFLOW_PASSWORD \
    start mlflow "$BIN/mlflow" server --app-name basic-auth \
    --artifacts-destination "$STACK/mlartifacts" --serve-artifacts \
    --host "$HOST" --port "$MLFLOW_PORT" --workers 1 \
    --allowed-hosts "$HOST,$HOST:$MLFLOW_PORT,localhost,localhost:$MLFLOW_PORT"
  wait_http mlflow "http://$HOST:$MLFLOW_PORT/health"
}

start_prefect() {
  if alive prefect-server; then say "prefect-server already running on $HOST:$PREFECT_PORT"; return; fi
  mkdir -p "$STACK/prefect"
  load_secrets
  # The API answers only with the auth string (but /api/health), checks CSRF tokens, and
  # lets a browser call it from the server's own UI only.
  PREFECT_HOME=$STACK/prefect \
  PREFECT_API_DATABASE_CONNECTION_URL="postgresql+asyncpg://bru_prefect:$BRU_PG_PREFECT_PASSWORD@$HOST:$PG_PORT/prefect" \
  PREFECT_SERVER_API_AUTH_STRING="bru:$BRU_PREFECT_API_PASSWORD" \
  PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED=true \
  PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS="http://$HOST:$PREFECT_PORT,http://localhost:$PREFECT_PORT" \
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
  (umask 077; settings >"$STACK/env.sh")  # it holds the credentials
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
  env) [[ -f $SECRETS ]] || die "no stack in $STACK (no secrets.env): run infra/local/stack.sh up, or set BRU_STACK_DIR"; settings ;;
  *) die "usage: infra/local/stack.sh up [--workers N] | workers N | down | status | env" ;;
esac
