#!/usr/bin/env bash
# Local shared services for zoofusion: a PostgreSQL server (Debian's package) and an `mlflow server` using it as
# backend store, with proxied artifacts, both bound to 127.0.0.1. The default set-up needs none of this (sqlite
# files); this is for several processes or machines sharing one tracking server and one Optuna storage.
#
#   scripts/services.sh install        apt-get install postgresql (the only command that installs anything)
#   scripts/services.sh start  [DIR]   init (first time) and start both, wait until they answer, print the exports
#   scripts/services.sh env    [DIR]   print the exports of running services again
#   scripts/services.sh status [DIR]   exit 0 when both answer, 3 otherwise
#   scripts/services.sh stop   [DIR]   stop both (mlflow's whole process group, then pg_ctl stop -m fast)
#
#   eval "$(scripts/services.sh start)"   # sets MLFLOW_TRACKING_URI and OPTUNA_STORAGE
#   dvc exp run -S tune.storage=env:OPTUNA_STORAGE -S tune.workers=2   # the URL stays in the environment
#
# DIR (default $ZF_SERVICES_DIR, else .services/ in the repository) holds everything: pgdata/ (the cluster),
# artifacts/ (mlflow's --artifacts-destination), log/, services.env (ports, URLs, pids; mode 600). Data survive
# stop/start; `rm -rf DIR` after `stop` removes them. Run as root, PostgreSQL runs as the `postgres` user, so DIR
# and its parents must be traversable by it (mktemp -d makes a 0700 folder: chmod 755 it).
# Other knobs: ZF_PG_PORT, ZF_MLFLOW_PORT (default: the ports used last time in DIR if free, else a free one),
# ZF_PG_BIN (default: the newest /usr/lib/postgresql/<version>/bin), ZF_PYTHON, ZF_MLFLOW (default: .venv's),
# ZF_MLFLOW_WORKERS (default 2), ZF_WAIT (seconds to wait for each service, default 120).
# Both servers listen on 127.0.0.1 only; PostgreSQL has no Unix socket and wants a password (scram-sha-256).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CMD=${1:-}
[ $# -gt 0 ] && shift
DIR=$(realpath -m "${1:-${ZF_SERVICES_DIR:-$ROOT/.services}}")
PGDATA=$DIR/pgdata
STATE=$DIR/services.env
SECRETS=$DIR/secrets.env
LOGS=$DIR/log
ARTIFACTS=$DIR/artifacts
PY=${ZF_PYTHON:-$ROOT/.venv/bin/python}
MLFLOW=${ZF_MLFLOW:-$ROOT/.venv/bin/mlflow}
WAIT=${ZF_WAIT:-120}
DB_USER=zoofusion
HOST=127.0.0.1

say() { echo "services: $*" >&2; }
die() { say "$*"; exit 1; }

pg_bin() {
  if [ -n "${ZF_PG_BIN:-}" ]; then echo "$ZF_PG_BIN"; return; fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -x "$d/pg_ctl" ] || die "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin; run: scripts/services.sh install"
  echo "$d"
}

# PostgreSQL refuses to run as root: as root, run its commands as `postgres`.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

load_state() {
  PG_PORT='' MLFLOW_PORT='' MLFLOW_PGID='' PG_SUPER_PASSWORD='' PG_PASSWORD=''
  # shellcheck disable=SC1090
  [ -f "$STATE" ] && . "$STATE"
  # shellcheck disable=SC1090
  [ -f "$SECRETS" ] && . "$SECRETS"
  return 0
}

write_state() {
  (umask 077; cat > "$STATE" <<EOF
PG_PORT=$PG_PORT
MLFLOW_PORT=$MLFLOW_PORT
MLFLOW_PGID=$MLFLOW_PGID
EOF
  )
}

