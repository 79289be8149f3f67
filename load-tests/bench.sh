#!/usr/bin/env bash
# `make bench`: Switchboard and the Node reference peer (load-tests/node-peer), two nodes each
# on the same Postgres and Redis, driven through the same scenarios by the same generator
# (sb-load), interleaved: every scenario runs against one system and then the other (the order
# alternates between repeats). Results: docs/benchmarks/raw/*.json, then
# docs/benchmarks/results.{md,json} and PNG plots (load-tests/report/report.py).
#
# Every ladder step also writes the CPU of each process group (gateways, each service, the Node
# peer's nodes, all of Postgres, Redis, the generator): the report's µs per delivery or send.
#
# Knobs (environment): BENCH_OUT=docs/benchmarks, BENCH_REPEATS=2 (ladders and idle),
# BENCH_SCENARIOS="idle idle-one-node connect-storm typing-fanout typing-fanout-100
# persisted-send presence-churn node-kill", BENCH_SYSTEMS="switchboard node bare" (bare: the
# minimum under both, in the typing and persisted-send scenarios only), BENCH_STEP_SECS
# (8; a ladder step), BENCH_QUICK=1 (small sizes, for a smoke run),
# BENCH_SERVE_ONLY=1 (start both clusters and wait, for profiling with perf), BENCH_BIN=DIR
# (prebuilt binaries instead of this checkout's release build: to compare two builds),
# BENCH_WORKER_THREADS=N (tokio worker threads of every Switchboard process; default 1, sized
# like the Node peer, whose two nodes run one event loop each on this two-core machine;
# `default` leaves tokio's, one per CPU; docs/benchmarks/README.md §20),
# SWITCHBOARD_BENCH_DATABASE (sb_bench), SWITCHBOARD_DATABASE_URL's server, SWITCHBOARD_REDIS_URL.
set -euo pipefail
SB_SCRIPT=bench
# shellcheck source=../scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$SB_ROOT"

OUT="${BENCH_OUT:-docs/benchmarks}"
RAW="$OUT/raw"
REPEATS="${BENCH_REPEATS:-2}"
SCENARIOS="${BENCH_SCENARIOS:-idle idle-one-node connect-storm typing-fanout typing-fanout-100 persisted-send presence-churn node-kill}"
SYSTEMS="${BENCH_SYSTEMS:-switchboard node bare}"
QUICK="${BENCH_QUICK:-0}"
ADMIN_TOKEN="bench-admin-token-0123456789abcdefgh"
JWT_SECRET="bench-jwt-secret-0123456789abcdefghijk"
DB_NAME="${SWITCHBOARD_BENCH_DATABASE:-sb_bench}"
DB_URL="$(sb_database_url "$DB_NAME")"
REDIS_URL="${SWITCHBOARD_REDIS_URL:-redis://127.0.0.1:6379}"
BIN="${BENCH_BIN:-${CARGO_TARGET_DIR:-$SB_ROOT/target}/release}"
LOGS="$SB_LOCAL/bench-logs"
# Rate limits out of the way on both systems (both still run their limiter on every send).
# Switchboard's per-socket event budget and per-address connection cap are lifted too (every
# generated client comes from 127.0.0.1; the budget is still computed on every event).
RATE_LIMIT=100000000
mkdir -p "$RAW" "$LOGS"
ulimit -n "$(ulimit -Hn)"

log "1/4 Postgres, Redis, release build, npm packages, report venv"
scripts/ensure-postgres.sh
scripts/ensure-redis.sh
if [[ -z "${BENCH_BIN:-}" ]]; then cargo build --release --workspace --bins; fi
(cd load-tests/node-peer && npm ci --no-audit --no-fund --silent)
VENV="$SB_LOCAL/bench-venv"
if [[ ! -x "$VENV/bin/python" ]]; then python3 -m venv "$VENV"; fi
"$VENV/bin/pip" install -q -r load-tests/report/requirements.txt

log "2/4 fresh database $DB_NAME"
psql "$SB_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" -c "CREATE DATABASE $DB_NAME"
SWITCHBOARD_DATABASE_URL="$DB_URL" "$BIN/switchboard-migrate" >"$LOGS/migrate.log" 2>&1

# ---------------------------------------------------------------------------------------------
PIDS=()
cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    sleep 1
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    wait 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# spawn NAME CMD...: background process, log in $LOGS/NAME.log, pid in $LAST_PID.
spawn() {
    local name="$1"; shift
    "$@" >"$LOGS/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

wait_http() {
    local url="$1" i
    for ((i = 0; i < 150; i++)); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)" == 200 ]] && return 0
        sleep 0.2
    done
    die "$url did not answer 200"
}

