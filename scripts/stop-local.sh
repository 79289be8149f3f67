#!/usr/bin/env bash
# Stops the Postgres / Redis servers that ensure-postgres.sh / ensure-redis.sh started.
# With arguments (e.g. `postgres-5440 redis-6390`), stops only those; without, all of them.
set -euo pipefail
SB_SCRIPT=stop-local
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_one() {
    local id="$1" file="$SB_LOCAL/started/$1" line
    [[ -f "$file" ]] || { warn "nothing recorded for $id"; return 0; }
    line="$(cat "$file")"
    case "$id" in
        redis-*)
            local pid
            pid="$(cat "$line" 2>/dev/null || true)"
            if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
                log "stopping $id (pid $pid)"
                kill -TERM "$pid"
                wait_for 15 "$id to stop" bash -c "! kill -0 $pid 2>/dev/null" || kill -KILL "$pid" || true
            fi
            ;;
        postgres-*)
            local data user bin
            read -r data user <<<"$line"
            if [[ -f "$data/postmaster.pid" ]]; then
                bin="/usr/lib/postgresql/$(cat "$data/PG_VERSION")/bin"
                [[ -x "$bin/pg_ctl" ]] || bin="$(dirname "$(command -v pg_ctl)")"
                log "stopping $id (data $data)"
                if [[ -n "$user" ]]; then
                    as_user "$user" "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
                else
                    "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
                fi
            fi
            ;;
    esac
    rm -f "$file"
}

if (($# > 0)); then
    for id in "$@"; do stop_one "$id"; done
else
    shopt -s nullglob
    for file in "$SB_LOCAL"/started/*; do stop_one "$(basename "$file")"; done
fi
