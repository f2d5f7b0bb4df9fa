# Sourced by scripts/test. Starts the external services the tests need as private instances
# (random free ports, data under one temp dir) and exports their URLs:
#
#   STAMPEDE_TEST_REDIS_URL           redis://127.0.0.1:PORT/         standalone Redis
#   STAMPEDE_TEST_REDIS_SERVER        path of redis-server            for tests that run their own
#   STAMPEDE_TEST_REDIS_CLUSTER_URLS  redis://127.0.0.1:P1/,...,P3/   3 masters, no replicas
#   STAMPEDE_TEST_POSTGRES_URL        postgres://postgres@127.0.0.1:PORT/postgres   (superuser)
#   STAMPEDE_TEST_PG_BIN              /usr/lib/postgresql/N/bin       initdb, pg_ctl, postgres
#
# A service whose URL is already set in the environment is used as is and nothing is started
# (or installed) for it. Servers already running on the standard ports (6379, 5432) are never
# used: the tests must neither touch somebody's real data nor depend on it.
# Everything started here is stopped and deleted on exit, including failure and Ctrl-C.

need_pkg() {
    # need_pkg COMMAND PACKAGE: installs PACKAGE from Debian when COMMAND is missing.
    command -v "$1" >/dev/null 2>&1 && return 0
    install_pkg "$2" "$1"
}