declare -A URLS NODE_PIDS SERVICE_PIDS
SB_SERVICES_STARTED=0
# start_switchboard: the gRPC services once, gateways gw-1 :3000 and gw-2 :3001 (again after a kill).
start_switchboard() {
    local common=(env RUST_LOG=warn SWITCHBOARD_DATABASE_URL="$DB_URL" SWITCHBOARD_REDIS_URL="$REDIS_URL"
        SWITCHBOARD_REDIS_PREFIX="bench:")
    local workers="${BENCH_WORKER_THREADS:-1}"
    if [[ "$workers" != default ]]; then common+=(TOKIO_WORKER_THREADS="$workers"); fi
    if ((SB_SERVICES_STARTED == 0)); then
        local service port=50061
        for service in membership messages presence; do
            spawn "$service" "${common[@]}" SWITCHBOARD_LISTEN="127.0.0.1:$((port++))" "$BIN/$service"
            SERVICE_PIDS[$service]=$LAST_PID
        done
        SB_SERVICES_STARTED=1
        sleep 1
    fi
    local pids=() n port
    for n in 1 2; do
        port=$((2999 + n))
        if [[ -n "${NODE_PIDS[switchboard-$n]:-}" ]] && kill -0 "${NODE_PIDS[switchboard-$n]}" 2>/dev/null; then
            pids+=("${NODE_PIDS[switchboard-$n]}"); continue
        fi
        spawn "gw-$n" "${common[@]}" SWITCHBOARD_LISTEN="127.0.0.1:$port" SWITCHBOARD_NODE_ID="gw-$n" \
            SWITCHBOARD_MEMBERSHIP_URL=http://127.0.0.1:50061 SWITCHBOARD_MESSAGES_URL=http://127.0.0.1:50062 \
            SWITCHBOARD_PRESENCE_URL=http://127.0.0.1:50063 SWITCHBOARD_ADMIN_TOKEN="$ADMIN_TOKEN" \
            SWITCHBOARD_JWT_SECRET="$JWT_SECRET" SWITCHBOARD_SESSION_SECRET=bench-session-secret-0123456789abcdefgh \
            SWITCHBOARD_CHAT_RATE_LIMIT="$RATE_LIMIT" \
            SWITCHBOARD_MAX_CONNECTIONS_PER_ADDRESS=0 SWITCHBOARD_SOCKET_EVENTS_PER_SECOND=1000000 \
            SWITCHBOARD_SOCKET_EVENT_BURST=1000000 "$BIN/gateway"
        NODE_PIDS[switchboard-$n]=$LAST_PID
        pids+=("$LAST_PID")
        wait_http "http://127.0.0.1:$port/readyz"
    done
    URLS[switchboard]="http://127.0.0.1:3000,http://127.0.0.1:3001"
}

# start_node: the Node peer, node-1 :4000 and node-2 :4001 (again after a kill).
start_node() {
    local n port
    for n in 1 2; do
        port=$((3999 + n))
        if [[ -n "${NODE_PIDS[node-$n]:-}" ]] && kill -0 "${NODE_PIDS[node-$n]}" 2>/dev/null; then continue; fi
        spawn "node-$n" env PORT="$port" NODE_ID="node-$n" DATABASE_URL="$DB_URL" REDIS_URL="$REDIS_URL" \
            REDIS_PREFIX="bench-node:" ADMIN_TOKEN="$ADMIN_TOKEN" JWT_SECRET="$JWT_SECRET" \
            RATE_LIMIT="$RATE_LIMIT" node load-tests/node-peer/server.mjs
        NODE_PIDS[node-$n]=$LAST_PID
        wait_http "http://127.0.0.1:$port/healthz"
    done
    URLS[node]="http://127.0.0.1:4000,http://127.0.0.1:4001"
}

