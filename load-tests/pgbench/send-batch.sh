#!/usr/bin/env bash
# What one stored message costs Postgres, schema by schema: pgbench runs the messages service's
# batched send statement (store.rs `try_send_batch`: 5 messages to 5 random rooms of 250, with
# their outbox entries) against databases migrated up to each migration in turn, interleaved
# and repeated. Reports machine CPU (pgbench's own included, the same in every variant) per
# stored message and the steal of each round, read from /proc/stat.
#
#   load-tests/pgbench/send-batch.sh            # PGBENCH_ROUNDS=3 PGBENCH_SECS=20 PGBENCH_CLIENTS=2
#
# Needs psql and pgbench (PostgreSQL client tools) and a server at SWITCHBOARD_DATABASE_URL's
# host; creates and drops databases sb_pgbench_<n>.
set -euo pipefail
SB_SCRIPT=pgbench
# shellcheck source=../../scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
cd "$SB_ROOT"

ROUNDS="${PGBENCH_ROUNDS:-3}"
SECS="${PGBENCH_SECS:-20}"
CLIENTS="${PGBENCH_CLIENTS:-2}"
PREFILL="${PGBENCH_PREFILL:-200000}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

mapfile -t MIGRATIONS < <(ls migrations/*.sql)
DBS=()
for ((n = 1; n <= ${#MIGRATIONS[@]}; n++)); do
    db="sb_pgbench_$n"
    url="$(sb_database_url "$db")"
    psql "$SB_DATABASE_URL" -q -c "SET client_min_messages = warning" \
        -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
    for m in "${MIGRATIONS[@]:0:n}"; do psql "$url" -q -v ON_ERROR_STOP=1 -f "$m" >/dev/null; done
    # 250 rooms and a history of PREFILL messages, so the indexes are not toy-sized.
    psql "$url" -q -v ON_ERROR_STOP=1 <<SQL
INSERT INTO rooms (kind, id) SELECT 'chat', 'r' || g FROM generate_series(1, 250) g;
INSERT INTO messages (room_kind, room_id, seq, sender_id, type, content, client_id)
    SELECT 'chat', 'r' || (g % 250 + 1), g / 250 + 1, 'u' || (g % 1000), 'text',
           'prefilled message ' || g, 'c' || g
    FROM generate_series(0, $PREFILL - 1) g;
UPDATE rooms r SET last_seq = (SELECT max(seq) FROM messages m WHERE m.room_id = r.id);
VACUUM ANALYZE;
SQL
    DBS+=("$db")
    log "$db: ${MIGRATIONS[n - 1]##*/} and the ones before it"
done

# The statement as the messages service sends it (unnest of six arrays), for 5 rooms drawn at
# random: distinct within a batch, as the batcher routes a room's sends to one batch.
cat >"$WORK/send.sql" <<'SQL'
\set r1 random(1, 50)
\set r2 random(51, 100)
\set r3 random(101, 150)
\set r4 random(151, 200)
\set r5 random(201, 250)
WITH fresh AS (
    SELECT i.*, row_number() OVER (PARTITION BY i.room_kind, i.room_id ORDER BY i.ord) AS n
    FROM unnest(ARRAY['chat','chat','chat','chat','chat'],
                ARRAY['r' || :r1, 'r' || :r2, 'r' || :r3, 'r' || :r4, 'r' || :r5],
                ARRAY['u1','u2','u3','u4','u5'], ARRAY['text','text','text','text','text'],
                ARRAY['hello','hello','hello','hello','hello'],
                ARRAY[md5(random()::text), md5(random()::text), md5(random()::text),
                      md5(random()::text), md5(random()::text)])
        WITH ORDINALITY AS i(room_kind, room_id, sender_id, type, content, client_id, ord)
), counts AS (
    SELECT room_kind, room_id, count(*) AS n FROM fresh GROUP BY room_kind, room_id
), seqs AS (
    UPDATE rooms r SET last_seq = r.last_seq + c.n FROM counts c
    WHERE r.kind = c.room_kind AND r.id = c.room_id
    RETURNING r.kind, r.id, r.last_seq - c.n AS base
), inserted AS (
    INSERT INTO messages (room_kind, room_id, seq, sender_id, type, content, client_id)
    SELECT f.room_kind, f.room_id, s.base + f.n, f.sender_id, f.type, f.content, f.client_id
    FROM fresh f JOIN seqs s ON s.kind = f.room_kind AND s.id = f.room_id
    ORDER BY f.ord
    RETURNING *
), outboxed AS (
    INSERT INTO outbox (message_id, event) SELECT id, 'new' FROM inserted ORDER BY id
    RETURNING id, message_id
)
SELECT o.id, m.id, m.seq FROM inserted m JOIN outboxed o ON o.message_id = m.id;
SQL

# cpu_ticks -> "busy steal" jiffies of the whole machine.
cpu_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8, $9}' /proc/stat; }
hz=$(getconf CLK_TCK)

printf '%-16s %6s %10s %12s %8s\n' database round msgs/s 'busy µs/msg' steal%
for ((round = 1; round <= ROUNDS; round++)); do
    # Alternate the order so drift (table growth, neighbours) favours no variant.
    order=("${DBS[@]}")
    if ((round % 2 == 0)); then mapfile -t order < <(printf '%s\n' "${DBS[@]}" | tac); fi
    for db in "${order[@]}"; do
        read -r busy0 steal0 < <(cpu_ticks)
        tps=$(pgbench -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "$SECS" -f "$WORK/send.sql" \
            "$(sb_database_url "$db")" 2>/dev/null | awk '/^tps/{print $3}')
        read -r busy1 steal1 < <(cpu_ticks)
        awk -v db="$db" -v r="$round" -v tps="$tps" -v busy=$((busy1 - busy0)) \
            -v steal=$((steal1 - steal0)) -v hz="$hz" -v secs="$SECS" -v cpus="$(nproc)" '
            BEGIN {
                msgs = tps * 5
                printf "%-16s %6d %10.0f %12.0f %8.1f\n", db, r, msgs,
                    busy / hz * 1e6 / (msgs * secs), 100 * steal / hz / (secs * cpus)
            }'
    done
done
for db in "${DBS[@]}"; do psql "$SB_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"; done
