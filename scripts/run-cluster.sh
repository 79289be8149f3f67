#!/usr/bin/env bash
# `make run`: the whole Switchboard cluster on this machine, in the foreground.
#
#   Postgres + Redis (reused when they answer, else started from this machine's binaries)
#   -> cargo build --release -> switchboard-migrate -> membership, messages, presence
#   -> gateway gw-1 on 127.0.0.1:3000 and gw-2 on 127.0.0.1:3001.
#
# Logs go to .local/logs/<name>.log. Ctrl-C (or SIGTERM) stops everything this script started.
# Knobs (environment): SWITCHBOARD_DATABASE_URL, SWITCHBOARD_REDIS_URL, SWITCHBOARD_ADMIN_TOKEN,
# RUST_LOG, PROFILE=release|debug, SWITCHBOARD_BIN_DIR (use these binaries, skip the build),
# GATEWAY_PORTS="3000 3001", MEMBERSHIP_ADDR / MESSAGES_ADDR / PRESENCE_ADDR (127.0.0.1:5005x),
# READY_TIMEOUT=60 (seconds).
set -euo pipefail
SB_SCRIPT=run-cluster
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$SB_ROOT"

export SWITCHBOARD_DATABASE_URL="$SB_DATABASE_URL"
export SWITCHBOARD_REDIS_URL="${SWITCHBOARD_REDIS_URL:-redis://127.0.0.1:6379}"
export RUST_LOG="${RUST_LOG:-info}"
PROFILE="${PROFILE:-release}"
READY_TIMEOUT="${READY_TIMEOUT:-60}"
GATEWAY_PORTS="${GATEWAY_PORTS:-3000 3001}"
ADMIN_TOKEN="${SWITCHBOARD_ADMIN_TOKEN:-dev-admin-token}"
# Local development secrets; never use these anywhere else.
JWT_SECRET="${SWITCHBOARD_JWT_SECRET:-dev-jwt-secret-change-me}"
SESSION_SECRET="${SWITCHBOARD_SESSION_SECRET:-dev-session-secret-change-me}"
ALLOWED_ORIGINS="${SWITCHBOARD_ALLOWED_ORIGINS:-http://localhost:3000,http://127.0.0.1:3000,http://localhost:3001,http://127.0.0.1:3001,http://localhost:5173,http://127.0.0.1:5173}"

MEMBERSHIP_ADDR="${MEMBERSHIP_ADDR:-127.0.0.1:50051}"
MESSAGES_ADDR="${MESSAGES_ADDR:-127.0.0.1:50052}"
PRESENCE_ADDR="${PRESENCE_ADDR:-127.0.0.1:50053}"

LOGS="$SB_LOCAL/logs"
RUN="$SB_LOCAL/run"
mkdir -p "$LOGS" "$RUN"

# ---------------------------------------------------------------------------------------------
# Everything we start is recorded here and stopped on exit.
NAMES=()
PIDS=()
STARTED_LOG="$RUN/ensure-started.$$"
: >"$STARTED_LOG"
CLEANED=0

# stop_matching GLOB: SIGTERM to the started processes whose name matches, newest first, then
# waits for them (SIGKILL after 20 s).
stop_matching() {
    local glob="$1" i pids=()
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        # shellcheck disable=SC2053  # glob match on purpose
        [[ "${NAMES[i]}" == $glob ]] || continue
        if kill -0 "${PIDS[i]}" 2>/dev/null; then
            log "  SIGTERM ${NAMES[i]} (pid ${PIDS[i]})"
            kill -TERM "${PIDS[i]}" 2>/dev/null
            pids+=("$i")
        fi
    done
    local deadline=$((SECONDS + 20))
    for i in "${pids[@]}"; do
        while kill -0 "${PIDS[i]}" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        if kill -0 "${PIDS[i]}" 2>/dev/null; then
            warn "  ${NAMES[i]} still running after 20s: SIGKILL"
            kill -KILL "${PIDS[i]}" 2>/dev/null
        fi
        wait "${PIDS[i]}" 2>/dev/null
    done
}