install_pkg() {
    # install_pkg PACKAGE [WHAT]: installs a Debian package, as root or with sudo.
    echo "scripts/test: installing $1${2:+ (for $2)}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

# State shared with the cleanup trap.
_svc_tmp=""        # temp dir holding every data dir, socket and log
_svc_redis_pids=() # redis-server processes started here (children of this shell)
_svc_pg_data=""    # postgres data dir, set once a server may be running
_svc_pg_bin=""
_svc_port=""       # port of the service started last

_svc_die() {
    echo "scripts/test: $*" >&2
    exit 1 # the EXIT trap cleans up whatever was started so far
}

_svc_is_root() { [ "$(id -u)" -eq 0 ]; }

_svc_as_pg() {
    # initdb and postgres refuse to run as root, so as root they run as the postgres user.
    if _svc_is_root; then runuser -u postgres -- "$@"; else "$@"; fi
}

_svc_port_listening() {
    # True when something accepts connections on 127.0.0.1:$1. Pure bash (no python or ss on
    # a minimal Debian); on loopback a closed port refuses at once.
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

_svc_pick_port() {
    # Prints a port in 20000-49999 with nothing listening on it nor on port+10000 (the Redis
    # Cluster bus port). Another process may still take it before we bind, e.g. a parallel
    # run of this script, so every start below retries with a fresh port when binding fails.
    local port _
    for _ in $(seq 100); do
        port=$(((RANDOM * 32768 + RANDOM) % 30000 + 20000))
        if ! _svc_port_listening "$port" && ! _svc_port_listening $((port + 10000)); then
            echo "$port"
            return 0
        fi
    done
    return 1
}

_svc_start_redis() {
    # _svc_start_redis DIR [EXTRA ARGS...]: starts redis-server on a free port with its data in
    # DIR, waits until it answers, sets _svc_port. AOF with fsync always: crash tests kill -9
    # it and expect every acknowledged write back.
    local dir=$1 log=$1/redis.log port pid attempt _
    shift
    mkdir -p "$dir"
    for attempt in 1 2 3 4 5; do
        port=$(_svc_pick_port) || _svc_die "no free port found for redis"
        redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" \
            --appendonly yes --appendfsync always --save "" --daemonize no "$@" \
            </dev/null >>"$log" 2>&1 &
        pid=$!
        _svc_redis_pids+=("$pid")
        for _ in $(seq 100); do # 10 s
            # Match the pid, not just PONG: if a parallel run took the port first, its Redis
            # answers while ours has died of "Address already in use".
            if redis-cli -p "$port" info server 2>/dev/null | tr -d '\r' | grep -qx "process_id:$pid"; then
                _svc_port=$port
                return 0
            fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$log" >&2
            _svc_die "redis-server in $dir did not answer on port $port within 10 s"
        fi
        wait "$pid" 2>/dev/null || true # died, most likely the port was taken: try another
    done
    tail -n 20 "$log" >&2
    _svc_die "redis-server in $dir failed to start $attempt times"
}

_svc_start_redis_cluster() {
    local dir=$_svc_tmp/cluster ports=() n port state ok _
    for n in 1 2 3; do
        _svc_start_redis "$dir/$n" --cluster-enabled yes --cluster-config-file "$dir/$n/nodes.conf" \
            --cluster-node-timeout 2000
        ports+=("$_svc_port")
    done
    redis-cli --cluster create "127.0.0.1:${ports[0]}" "127.0.0.1:${ports[1]}" "127.0.0.1:${ports[2]}" \
        --cluster-replicas 0 --cluster-yes >"$dir/create.log" 2>&1 ||
        { cat "$dir/create.log" >&2; _svc_die "redis-cli --cluster create failed"; }
    # Every node must agree the slots are covered, or the first requests get CLUSTERDOWN.
    for _ in $(seq 200); do # 20 s
        ok=1
        for port in "${ports[@]}"; do
            state=$(redis-cli -p "$port" cluster info 2>/dev/null | tr -d '\r' | grep '^cluster_state:' || true)
            [ "$state" = "cluster_state:ok" ] || ok=0
        done
        [ "$ok" -eq 1 ] && break
        sleep 0.1
    done
    [ "$ok" -eq 1 ] || _svc_die "redis cluster on ports ${ports[*]} did not reach cluster_state:ok within 20 s"
    export STAMPEDE_TEST_REDIS_CLUSTER_URLS="redis://127.0.0.1:${ports[0]}/,redis://127.0.0.1:${ports[1]}/,redis://127.0.0.1:${ports[2]}/"
    echo "scripts/test: redis cluster on 127.0.0.1:${ports[0]},${ports[1]},${ports[2]}" >&2
}

_svc_find_pg_bin() {
    # Prints the bin dir of the highest PostgreSQL installed the Debian way, if any.
    local initdb
    initdb=$(printf '%s\n' /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)
    [ -x "$initdb" ] && dirname "$initdb"
}

_svc_start_postgres() {
    local dir=$_svc_tmp/pg bin=$_svc_pg_bin port attempt
    local data=$dir/data sock=$dir/sock log=$dir/postgres.log
    mkdir -p "$sock"
    _svc_is_root && chown -R postgres: "$dir"
    # C.UTF-8 is built into Debian's glibc; plain C is the fallback where it is not.
    if ! _svc_as_pg "$bin/initdb" -D "$data" -A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8 \
        >"$_svc_tmp/initdb.log" 2>&1; then
        rm -rf "$data"
        _svc_as_pg "$bin/initdb" -D "$data" -A trust -U postgres --no-sync -E UTF8 --locale=C \
            >"$_svc_tmp/initdb.log" 2>&1 ||
            { cat "$_svc_tmp/initdb.log" >&2; _svc_die "initdb failed"; }
    fi
    _svc_pg_data=$data
    for attempt in 1 2 3 4 5; do
        port=$(_svc_pick_port) || _svc_die "no free port found for postgres"
        rm -f "$log" # recreated by the server, so it stays writable by the postgres user
        # The socket goes to our own dir, so nothing clashes with a system server's socket in
        # /var/run/postgresql. fsync stays on: crash tests rely on durable commits.
        if _svc_as_pg "$bin/pg_ctl" -D "$data" -l "$log" -w \
            -o "-p $port -k '$sock' -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=300 -c shared_buffers=64MB" \
            start >/dev/null 2>&1; then
            export STAMPEDE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
            echo "scripts/test: postgres $(basename "$(dirname "$bin")") on 127.0.0.1:$port" >&2
            return 0
        fi
        grep -q "already in use" "$log" 2>/dev/null || break # only a taken port is worth a retry
    done
    tail -n 20 "$log" >&2 2>/dev/null || true
    _svc_die "postgres failed to start (attempt $attempt)"
}

stop_test_services() {
    # EXIT trap: stops what start_test_services started, removes its files, keeps the status.
    local rc=$? pid _
    trap - EXIT INT TERM
    if [ -n "$_svc_pg_data" ] && [ -f "$_svc_pg_data/postmaster.pid" ]; then
        _svc_as_pg "$_svc_pg_bin/pg_ctl" -D "$_svc_pg_data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    # TERM, not KILL: Redis then also kills a forked AOF-rewrite child, which KILL would orphan.
    for pid in "${_svc_redis_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${_svc_redis_pids[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    [ -z "$_svc_tmp" ] || rm -rf "$_svc_tmp"
    exit "$rc"
}

start_test_services() {
    local want_redis=0 want_cluster=0 want_pg=0 base
    [ -n "${STAMPEDE_TEST_REDIS_URL:-}" ] || want_redis=1
    [ -n "${STAMPEDE_TEST_REDIS_CLUSTER_URLS:-}" ] || want_cluster=1
    [ -n "${STAMPEDE_TEST_POSTGRES_URL:-}" ] || want_pg=1

    # Packages first: a Debian install may start a system server on the standard port, which
    # is fine, we never use it.
    if [ $((want_redis + want_cluster)) -gt 0 ]; then
        need_pkg redis-server redis-server
        need_pkg redis-cli redis-tools
    fi
    if [ "$want_pg" -eq 1 ]; then
        _svc_pg_bin=$(_svc_find_pg_bin) || { install_pkg postgresql initdb && _svc_pg_bin=$(_svc_find_pg_bin); } ||
            _svc_die "no /usr/lib/postgresql/*/bin/initdb after installing postgresql"
        if _svc_is_root && ! id -u postgres >/dev/null 2>&1; then
            useradd --system --no-create-home --shell /usr/sbin/nologin postgres ||
                _svc_die "cannot create the postgres user"
        fi
    fi

    # Tests that run their own server processes need the binaries even when the URLs are given.
    if [ -z "${STAMPEDE_TEST_REDIS_SERVER:-}" ] && command -v redis-server >/dev/null 2>&1; then
        export STAMPEDE_TEST_REDIS_SERVER
        STAMPEDE_TEST_REDIS_SERVER=$(command -v redis-server)
    fi
    if [ -z "${STAMPEDE_TEST_PG_BIN:-}" ]; then
        [ -n "$_svc_pg_bin" ] || _svc_pg_bin=$(_svc_find_pg_bin) || true
        [ -z "$_svc_pg_bin" ] || export STAMPEDE_TEST_PG_BIN=$_svc_pg_bin
    fi

    [ $((want_redis + want_cluster + want_pg)) -gt 0 ] || return 0

    trap stop_test_services EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    # The postgres user must reach its data dir: mktemp makes a 0700 dir, opened up to 0755
    # below; a private $TMPDIR such as /root/tmp would still block it, so use /tmp then.
    base=${TMPDIR:-/tmp}
    if [ "$want_pg" -eq 1 ] && _svc_is_root && ! runuser -u postgres -- test -x "$base"; then
        base=/tmp
    fi
    _svc_tmp=$(mktemp -d "$base/stampede-test.XXXXXX") || _svc_die "mktemp failed in $base"
    chmod 755 "$_svc_tmp"

    if [ "$want_redis" -eq 1 ]; then
        _svc_start_redis "$_svc_tmp/redis"
        export STAMPEDE_TEST_REDIS_URL="redis://127.0.0.1:$_svc_port/"
        echo "scripts/test: redis on 127.0.0.1:$_svc_port" >&2
    fi
    [ "$want_cluster" -eq 0 ] || _svc_start_redis_cluster
    [ "$want_pg" -eq 0 ] || _svc_start_postgres
    return 0
}
