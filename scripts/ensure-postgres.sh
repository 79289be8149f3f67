#!/usr/bin/env bash
# Makes sure a PostgreSQL answers at $SWITCHBOARD_DATABASE_URL
# (default postgres://postgres@127.0.0.1:5432/test) and that its database exists.
# When none answers and the URL names this machine, creates a trust-auth cluster with the
# machine's own server binaries under .local/postgres-<port>/ and starts it (as the `postgres`
# user when we are root: initdb and postgres refuse to run as root). Stop it with
# scripts/stop-local.sh.
set -euo pipefail
SB_SCRIPT=ensure-postgres
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

URL="$SB_DATABASE_URL"
parse_url "$URL"
HOST="${URL_HOST:-127.0.0.1}"
PORT="${URL_PORT:-5432}"
DB_USER="${URL_USER:-postgres}"
DB_NAME="${URL_PATH:-$DB_USER}"

# The server binaries: the newest /usr/lib/postgresql/<version>/bin, else whatever is on PATH.
find_pg_bin() {
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -V -r); do
        if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]]; then
            printf '%s\n' "$dir"; return 0
        fi
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v pg_ctl)"; return 0
    fi
    return 1
}
PG_BIN="$(find_pg_bin || true)"

pg_tool() {   # a client tool from PG_BIN, else PATH
    if [[ -n "$PG_BIN" && -x "$PG_BIN/$1" ]]; then printf '%s\n' "$PG_BIN/$1"
    elif command -v "$1" >/dev/null 2>&1; then command -v "$1"
    else return 1; fi
}

pg_answers() {
    local isready
    if isready="$(pg_tool pg_isready)"; then
        "$isready" -q -h "$HOST" -p "$PORT" -t 3
    else
        tcp_open "$HOST" "$PORT"
    fi
}

# Creates DB_NAME when missing (needs psql; without it, trusts that the database exists).
ensure_database() {
    local psql
    if ! psql="$(pg_tool psql)"; then
        warn "psql not found: cannot check that database '$DB_NAME' exists"
        return 0
    fi
    export PGPASSWORD="${URL_PASSWORD:-${PGPASSWORD:-}}"
    local exists
    if ! exists="$("$psql" -h "$HOST" -p "$PORT" -U "$DB_USER" -d postgres -tAc \
            "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" 2>&1)"; then
        die "PostgreSQL at $HOST:$PORT answers, but '$DB_USER' cannot connect: $exists
  (the dev scripts expect trust auth for 127.0.0.1, or a password in SWITCHBOARD_DATABASE_URL)"
    fi
    if [[ "$exists" != 1 ]]; then
        log "creating database '$DB_NAME'"
        "$psql" -h "$HOST" -p "$PORT" -U "$DB_USER" -d postgres -qc "CREATE DATABASE \"$DB_NAME\"" >/dev/null
    fi
}

if pg_answers; then
    log "PostgreSQL answers at $HOST:$PORT"
    ensure_database
    exit 0
fi

is_local_host "$HOST" || die "no PostgreSQL answers at $HOST:$PORT, and that is not this machine: start it yourself"
tcp_open "$HOST" "$PORT" && die "port $PORT on $HOST is taken by something that is not PostgreSQL"
[[ -n "$PG_BIN" ]] || die "no PostgreSQL at $HOST:$PORT and no server binaries (initdb, pg_ctl, postgres) here (apt-get install postgresql)"
log "server binaries: $PG_BIN"

# As root, the server runs as the `postgres` user, which must be able to reach its folder.
RUN_AS=""
if is_root; then
    RUN_AS=postgres
    if ! id -u postgres >/dev/null 2>&1; then
        log "creating system user 'postgres' to run the server"
        useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
fi
run_pg() {
    if [[ -n "$RUN_AS" ]]; then as_user "$RUN_AS" "$@"; else "$@"; fi
}

BASE="$SB_LOCAL/postgres-$PORT"
mkdir -p "$BASE"
if [[ -n "$RUN_AS" ]]; then
    chown "$RUN_AS:" "$BASE"
    if ! as_user "$RUN_AS" test -w "$BASE"; then
        # e.g. a checkout under /root (mode 700): the postgres user cannot get in.
        BASE="/var/tmp/switchboard-$(id -un)/postgres-$PORT"
        warn "user '$RUN_AS' cannot write under $SB_LOCAL; using $BASE instead"
        mkdir -p "$BASE"
        chmod 755 "$(dirname "$BASE")"
        chown "$RUN_AS:" "$BASE"
    fi
fi
DATA="$BASE/data"
LOGFILE="$BASE/postgres.log"
# Unix socket folder: unix socket paths are limited to ~107 bytes.
SOCKDIR="$BASE/run"
if ((${#SOCKDIR} > 90)); then SOCKDIR="/tmp/switchboard-pg-$PORT"; fi
mkdir -p "$SOCKDIR"
[[ -n "$RUN_AS" ]] && chown "$RUN_AS:" "$SOCKDIR"

if [[ ! -s "$DATA/PG_VERSION" ]]; then
    log "initdb: new trust-auth cluster in $DATA (superuser '$DB_USER')"
    run_pg "$PG_BIN/initdb" -D "$DATA" -A trust -U "$DB_USER" -E UTF8 --no-locale >"$BASE/initdb.log" 2>&1 \
        || { tail -n 30 "$BASE/initdb.log" >&2; die "initdb failed (log: $BASE/initdb.log)"; }
fi

log "starting PostgreSQL on $HOST:$PORT (data $DATA, log $LOGFILE)"
run_pg "$PG_BIN/pg_ctl" -D "$DATA" -l "$LOGFILE" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $SOCKDIR -c fsync=off -c full_page_writes=off" start >/dev/null \
    || { tail -n 30 "$LOGFILE" >&2 || true; die "PostgreSQL did not start (log: $LOGFILE)"; }

wait_for 30 "PostgreSQL on port $PORT" pg_answers || die "PostgreSQL did not answer on $HOST:$PORT (log: $LOGFILE)"
record_started postgres "$PORT" "$DATA ${RUN_AS:-}"
ensure_database
log "PostgreSQL started at $HOST:$PORT, database '$DB_NAME' ready"