cleanup() {
    local status=$?
    ((CLEANED)) && return
    CLEANED=1
    # Finish the cleanup whatever happens: more Ctrl-C, or a reader of our output (| tee) that
    # the Ctrl-C already killed (writes then fail instead of killing us with SIGPIPE).
    set +e
    trap '' INT TERM HUP PIPE
    echo >&2 2>/dev/null
    log "stopping the cluster"
    # Gateways first (they drain their sockets, still talking to the services), then the rest.
    stop_matching 'gateway-*'
    stop_matching '*'
    # Postgres / Redis only when this run started them.
    if [[ -s "$STARTED_LOG" ]]; then
        # shellcheck disable=SC2046
        "$SB_ROOT/scripts/stop-local.sh" $(cat "$STARTED_LOG") || true
    fi
    rm -f "$STARTED_LOG"
    log "stopped"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# start NAME LISTEN_ADDR BINARY [VAR=VALUE...]: runs BINARY in the background, logging to
# .local/logs/NAME.log, with SWITCHBOARD_LISTEN=LISTEN_ADDR and the extra variables.
start() {
    local name="$1" listen="$2" bin="$3"; shift 3
    local host="${listen%:*}" port="${listen##*:}"
    if tcp_open "$host" "$port"; then
        die "$listen is already taken (another cluster running? see: ss -ltnp 'sport = :$port')"
    fi
    log "starting $name on $listen (log: ${LOGS#"$SB_ROOT"/}/$name.log)"
    env SWITCHBOARD_LISTEN="$listen" "$@" "$BIN_DIR/$bin" >"$LOGS/$name.log" 2>&1 &
    NAMES+=("$name")
    PIDS+=("$!")
}

# Fails (with the log's tail) when a started process has exited.
all_alive() {
    local i
    for i in "${!PIDS[@]}"; do
        if ! kill -0 "${PIDS[i]}" 2>/dev/null; then
            warn "${NAMES[i]} exited; last lines of $LOGS/${NAMES[i]}.log:"
            tail -n 30 "$LOGS/${NAMES[i]}.log" >&2 || true
            return 1
        fi
    done
}

tcp_ready() { all_alive && tcp_open "${1%:*}" "${1##*:}"; }
http_ready() { all_alive && [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1")" == 200 ]]; }

# ---------------------------------------------------------------------------------------------
command -v curl >/dev/null 2>&1 || die "curl is needed (apt-get install curl)"

log "1/5 Postgres and Redis"
ENSURE_STARTED_LOG="$STARTED_LOG" "$SB_ROOT/scripts/ensure-postgres.sh"
ENSURE_STARTED_LOG="$STARTED_LOG" "$SB_ROOT/scripts/ensure-redis.sh"

if [[ -n "${SWITCHBOARD_BIN_DIR:-}" ]]; then
    BIN_DIR="$SWITCHBOARD_BIN_DIR"
    log "2/5 using the binaries in $BIN_DIR (no build)"
else
    log "2/5 cargo build --$PROFILE --workspace --bins"
    if [[ "$PROFILE" == release ]]; then
        cargo build --release --workspace --bins
    else
        cargo build --workspace --bins
    fi
    BIN_DIR="${CARGO_TARGET_DIR:-$SB_ROOT/target}/$PROFILE"
fi
for bin in switchboard-migrate membership messages presence gateway; do
    [[ -x "$BIN_DIR/$bin" ]] || die "missing binary $BIN_DIR/$bin"
done

log "3/5 switchboard-migrate"
if ! "$BIN_DIR/switchboard-migrate" >"$LOGS/migrate.log" 2>&1; then
    tail -n 30 "$LOGS/migrate.log" >&2
    die "migrations failed (log: $LOGS/migrate.log)"
fi

