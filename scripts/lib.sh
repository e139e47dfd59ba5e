# shellcheck shell=bash
# Shared helpers for scripts/test, scripts/lint, scripts/run and .ci/run. Source it, do not run it.
#
# Everything this installs or starts lives under .ci-cache/ (gitignored): the OPA binary, the npm
# install of buf, and the throwaway PostgreSQL/Redis data of a test run.

INNOMINATUS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="$INNOMINATUS_ROOT/.ci-cache"
VENV_DIR="$INNOMINATUS_ROOT/.venv"

OPA_VERSION="1.22.3"
BUF_VERSION="1.75.0"

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }

# ensure_venv [SPEC]: create .venv if missing and install the project into it (editable).
ensure_venv() {
    local spec="${1:-.}"
    if [ ! -x "$VENV_DIR/bin/python" ]; then
        log "creating $VENV_DIR"
        python3 -m venv "$VENV_DIR" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    fi
    log "pip install -e '$spec'"
    (cd "$INNOMINATUS_ROOT" && "$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec") \
        || die "pip install -e '$spec' failed"
}

# ensure_opa: set INNOMINATUS_OPA_BIN to an opa v$OPA_VERSION, installing it into .ci-cache/bin if needed.
# An opa already on PATH is used only when it is that exact version, so lint and tests behave the
# same on every machine.
ensure_opa() {
    local cached="$CACHE_DIR/bin/opa" candidate
    for candidate in "${INNOMINATUS_OPA_BIN:-}" "$(command -v opa || true)" "$cached"; do
        [ -n "$candidate" ] && [ -x "$candidate" ] || continue
        # Compare captured output: `opa version | grep -q` can SIGPIPE opa and fail under pipefail.
        if [ "$("$candidate" version 2>/dev/null | head -n1)" = "Version: $OPA_VERSION" ]; then
            export INNOMINATUS_OPA_BIN="$candidate"
            log "opa: $candidate (v$OPA_VERSION)"
            return 0
        fi
        log "opa: ignoring $candidate (not v$OPA_VERSION)"
    done
    command -v go >/dev/null || die "opa v$OPA_VERSION is missing and go is not installed to build it"
    log "installing opa v$OPA_VERSION into $CACHE_DIR/bin (go install)"
    mkdir -p "$CACHE_DIR/bin"
    GOBIN="$CACHE_DIR/bin" go install "github.com/open-policy-agent/opa@v$OPA_VERSION" \
        || die "go install github.com/open-policy-agent/opa@v$OPA_VERSION failed"
    export INNOMINATUS_OPA_BIN="$cached"
    log "opa: $("$cached" version | head -n1)"
}

# ensure_buf: set BUF_BIN to buf v$BUF_VERSION (npm package @bufbuild/buf, installed into .ci-cache/npm).
ensure_buf() {
    local cached="$CACHE_DIR/npm/node_modules/.bin/buf" candidate
    for candidate in "$(command -v buf || true)" "$cached"; do
        [ -n "$candidate" ] && [ -x "$candidate" ] || continue
        if [ "$("$candidate" --version 2>/dev/null)" = "$BUF_VERSION" ]; then
            BUF_BIN="$candidate"
            log "buf: $candidate (v$BUF_VERSION)"
            return 0
        fi
        log "buf: ignoring $candidate (not v$BUF_VERSION)"
    done
    command -v npm >/dev/null || die "buf v$BUF_VERSION is missing and npm is not installed to fetch it"
    log "installing @bufbuild/buf@$BUF_VERSION into $CACHE_DIR/npm"
    mkdir -p "$CACHE_DIR/npm"
    npm install --prefix "$CACHE_DIR/npm" --no-audit --no-fund --loglevel=error "@bufbuild/buf@$BUF_VERSION" >&2 \
        || die "npm install @bufbuild/buf@$BUF_VERSION failed"
    BUF_BIN="$cached"
    log "buf: $("$BUF_BIN" --version)"
}