port_free() {  # port_free PORT: nothing listens on 127.0.0.1:PORT and it can be bound
  "$PY" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: a port in TIME_WAIT is free
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pick_port() {  # pick_port ENV_OVERRIDE LAST_USED
  if [ -n "$1" ]; then echo "$1"
  elif [ -n "$2" ] && port_free "$2"; then echo "$2"
  else free_port
  fi
}

# The driver is explicit: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg (3), 2.0 to psycopg2; we ship psycopg2.
pg_url() { echo "postgresql+psycopg2://$DB_USER:$PG_PASSWORD@$HOST:$PG_PORT/$1"; }
tracking_uri() { echo "http://$HOST:$MLFLOW_PORT"; }

print_env() {
  echo "export MLFLOW_TRACKING_URI=$(tracking_uri)"
  echo "export OPTUNA_STORAGE=$(pg_url optuna)"
}

pg_running() { [ -f "$PGDATA/postmaster.pid" ] && as_pg "$(pg_bin)/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }
group_alive() { [ -n "${1:-}" ] && kill -0 -- "-$1" 2>/dev/null; }

mlflow_healthy() {
  "$PY" - "$(tracking_uri)/health" <<'EOF'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

psql_admin() {  # psql_admin SQL...: as the superuser over TCP
  PGPASSWORD=$PG_SUPER_PASSWORD "$(pg_bin)/psql" -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$PG_PORT" -U postgres \
    -d postgres -tA "$@"
}

init_pg() {
  local bin pwfile
  bin=$(pg_bin)
  PG_SUPER_PASSWORD=$("$PY" -c 'import secrets; print(secrets.token_hex(16))')
  PG_PASSWORD=$("$PY" -c 'import secrets; print(secrets.token_hex(16))')
  (umask 077; printf 'PG_SUPER_PASSWORD=%s\nPG_PASSWORD=%s\n' "$PG_SUPER_PASSWORD" "$PG_PASSWORD" > "$SECRETS")
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA"
  pwfile=$(mktemp "$DIR/.pw.XXXXXX")
  echo "$PG_SUPER_PASSWORD" > "$pwfile"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$PGDATA" "$pwfile"; fi
  say "initdb $PGDATA"
  if ! as_pg "$bin/initdb" -D "$PGDATA" -U postgres --pwfile="$pwfile" --auth=scram-sha-256 -E UTF8 --no-locale \
      > "$LOGS/initdb.log" 2>&1; then
    rm -f "$pwfile"; cat "$LOGS/initdb.log" >&2; die "initdb failed"
  fi
  rm -f "$pwfile"
  cat >> "$PGDATA/postgresql.conf" <<EOF

# scripts/services.sh: 127.0.0.1 only, no Unix socket; the port is given at each start (-p).
listen_addresses = '$HOST'
unix_socket_directories = ''
EOF
}

start() {
  local bin
  bin=$(pg_bin)
  [ -x "$MLFLOW" ] || die "no mlflow at $MLFLOW (make setup, or set ZF_MLFLOW)"
  "$PY" -c 'import psycopg2' 2>/dev/null || die "$PY cannot import psycopg2 (pip install psycopg2-binary)"
  mkdir -p "$DIR" "$LOGS" "$ARTIFACTS"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "no user postgres (scripts/services.sh install)"
    runuser -u postgres -- test -x "$DIR" ||
      die "user postgres cannot enter $DIR: make it and its parents traversable (chmod o+x) or pick another DIR"
  fi
  load_state
  if pg_running && group_alive "$MLFLOW_PGID" && mlflow_healthy; then
    say "already running in $DIR"; print_env; return 0
  fi
  [ -f "$PGDATA/PG_VERSION" ] || init_pg
  [ -n "$PG_SUPER_PASSWORD" ] || die "$SECRETS is missing: remove $DIR after stop and start again"

  if ! pg_running; then
    PG_PORT=$(pick_port "${ZF_PG_PORT:-}" "$PG_PORT")
    touch "$LOGS/postgres.log"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$LOGS/postgres.log"; fi
    say "PostgreSQL $(basename "$(dirname "$bin")") on $HOST:$PG_PORT"
    as_pg "$bin/pg_ctl" -D "$PGDATA" -l "$LOGS/postgres.log" -o "-p $PG_PORT" -w -t "$WAIT" start >/dev/null ||
      { tail -n 20 "$LOGS/postgres.log" >&2; die "PostgreSQL did not start"; }
  else
    PG_PORT=$(sed -n 4p "$PGDATA/postmaster.pid")  # the port of the running postmaster
  fi
  write_state
  # A role owning one database for MLflow and one for Optuna (idempotent).
  if [ -z "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'")" ]; then
    psql_admin -c "CREATE ROLE $DB_USER LOGIN PASSWORD '$PG_PASSWORD'"
  fi
  for db in mlflow optuna; do
    if [ -z "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
      psql_admin -c "CREATE DATABASE $db OWNER $DB_USER"
    fi
  done
  # Optuna's schema now, once: RDBStorage creates its tables on first use, and two processes doing that at the
  # same time on an empty database collide (UniqueViolation on CREATE TYPE; optuna/optuna#1092).
  "$PY" -c 'import sys, optuna; optuna.storages.RDBStorage(sys.argv[1])' "$(pg_url optuna)" ||
    die "cannot create Optuna's tables in $HOST:$PG_PORT/optuna"

  if group_alive "$MLFLOW_PGID"; then  # a previous server that does not answer: replace it
    kill -TERM -- "-$MLFLOW_PGID" 2>/dev/null || true; sleep 2; kill -KILL -- "-$MLFLOW_PGID" 2>/dev/null || true
  fi
  MLFLOW_PORT=$(pick_port "${ZF_MLFLOW_PORT:-}" "$MLFLOW_PORT")
  say "mlflow server on $HOST:$MLFLOW_PORT (backend postgresql $HOST:$PG_PORT/mlflow, artifacts $ARTIFACTS)"
  # Own session and process group (setsid), so `stop` ends the server and all its workers; the backend store URI
  # (it holds the password) goes through MLFLOW_BACKEND_STORE_URI, mlflow's env var for --backend-store-uri,
  # rather than the command line that `ps` shows. MLflow's job runner (GenAI jobs: 7 huey consumer processes) is
  # off unless MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true is set: the pipeline needs none of it.
  MLFLOW_BACKEND_STORE_URI=$(pg_url mlflow) MLFLOW_DISABLE_TELEMETRY=true \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} \
    setsid "$MLFLOW" server --artifacts-destination "$ARTIFACTS" --host "$HOST" --port "$MLFLOW_PORT" \
      --workers "${ZF_MLFLOW_WORKERS:-2}" > "$LOGS/mlflow.log" 2>&1 < /dev/null &
  local pid=$! t=0
  MLFLOW_PGID=''
  while [ "$t" -lt 50 ]; do  # until setsid has made it a group leader
    MLFLOW_PGID=$(ps -o pgid= -p "$pid" | tr -d ' ')
    [ "$MLFLOW_PGID" = "$pid" ] && break
    sleep 0.1; t=$((t + 1))
  done
  [ "$MLFLOW_PGID" = "$pid" ] || { kill -TERM "$pid" 2>/dev/null; die "mlflow server is not its own process group"; }
  write_state
  t=0
  until mlflow_healthy; do
    if ! group_alive "$MLFLOW_PGID" || [ "$t" -ge "$WAIT" ]; then
      tail -n 30 "$LOGS/mlflow.log" >&2
      die "mlflow server did not answer on $(tracking_uri)/health within ${t}s (log: $LOGS/mlflow.log)"
    fi
    sleep 1; t=$((t + 1))
  done
  say "up: MLflow $(tracking_uri), Optuna storage $HOST:$PG_PORT/optuna"
  print_env
}

stop() {
  load_state
  if group_alive "$MLFLOW_PGID"; then
    say "stopping mlflow server (process group $MLFLOW_PGID)"
    kill -TERM -- "-$MLFLOW_PGID" 2>/dev/null || true
    local t=0
    while group_alive "$MLFLOW_PGID" && [ "$t" -lt 300 ]; do sleep 0.1; t=$((t + 1)); done
    if group_alive "$MLFLOW_PGID"; then
      say "mlflow server still running after 30 s: SIGKILL"; kill -KILL -- "-$MLFLOW_PGID" 2>/dev/null || true
    fi
  fi
  if pg_running; then
    say "stopping PostgreSQL ($PGDATA)"
    as_pg "$(pg_bin)/pg_ctl" -D "$PGDATA" -m fast -w -t "$WAIT" stop >/dev/null
  fi
  if [ -f "$STATE" ]; then MLFLOW_PGID=''; write_state; fi
  say "stopped"
}

status() {
  load_state
  local rc=0
  if pg_running; then say "PostgreSQL: running on $HOST:$(sed -n 4p "$PGDATA/postmaster.pid") ($PGDATA)"
  else say "PostgreSQL: not running ($PGDATA)"; rc=3; fi
  if group_alive "$MLFLOW_PGID" && mlflow_healthy; then say "mlflow server: running on $(tracking_uri)"
  else say "mlflow server: not running"; rc=3; fi
  return $rc
}

case "$CMD" in
  install)
    [ "$(id -u)" = 0 ] || die "install runs apt-get: run it as root"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
    ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  env)
    load_state
    status 2>/dev/null || die "not running in $DIR (scripts/services.sh start)"
    print_env
    ;;
  *) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