log "4/5 membership, messages, presence"
start membership "$MEMBERSHIP_ADDR" membership
start messages "$MESSAGES_ADDR" messages
start presence "$PRESENCE_ADDR" presence \
    SWITCHBOARD_PRESENCE_TTL_MS="${SWITCHBOARD_PRESENCE_TTL_MS:-30000}"
for addr in "$MEMBERSHIP_ADDR" "$MESSAGES_ADDR" "$PRESENCE_ADDR"; do
    wait_for "$READY_TIMEOUT" "gRPC service on $addr" tcp_ready "$addr" || exit 1
done

log "5/5 gateways"
n=0
GATEWAY_URLS=()
for port in $GATEWAY_PORTS; do
    n=$((n + 1))
    start "gateway-$n" "127.0.0.1:$port" gateway \
        SWITCHBOARD_NODE_ID="gw-$n" \
        SWITCHBOARD_MEMBERSHIP_URL="http://$MEMBERSHIP_ADDR" \
        SWITCHBOARD_MESSAGES_URL="http://$MESSAGES_ADDR" \
        SWITCHBOARD_PRESENCE_URL="http://$PRESENCE_ADDR" \
        SWITCHBOARD_ADMIN_TOKEN="$ADMIN_TOKEN" \
        SWITCHBOARD_JWT_SECRET="$JWT_SECRET" \
        SWITCHBOARD_SESSION_SECRET="$SESSION_SECRET" \
        SWITCHBOARD_ALLOWED_ORIGINS="$ALLOWED_ORIGINS" \
        SWITCHBOARD_DEV_MODE=1
    GATEWAY_URLS+=("http://127.0.0.1:$port")
done
for url in "${GATEWAY_URLS[@]}"; do
    wait_for "$READY_TIMEOUT" "$url/readyz" http_ready "$url/readyz" || exit 1
done

GW="${GATEWAY_URLS[0]}"
cat <<INFO

================================================================================
 Switchboard is running (Ctrl-C stops everything this script started)

 Gateways (Socket.IO + HTTP):  ${GATEWAY_URLS[*]}
   health / readiness / metrics: $GW/healthz  $GW/readyz  $GW/metrics
 gRPC: membership $MEMBERSHIP_ADDR, messages $MESSAGES_ADDR, presence $PRESENCE_ADDR
 Postgres: $SWITCHBOARD_DATABASE_URL
 Redis:    $SWITCHBOARD_REDIS_URL
 Logs:     ${LOGS#"$SB_ROOT"/}/<name>.log   (tail -f ${LOGS#"$SB_ROOT"/}/gateway-1.log)
 Admin token: $ADMIN_TOKEN
 DEVELOPMENT MODE (SWITCHBOARD_DEV_MODE=1): well-known local secrets, for this machine only;
   a production gateway refuses to start without its own (docs/security.md)
 Dialects (namespace per contract; SWITCHBOARD_DIALECTS overrides, docs/dialects/):
   chat $GW/   app $GW/ws/app (JWT)   guild $GW/guild (connect.sid cookie: POST /v1/sessions)
   vault $GW/vault (auth.token, or the next-auth.session-token cookie)   tasks $GW/tasks (JWT)

 Mint a user token (admin API, JWT valid 1 h):
   curl -s -X POST $GW/v1/tokens \\
     -H 'Authorization: Bearer $ADMIN_TOKEN' -H 'Content-Type: application/json' \\
     -d '{"userId":"alice"}'

 Connect with socket.io-client (npm i socket.io-client), to either node:
   import { io } from "socket.io-client";
   const socket = io("$GW", { auth: { token: "<token from the curl above>" } });
   socket.on("connect", () => console.log("connected", socket.id));
   socket.on("connect_error", (e) => console.error(e.message));
   // Long-polling across nodes needs sticky sessions; locally, or for WebSocket only:
   // io("${GATEWAY_URLS[-1]}", { transports: ["websocket"], auth: { token } })
================================================================================

INFO

# Stay in the foreground until a process exits or we are interrupted.
while all_alive; do
    sleep 1
done
die "a service exited; stopping the cluster"