# pg_bindir: print the directory holding initdb/pg_ctl (newest /usr/lib/postgresql/<ver>/bin on Debian).
pg_bindir() {
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4,4 -n | tail -n1)"
    if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
        echo "$dir"
    elif command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir
    elif command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
        dirname "$(command -v initdb)"
    fi
}

# ensure_servers_installed: PostgreSQL and Redis server binaries, from apt when running as root.
ensure_servers_installed() {
    local missing=()
    [ -n "$(pg_bindir)" ] || missing+=(postgresql)
    command -v redis-server >/dev/null || missing+=(redis-server)
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! is_root; then
        die "missing ${missing[*]}: install the PostgreSQL server (initdb, pg_ctl) and redis-server" \
            "(Debian/Ubuntu: sudo apt-get install -y postgresql redis-server), then re-run"
    fi
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
    [ -n "$(pg_bindir)" ] || die "postgresql installed but initdb/pg_ctl not found"
    command -v redis-server >/dev/null || die "redis-server installed but not on PATH"
}

# free_port START: print the first TCP port >= START that nothing listens on at 127.0.0.1.
free_port() {
    python3 - "$1" <<'EOF'
import socket, sys
start = int(sys.argv[1])
for port in range(start, start + 200):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        break
else:
    sys.exit(f"no free port in {start}..{start + 199}")
EOF
}

# as_pg_owner CMD...: run as the OS user that owns the throwaway cluster (postgres when we are root).
# As root it runs from / (the postgres user may not be allowed into the current directory).
as_pg_owner() {
    if is_root && command -v runuser >/dev/null; then
        (cd / && runuser -u postgres -- "$@")
    elif is_root; then
        (cd / && su postgres -s /bin/sh -c "$(printf '%q ' "$@")")
    else
        "$@"
    fi
}

PG_RUN_DIR=""
PG_BIN=""
REDIS_PID=""
REDIS_RUN_DIR=""

# start_postgres: initdb a fresh cluster for this run, start it on 127.0.0.1 and create
# innominatus_test; exports INNOMINATUS_TEST_DATABASE_URL. Stopped by stop_services.
start_postgres() {
    PG_BIN="$(pg_bindir)"
    [ -n "$PG_BIN" ] || die "PostgreSQL server binaries not found"
    local base="$CACHE_DIR/pg" port
    mkdir -p "$base"
    # Each run gets its own data directory, so concurrent runs in one tree do not collide.
    PG_RUN_DIR="$base/run.$$"
    rm -rf "$PG_RUN_DIR"
    mkdir -p "$PG_RUN_DIR"
    if is_root; then
        id postgres >/dev/null 2>&1 || die "running as root but there is no postgres OS user to own the cluster"
        chown postgres: "$PG_RUN_DIR"
        # initdb refuses to run as root; the postgres user must be able to reach the directory.
        if ! as_pg_owner test -w "$PG_RUN_DIR"; then
            rm -rf "$PG_RUN_DIR"
            PG_RUN_DIR="$(mktemp -d /tmp/innominatus-pg.XXXXXX)"
            chown postgres: "$PG_RUN_DIR"
            log "postgres cannot reach $base; using $PG_RUN_DIR instead"
        fi
    fi
    log "initdb $PG_RUN_DIR/data"
    as_pg_owner "$PG_BIN/initdb" -D "$PG_RUN_DIR/data" -U postgres --auth=trust --encoding=UTF8 --no-locale \
        >"$PG_RUN_DIR/initdb.log" 2>&1 || { cat "$PG_RUN_DIR/initdb.log" >&2; die "initdb failed"; }
    # Runs started at the same moment may pick the same free port (it is free until one of them
    # binds it): the search starts at an offset from this run's PID, and a lost race is retried.
    local attempt started=""
    for attempt in 1 2 3; do
        port="$(free_port $((55432 + ($$ + attempt * 37) % 400)))" || die "no free port for PostgreSQL"
        log "starting PostgreSQL on 127.0.0.1:$port"
        # No unix socket: everything talks TCP to loopback, where initdb set trust auth.
        if as_pg_owner "$PG_BIN/pg_ctl" -D "$PG_RUN_DIR/data" -l "$PG_RUN_DIR/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
            start >/dev/null; then
            started=1
            break
        fi
        log "PostgreSQL did not start on port $port (attempt $attempt)"
    done
    [ -n "$started" ] || { cat "$PG_RUN_DIR/server.log" >&2; die "PostgreSQL did not start"; }
    "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres innominatus_test || die "createdb innominatus_test failed"
    export INNOMINATUS_TEST_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:$port/innominatus_test"
    log "INNOMINATUS_TEST_DATABASE_URL=$INNOMINATUS_TEST_DATABASE_URL"
}