# start_bare: the minimum under both systems (load-tests/bare-peer), bare-1 :4100 and bare-2 :4101,
# with Switchboard's worker threads. A reference for the typing and persisted-send scenarios.
start_bare() {
    local n port
    for n in 1 2; do
        port=$((4099 + n))
        if [[ -n "${NODE_PIDS[bare-$n]:-}" ]] && kill -0 "${NODE_PIDS[bare-$n]}" 2>/dev/null; then continue; fi
        local env=(env PORT="$port" REDIS_URL="$REDIS_URL" REDIS_PREFIX="bench-bare:" DATABASE_URL="$DB_URL")
        if [[ "${BENCH_WORKER_THREADS:-1}" != default ]]; then env+=(TOKIO_WORKER_THREADS="${BENCH_WORKER_THREADS:-1}"); fi
        spawn "bare-$n" "${env[@]}" "$BIN/sb-bare-peer"
        NODE_PIDS[bare-$n]=$LAST_PID
        wait_http "http://127.0.0.1:$port/healthz"
    done
    URLS[bare]="http://127.0.0.1:4100,http://127.0.0.1:4101"
}

# restart_nodes SYSTEM: fresh node processes (idle memory is read as RSS growth, and an
# allocator reuses what an earlier scenario freed: only a fresh process shows the real cost).
restart_nodes() {
    local system="$1" n pid
    for n in 1 2; do
        pid="${NODE_PIDS[$system-$n]:-}"
        [[ -n "$pid" ]] || continue
        kill -TERM "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
        unset "NODE_PIDS[$system-$n]"
    done
    "start_$system"
}

# Scenario sizes (BENCH_QUICK=1 shrinks them for a smoke run of the whole pipeline). Typing and
# sends use rooms of 10 on both systems; typing-fanout-100 is the larger-room fan-out. Typing
# rates are events/s (× 9 or × 99 receivers = deliveries/s): 5,000 and 450 make ≈ 45,000/s.
if ((QUICK)); then
    IDLE=1000; ONE_NODE=2000; STORM=1000; FAN=(--clients 200 --room-size 10 --rates 100,400)
    FAN100=(--clients 400 --room-size 100 --rates 10,40)
    SEND=(--clients 200 --room-size 10 --rates 100,400); CHURN=(--clients 200 --room-size 10 --rates 10,20)
    KILL=(--clients 1000 --room-size 10 --rate 100 --kill-after-secs 5 --after-kill-secs 8); STEP=4
else
    IDLE=10000; ONE_NODE=19000; STORM=5000
    FAN=(--clients 1000 --room-size 10 --rates 500,1000,2000,3000,4000,5000,6000,7000,8000,10000,12000,14000)
    FAN100=(--clients 2000 --room-size 100 --rates 50,100,200,300,450,600,700,800,1000)
    SEND=(--clients 1000 --room-size 10 --rates 250,500,1000,1500,2000,2500,3000,4000,5000,6000,8000,10000,12000)
    CHURN=(--clients 1000 --room-size 10 --rates 10,25,50,100,200,400,800)
    KILL=(--clients 10000 --room-size 10 --rate 200 --kill-after-secs 10 --after-kill-secs 20); STEP=8
fi
STEP="${BENCH_STEP_SECS:-$STEP}"

# scenario_args SCENARIO -> the sb-load arguments beyond the cluster's.
# Idle memory is read 25 s after the last connect: an allocator returns the memory freed after the
# handshakes over seconds (jemalloc's decay is 10 s), and a 5 s settle read 23.5-32.7 KB per
# connection where 25 s read 23.1-23.6 (docs/benchmarks/README.md §10).
scenario_args() {
    case "$1" in
        idle) echo "--scenario idle --clients $IDLE --room-size 10 --settle-secs 25" ;;
        idle-one-node) echo "--scenario idle --label idle-one-node --clients $ONE_NODE --room-size 10 --settle-secs 25" ;;
        connect-storm) echo "--scenario connect-storm --clients $STORM --room-size 10 --concurrency 1000" ;;
        typing-fanout) echo "--scenario typing-fanout ${FAN[*]} --step-secs $STEP" ;;
        typing-fanout-100) echo "--scenario typing-fanout --label typing-fanout-100 ${FAN100[*]} --step-secs $STEP" ;;
        persisted-send) echo "--scenario persisted-send ${SEND[*]} --step-secs $STEP" ;;
        presence-churn) echo "--scenario presence-churn ${CHURN[*]} --step-secs $STEP" ;;
        node-kill) echo "--scenario node-kill ${KILL[*]}" ;;
        *) die "unknown scenario $1" ;;
    esac
}

