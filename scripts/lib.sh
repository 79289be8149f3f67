# shellcheck shell=bash
# Helpers shared by the dev-cluster scripts. Source it; do not run it.

SB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Everything the scripts create (data folders, logs, pid files) lives here; git ignores it.
SB_LOCAL="${SWITCHBOARD_LOCAL_DIR:-$SB_ROOT/.local}"
# The Postgres server the scripts use (and the database their own databases are created from).
SB_DATABASE_URL="${SWITCHBOARD_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"

# sb_database_url NAME -> the URL of database NAME on SB_DATABASE_URL's server.
sb_database_url() { printf '%s/%s' "${SB_DATABASE_URL%/*}" "$1"; }

# Logging never fails the script: after Ctrl-C, a `| tee` reading our output may be gone.
log()  { printf '[%s] %s\n' "${SB_SCRIPT:-switchboard}" "$*" >&2 2>/dev/null || true; }
warn() { printf '[%s] WARNING: %s\n' "${SB_SCRIPT:-switchboard}" "$*" >&2 2>/dev/null || true; }
die()  { printf '[%s] ERROR: %s\n' "${SB_SCRIPT:-switchboard}" "$*" >&2; exit 1; }

# parse_url URL -> sets URL_SCHEME URL_USER URL_PASSWORD URL_HOST URL_PORT URL_PATH
# Handles scheme://[user[:password]@]host[:port][/path][?query]; IPv6 hosts in [brackets].
# shellcheck disable=SC2034  # the URL_* variables are for the scripts that source this file
parse_url() {
    local url="$1" rest authority creds hostport
    URL_SCHEME="${url%%://*}"
    rest="${url#*://}"
    rest="${rest%%\?*}"
    authority="${rest%%/*}"
    if [[ "$rest" == */* ]]; then URL_PATH="${rest#*/}"; else URL_PATH=""; fi
    URL_USER=""; URL_PASSWORD=""
    if [[ "$authority" == *@* ]]; then
        creds="${authority%@*}"
        hostport="${authority##*@}"
        URL_USER="${creds%%:*}"
        if [[ "$creds" == *:* ]]; then URL_PASSWORD="${creds#*:}"; fi
    else
        hostport="$authority"
    fi
    if [[ "$hostport" == \[* ]]; then            # [::1]:5432
        URL_HOST="${hostport%%]*}"; URL_HOST="${URL_HOST#[}"
        hostport="${hostport#*]}"
        URL_PORT="${hostport#:}"
    elif [[ "$hostport" == *:* ]]; then
        URL_HOST="${hostport%%:*}"
        URL_PORT="${hostport##*:}"
    else
        URL_HOST="$hostport"; URL_PORT=""
    fi
}

is_local_host() {
    case "$1" in 127.*|localhost|::1|"") return 0 ;; *) return 1 ;; esac
}

# tcp_open HOST PORT: true when something accepts TCP connections there.
tcp_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# wait_for TIMEOUT_SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.5 s.
wait_for() {
    local timeout="$1" what="$2"; shift 2
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            warn "timed out after ${timeout}s waiting for $what"
            return 1
        fi
        sleep 0.5
    done
}

is_root() { [[ "$(id -u)" == 0 ]]; }

# as_user USER COMMAND...: runs COMMAND as USER (we are root).
as_user() {
    local user="$1"; shift
    if command -v runuser >/dev/null 2>&1; then
        runuser -u "$user" -- "$@"
    else
        su "$user" -s /bin/sh -c "$(printf '%q ' "$@")"
    fi
}

# record_started KIND ID LINE: remembers a server this script started so that run-cluster.sh
# (via $ENSURE_STARTED_LOG) and stop-local.sh can stop it again.
record_started() {
    local kind="$1" id="$2" line="$3"
    mkdir -p "$SB_LOCAL/started"
    printf '%s\n' "$line" >"$SB_LOCAL/started/$kind-$id"
    if [[ -n "${ENSURE_STARTED_LOG:-}" ]]; then
        printf '%s-%s\n' "$kind" "$id" >>"$ENSURE_STARTED_LOG"
    fi
}