# redis_ping PORT: true when a Redis on 127.0.0.1:PORT answers PING with +PONG.
redis_ping() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf 'PING\r\n' >&3
        read -r -t 2 reply <&3 || exit 1
        [ "${reply%$'\r'}" = "+PONG" ]
    ) 2>/dev/null
}

# start_redis: a throwaway redis-server on 127.0.0.1 without persistence; exports INNOMINATUS_TEST_REDIS_URL.
start_redis() {
    local port i
    REDIS_RUN_DIR="$CACHE_DIR/redis/run.$$"
    rm -rf "$REDIS_RUN_DIR"
    mkdir -p "$REDIS_RUN_DIR"
    port="$(free_port $((56379 + $$ % 400)))" || die "no free port for Redis"  # offset: see start_postgres
    log "starting redis-server on 127.0.0.1:$port"
    redis-server --bind 127.0.0.1 --port "$port" --daemonize no --save '' --appendonly no \
        --dir "$REDIS_RUN_DIR" --logfile "$REDIS_RUN_DIR/redis.log" &
    REDIS_PID=$!
    echo "$REDIS_PID" >"$REDIS_RUN_DIR/redis.pid"
    for i in $(seq 1 100); do
        redis_ping "$port" && break
        kill -0 "$REDIS_PID" 2>/dev/null || { cat "$REDIS_RUN_DIR/redis.log" >&2; die "redis-server exited"; }
        sleep 0.1
    done
    redis_ping "$port" || { cat "$REDIS_RUN_DIR/redis.log" >&2; die "redis-server does not answer PING"; }
    export INNOMINATUS_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
    log "INNOMINATUS_TEST_REDIS_URL=$INNOMINATUS_TEST_REDIS_URL"
}

# stop_services: stop whatever start_postgres/start_redis started and remove their data. Safe to call twice.
stop_services() {
    if [ -n "$REDIS_PID" ]; then
        kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
        REDIS_PID=""
    fi
    [ -n "$REDIS_RUN_DIR" ] && rm -rf "$REDIS_RUN_DIR"
    REDIS_RUN_DIR=""
    if [ -n "$PG_RUN_DIR" ]; then
        if [ -f "$PG_RUN_DIR/data/postmaster.pid" ]; then
            as_pg_owner "$PG_BIN/pg_ctl" -D "$PG_RUN_DIR/data" -m fast -w -t 30 stop >/dev/null 2>&1 \
                || as_pg_owner "$PG_BIN/pg_ctl" -D "$PG_RUN_DIR/data" -m immediate stop >/dev/null 2>&1 || true
        fi
        rm -rf "$PG_RUN_DIR"
        PG_RUN_DIR=""
    fi
    return 0
}

# reap_stale_runs: stop and remove the servers of earlier runs that died without cleaning up.
reap_stale_runs() {
    local dir pid
    for dir in "$CACHE_DIR"/pg/run.* "$CACHE_DIR"/redis/run.*; do
        [ -d "$dir" ] || continue
        pid="${dir##*.}"
        kill -0 "$pid" 2>/dev/null && continue
        if [ -f "$dir/data/postmaster.pid" ]; then
            as_pg_owner "$(pg_bindir)/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
        fi
        if [ -f "$dir/redis.pid" ]; then
            pid="$(cat "$dir/redis.pid")"
            [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = redis-server ] && kill "$pid" 2>/dev/null
        fi
        log "removing stale $dir"
        rm -rf "$dir"
    done
}