# watch_args SYSTEM -> sb-load's --watch groups: the system's processes, Postgres, Redis.
watch_args() {
    if [[ "$1" == switchboard ]]; then
        echo "--watch gateways=${NODE_PIDS[switchboard-1]}+${NODE_PIDS[switchboard-2]}"
        local s
        for s in membership messages presence; do echo "--watch $s=${SERVICE_PIDS[$s]}"; done
    else
        echo "--watch $1=${NODE_PIDS[$1-1]}+${NODE_PIDS[$1-2]}"
    fi
    echo "--watch postgres=comm:postgres --watch redis=comm:redis-server"
}

# run_one SYSTEM SCENARIO REPEAT
run_one() {
    local system="$1" scenario="$2" repeat="$3" urls pids names
    if [[ "$scenario" == idle* ]]; then restart_nodes "$system"; else "start_$system"; fi
    urls="${URLS[$system]}"
    pids="${NODE_PIDS[$system-1]},${NODE_PIDS[$system-2]}"
    names="$system-1,$system-2"
    if [[ "$scenario" == idle-one-node ]]; then
        urls="${urls%%,*}"; pids="${pids%%,*}"; names="${names%%,*}"
    fi
    log "== $system / $scenario / repeat $repeat"
    # shellcheck disable=SC2046
    "$BIN/sb-load" --system "$system" --urls "$urls" --pids "$pids" --names "$names" \
        --admin-token "$ADMIN_TOKEN" --out "$RAW" --repeat "$repeat" $(scenario_args "$scenario") $(watch_args "$system") \
        2>&1 | tee -a "$LOGS/sb-load.log"
    # Let sockets close and servers settle before the next system.
    sleep 3
}

if [[ -n "${BENCH_SERVE_ONLY:-}" ]]; then
    # For profiling: both clusters up, pids printed, until Ctrl-C.
    for system in $SYSTEMS; do
        "start_$system"
        log "$system: ${URLS[$system]} pids ${NODE_PIDS[$system-1]},${NODE_PIDS[$system-2]}"
    done
    log "serving until interrupted (sb-load --admin-token $ADMIN_TOKEN ...)"
    while sleep 3600; do :; done
fi

# This machine's Postgres runs with autovacuum off (CI settings), so nothing analyzes the tables
# the scenarios fill: planned without statistics, both systems' membership queries scanned the
# whole memberships table (Postgres used 12-13 s of CPU per 10 s typing step after the idle
# scenario's disconnects). An ANALYZE every 10 s stands in for autovacuum's.
(while sleep 10; do psql "$DB_URL" -qc ANALYZE >/dev/null 2>&1; done) &
PIDS+=("$!")

log "3/4 scenarios: $SCENARIOS × ($SYSTEMS), $REPEATS repeats where it pays"
# Only the scenarios run now are replaced: a partial run (BENCH_SCENARIOS=...) keeps the others.
for scenario in $SCENARIOS; do
    for system in $SYSTEMS; do find "$RAW" -regex ".*/$system-$scenario-[0-9]+\.json" -delete; done
done
for scenario in $SCENARIOS; do
    repeats="$REPEATS"
    [[ "$scenario" == node-kill || "$scenario" == idle-one-node ]] && repeats=1
    for ((r = 0; r < repeats; r++)); do
        order="$SYSTEMS"
        if ((r % 2 == 1)); then order="$(echo "$SYSTEMS" | tr ' ' '\n' | tac | tr '\n' ' ')"; fi
        for system in $order; do
            # The bare peer serves typing and sends only.
            [[ "$system" == bare && "$scenario" != typing-fanout* && "$scenario" != persisted-send ]] && continue
            run_one "$system" "$scenario" "$r"
        done
    done
done

log "4/4 report"
SB_WORKERS="${BENCH_WORKER_THREADS:-1}" python3 - "$RAW/machine.json" <<'PY'
import json, os, platform, subprocess, sys, datetime
def sh(c):
    try: return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception: return ""
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
mem = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))) / 1e6
json.dump({"cpu_model": cpu, "cores": os.cpu_count(), "mem_gb": round(mem, 1), "kernel": platform.release(),
           "os": sh(". /etc/os-release && echo $PRETTY_NAME"), "rustc": sh("rustc --version"),
           "node": sh("node --version"), "postgres": sh("psql --version"), "redis": sh("redis-server --version"),
           "fd_limit": sh("ulimit -Hn"),
           "switchboard_tokio_workers_per_process": os.environ["SB_WORKERS"], "date": datetime.datetime.utcnow().isoformat() + "Z"},
          open(sys.argv[1], "w"), indent=2)
PY
"$VENV/bin/python" load-tests/report/report.py --raw "$RAW" --out "$OUT"
log "done: $OUT/results.md"
