#!/usr/bin/env bash
# Makes sure a Redis answers at $SWITCHBOARD_REDIS_URL (default redis://127.0.0.1:6379).
# When none answers and the URL names this machine, starts the machine's own redis-server as a
# daemon that keeps nothing on disk, under .local/redis/<port>/. Stop it with scripts/stop-local.sh.
set -euo pipefail
SB_SCRIPT=ensure-redis
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

URL="${SWITCHBOARD_REDIS_URL:-redis://127.0.0.1:6379}"
parse_url "$URL"
HOST="${URL_HOST:-127.0.0.1}"
PORT="${URL_PORT:-6379}"
PASSWORD="$URL_PASSWORD"

redis_ping() {
    if command -v redis-cli >/dev/null 2>&1; then
        local args=(-h "$HOST" -p "$PORT")
        [[ -n "$PASSWORD" ]] && args+=(--no-auth-warning -a "$PASSWORD")
        [[ "$(timeout 3 redis-cli "${args[@]}" ping 2>/dev/null)" == PONG ]]
    else
        # No client: speak RESP over bash's /dev/tcp.
        local reply
        reply="$(timeout 3 bash -c '
            exec 3<>"/dev/tcp/$1/$2" || exit 1
            [[ -n "$3" ]] && printf "AUTH %s\r\n" "$3" >&3 && read -r _ <&3
            printf "PING\r\n" >&3
            read -r line <&3
            printf "%s" "$line"' _ "$HOST" "$PORT" "$PASSWORD" 2>/dev/null || true)"
        [[ "$reply" == "+PONG"* ]]
    fi
}

if redis_ping; then
    log "Redis answers at $HOST:$PORT"
    exit 0
fi

if tcp_open "$HOST" "$PORT"; then
    die "something listens on $HOST:$PORT but does not answer PING as Redis (wrong password in SWITCHBOARD_REDIS_URL?)"
fi
is_local_host "$HOST" || die "no Redis answers at $HOST:$PORT, and that is not this machine: start it yourself"
command -v redis-server >/dev/null 2>&1 || die "no Redis at $HOST:$PORT and no redis-server here (apt-get install redis-server)"

DIR="$SB_LOCAL/redis/$PORT"
mkdir -p "$DIR"
log "no Redis at $HOST:$PORT: starting redis-server (data in $DIR, nothing saved to disk)"
args=(--port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes
      --dir "$DIR" --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log")
[[ -n "$PASSWORD" ]] && args+=(--requirepass "$PASSWORD")
redis-server "${args[@]}"

if ! wait_for 20 "redis-server on port $PORT" redis_ping; then
    tail -n 20 "$DIR/redis.log" >&2 || true
    die "redis-server did not come up on $HOST:$PORT (log: $DIR/redis.log)"
fi
record_started redis "$PORT" "$DIR/redis.pid"
log "Redis started at $HOST:$PORT (pid $(cat "$DIR/redis.pid"))"
