#!/usr/bin/env bash
# Scrape benchmark: the same series, label names and values served by
#   exporter  this exporter (release build) against `atlas-cost-exporter simulate --series N`
#   go        client_golang (Debian's package), const gauges from a custom collector per scrape
#   python    prometheus_client (PyPI), GaugeMetricFamily from a custom collector per scrape
#   nginx     the exporter's scrape as a static file, gzip_static on: the physical limit
# driven by wrk on loopback, with and without `Accept-Encoding: gzip`.
# The peers' series come from one text 0.0.4 scrape of the exporter
# (benches/peers/series_from_exposition.py); nginx serves that scrape byte for byte.
# The server under test (the exporter, nginx's master and its one worker, the Go and Python
# peers) runs pinned to one core and wrk to another (taskset), so that the request rate
# measures the server and not the two sharing the CPU; on a 1-core machine both run unpinned
# (and the report says so).
#
# Usage: benches/scrape.sh [--smoke] [--sizes "10000 100000"] [--duration 10s]
#                          [--peer-duration 30s] [--connections 16] [--threads 2] [--markdown FILE]
#                          [--server-cpu 0] [--client-cpu 1] [--servers "exporter go python nginx"]
#   --smoke: 1000 series, 1 s runs (a check that everything starts and answers).
#   --peer-duration: wrk duration for the Go and Python peers (default: --duration). At 100k
#     series one round of 16 concurrent scrapes takes them more than 10 s: give them 30 s or
#     more, or wrk completes no request at all.
#   --server-cpu / --client-cpu: the cores the server under test and wrk are pinned to.
#   --servers: which servers are measured (default all four). The exporter always runs (the
#     others serve its scrape); unselected peers are neither installed, built nor started,
#     which is what makes 1,000,000 series practical (`--servers "exporter nginx"`: the Go and
#     Python peers need minutes and gigabytes per scrape there).
# Prints requests/s, server CPU per request, p50/p99 latency, response size and peak RSS
# (VmHWM; nginx: master and workers summed) per server, and each ratio against nginx and
# against the best peer. Server CPU per request is utime+stime from /proc/PID/stat (clock
# ticks, `getconf CLK_TCK`; all nginx processes, for the exporter only its own process) read
# before and after the wrk run, divided by the requests wrk completed: its resolution is one
# tick (10 ms at 100 Hz) per run, so 1 s smoke runs give only a rough figure. For gzip runs it
# also prints the size of a `gzip -9` copy of the same (decompressed) body next to the bytes
# the server sent.
# Installs wrk, nginx, Go and client_golang (apt) and prometheus-client (pip) when missing (only
# those of the selected servers).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SIZES="10000 100000"
DURATION=10s
PEER_DURATION=
CONNECTIONS=16
THREADS=2
MARKDOWN=
SERVER_CPU=0
CLIENT_CPU=1
SERVERS="exporter go python nginx"
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SIZES=1000; DURATION=1s ;;
        --sizes) SIZES=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --peer-duration) PEER_DURATION=$2; shift ;;
        --connections) CONNECTIONS=$2; shift ;;
        --threads) THREADS=$2; shift ;;
        --markdown) MARKDOWN=$2; shift ;;
        --server-cpu) SERVER_CPU=$2; shift ;;
        --client-cpu) CLIENT_CPU=$2; shift ;;
        --servers) SERVERS=$2; shift ;;
        *) echo "usage: $0 [--smoke] [--sizes \"10000 100000\"] [--duration 10s] [--peer-duration 30s] [--connections 16] [--threads 2] [--markdown FILE] [--server-cpu 0] [--client-cpu 1] [--servers \"exporter go python nginx\"]" >&2; exit 2 ;;
    esac
    shift
done
for server in $SERVERS; do
    case "$server" in
        exporter | go | python | nginx) ;;
        *) echo "$0: --servers: unknown server $server (exporter, go, python, nginx)" >&2; exit 2 ;;
    esac
done
if [ -z "${SERVERS// /}" ]; then echo "$0: --servers names no server" >&2; exit 2; fi
# Whether a server is selected by --servers.
selected() { [[ " $SERVERS " == *" $1 "* ]]; }

log() { echo "scrape.sh: $*" >&2; }

# ---------------------------------------------------------------- pinning
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
pin_cores "$SERVER_CPU" "$CLIENT_CPU" server wrk
NGINX_WORKERS=auto
if [ "$PINNED" = 1 ]; then
    # One core for the server: one nginx worker, like the other servers' single process on
    # that core (more workers would only compete for it), so the comparison stays fair.
    NGINX_WORKERS=1
    PINNING="server pinned to core $SERVER_CPU (nginx: worker_processes 1), wrk to core $CLIENT_CPU"
else
    PINNING="unpinned (1 core: server and wrk share it)"
fi
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- dependencies
GOPATH_PKG=/usr/share/gocode
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if selected nginx; then
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
fi
if selected go; then
    command -v go >/dev/null 2>&1 || missing+=(golang-go)
    [ -d "$GOPATH_PKG/src/github.com/prometheus/client_golang" ] || missing+=(golang-github-prometheus-client-golang-dev)
fi
command -v curl >/dev/null 2>&1 || missing+=(curl)
install_missing ${missing[@]+"${missing[@]}"}
if selected python && ! python3 -c 'import prometheus_client' >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check 'prometheus-client==0.26.0'
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# ---------------------------------------------------------------- builds
build_release
make_work scrape-bench
chmod 755 "$WORK"   # nginx workers run as another user

if selected go; then
    log "building the client_golang peer from Debian's packaged source (GOPATH mode, offline)"
    (cd "$ROOT/benches/peers" && GO111MODULE=off GOPATH=$GOPATH_PKG GOFLAGS='' GOCACHE=$WORK/gocache \
        go build -o "$WORK/go_server" go_server.go)
fi


# Waits until URL answers 200 (bounded).
wait_200() {
    local url=$1 limit=${2:-300}
    for _ in $(seq 1 "$limit"); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)" = 200 ]; then return 0; fi
        sleep 0.5
    done
    log "timed out waiting for $url"; return 1
}

# Waits until something answers HTTP at URL, whatever the status (bounded).
wait_listening() {
    local url=$1 limit=${2:-300}
    for _ in $(seq 1 "$limit"); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)" != 000 ]; then return 0; fi
        sleep 0.2
    done
    log "timed out waiting for $url"; return 1
}

# VmHWM of a pid (and of its children for nginx), in KiB.
vmhwm() {
    local total=0 pid kib
    for pid in "$@"; do
        kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        total=$((total + ${kib:-0}))
    done
    echo "$total"
}

# utime+stime (clock ticks) of pids, summed; fields 14 and 15 of /proc/PID/stat, counted after
# the ")" that ends the command name (which may hold spaces). A pid that is gone counts 0.
cpu_ticks() {
    local total=0 pid stat rest
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null || true)
        [ -n "$stat" ] || continue
        rest=${stat##*) }
        # rest starts at field 3 (state): utime is its 12th word, stime its 13th.
        total=$((total + $(awk '{print $12 + $13}' <<<"$rest")))
    done
    echo "$total"
}

# wrk's latency ("1.23ms", "456.00us", "1.20s", "1.00m") in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000;
        printf "%.2f", n }'
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"

# run_wrk NAME N ENC URL DURATION PIDS...: one wrk run, one line of results. PIDS are the
# server's processes whose CPU time is read before and after the run.
run_wrk() {
    local name=$1 n=$2 enc=$3 url=$4 duration=$5; shift 5
    local hdr=() out rps p50 p99 errors size cenc requests cpu0 cpu1 gz9=
    local body=$WORK/body.$name.$n.$enc headers=$WORK/headers.$name.$n.$enc
    [ "$enc" = gzip ] && hdr=(-H 'Accept-Encoding: gzip')
    size=$(curl -s "${hdr[@]}" -D "$headers" -o "$body" -w '%{size_download}' "$url")
    cenc=$(tr -d '\r' <"$headers" | awk -F': ' 'tolower($1)=="content-encoding" {print $2}')
    # The same scrape compressed with gzip -9 (the level prometheus_client uses), to set next
    # to what the server sent.
    if [ "$cenc" = gzip ]; then gz9=$(gzip -dc "$body" | gzip -9 | wc -c); fi
    cpu0=$(cpu_ticks "$@")
    out=$("${CLIENT_PIN[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$duration" --timeout 120s --latency "${hdr[@]}" "$url")
    cpu1=$(cpu_ticks "$@")
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    requests=$(awk '/ requests in / {print $1}' <<<"$out")
    p50=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
    p99=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
    errors=$(awk '/Socket errors|Non-2xx/ {printf "%s ", $0}' <<<"$out")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$enc" "$name" "$duration" "$rps" "$p50" "$p99" \
        "$size" "${cenc:-identity}" "${errors:-none}" "${requests:-0}" "$((cpu1 - cpu0))" "$gz9" >>"$RESULTS"
    log "$name n=$n $enc: $rps req/s, ${requests:-0} requests, server CPU $((cpu1 - cpu0)) ticks (${CLK_TCK} Hz), p50 ${p50} ms, p99 ${p99} ms, ${size} B (${cenc:-identity})${gz9:+, gzip -9: $gz9 B} ${errors}"
}

for N in $SIZES; do
    D=$WORK/$N
    mkdir -p "$D/www"
    chmod 755 "$D" "$D/www"
    SIM_PORT=$(free_port); EXP_PORT=$(free_port)
    log "n=$N: simulator and exporter"
    "$BIN" --log.level warn simulate --series "$N" --listen "127.0.0.1:$SIM_PORT" \
        --polls-before-ready 1 2>"$D/sim.log" &
    SIM_PID=$!; PIDS+=("$SIM_PID")
    {
        echo "orgs:"
        for org in $("$SIM_ORGS" "$N" | tr ',' ' '); do
            printf '  - id: %s\n    queries:\n      - {name: clusters, group_by: clusters, months: 18}\n' "$org"
        done
    } >"$D/config.yml"
    wait_listening "http://127.0.0.1:$SIM_PORT/" 600
    MONGODB_ATLAS_CLIENT_ID=mdb_sa_id_demo MONGODB_ATLAS_CLIENT_SECRET=mdb_sa_sk_demo \
        "${SERVER_PIN[@]}" "$BIN" --web.listen-address "127.0.0.1:$EXP_PORT" \
        --atlas.base-url "http://127.0.0.1:$SIM_PORT" --config.file "$D/config.yml" \
        --atlas.poll-interval 100ms --atlas.requests-per-minute 100000 --log.level warn \
        2>"$D/exporter.log" &
    EXP_PID=$!; PIDS+=("$EXP_PID")
    wait_200 "http://127.0.0.1:$EXP_PORT/readyz" 600
    # The simulator is not needed any more (the next refresh is an hour away).
    kill "$SIM_PID"; wait "$SIM_PID" 2>/dev/null || true

    curl -s -H 'Accept: text/plain;version=0.0.4' "http://127.0.0.1:$EXP_PORT/metrics" >"$D/www/metrics"
    series=$(grep -c '^atlas_cost_usage_usd{' "$D/www/metrics" || true)
    log "n=$N: scrape of $(wc -c <"$D/www/metrics") B, $series usage series"
    SERVER_PIDS=("$EXP_PID")
    if selected go || selected python; then
        python3 "$ROOT/benches/peers/series_from_exposition.py" "$D/www/metrics" "$D/series.json"
    fi

    if selected go; then
        GO_PORT=$(free_port)
        "${SERVER_PIN[@]}" "$WORK/go_server" -series "$D/series.json" -listen "127.0.0.1:$GO_PORT" 2>"$D/go.log" &
        GO_PID=$!; PIDS+=("$GO_PID"); SERVER_PIDS+=("$GO_PID")
    fi
    if selected python; then
        PY_PORT=$(free_port)
        "${SERVER_PIN[@]}" python3 "$ROOT/benches/peers/python_server.py" "$D/series.json" "$PY_PORT" 2>"$D/python.log" &
        PY_PID=$!; PIDS+=("$PY_PID"); SERVER_PIDS+=("$PY_PID")
    fi
    if selected nginx; then
        gzip -9 -k -f "$D/www/metrics"
        chmod 644 "$D/www/metrics" "$D/www/metrics.gz"
        NG_PORT=$(free_port)
        cat >"$D/nginx.conf" <<EOF
daemon off;
worker_processes $NGINX_WORKERS;
error_log $D/nginx.error.log warn;
pid $D/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path $D/ngx_client;
    proxy_temp_path $D/ngx_proxy;
    fastcgi_temp_path $D/ngx_fastcgi;
    uwsgi_temp_path $D/ngx_uwsgi;
    scgi_temp_path $D/ngx_scgi;
    types { }
    default_type "text/plain; version=0.0.4; charset=utf-8";
    server {
        listen 127.0.0.1:$NG_PORT;
        root $D/www;
        location = /metrics { gzip_static on; }
    }
}
EOF
        "${SERVER_PIN[@]}" "$NGINX" -c "$D/nginx.conf" 2>"$D/nginx.stderr" &
        NG_PID=$!; PIDS+=("$NG_PID"); SERVER_PIDS+=("$NG_PID")
    fi
    if selected go; then wait_200 "http://127.0.0.1:$GO_PORT/metrics" 600; fi
    if selected python; then wait_200 "http://127.0.0.1:$PY_PORT/metrics" 600; fi
    if selected nginx; then
        wait_200 "http://127.0.0.1:$NG_PORT/metrics" 60
        mapfile -t NG_WORKERS < <(pgrep -P "$NG_PID" || true)
        NG_PIDS=("$NG_PID" "${NG_WORKERS[@]}")
    fi

    for enc in identity gzip; do
        if selected exporter; then
            run_wrk exporter "$N" "$enc" "http://127.0.0.1:$EXP_PORT/metrics" "$DURATION" "$EXP_PID"
        fi
        if selected go; then
            run_wrk go "$N" "$enc" "http://127.0.0.1:$GO_PORT/metrics" "${PEER_DURATION:-$DURATION}" "$GO_PID"
        fi
        if selected python; then
            run_wrk python "$N" "$enc" "http://127.0.0.1:$PY_PORT/metrics" "${PEER_DURATION:-$DURATION}" "$PY_PID"
        fi
        if selected nginx; then
            run_wrk nginx "$N" "$enc" "http://127.0.0.1:$NG_PORT/metrics" "$DURATION" "${NG_PIDS[@]}"
        fi
    done
    {
        if selected exporter; then printf '%s\tRSS\texporter\t%s\n' "$N" "$(vmhwm "$EXP_PID")"; fi
        if selected go; then printf '%s\tRSS\tgo\t%s\n' "$N" "$(vmhwm "$GO_PID")"; fi
        if selected python; then printf '%s\tRSS\tpython\t%s\n' "$N" "$(vmhwm "$PY_PID")"; fi
        if selected nginx; then printf '%s\tRSS\tnginx\t%s\n' "$N" "$(vmhwm "${NG_PIDS[@]}")"; fi
    } >>"$RESULTS"
    for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
done

# ---------------------------------------------------------------- report
report() {
    echo "Scrape benchmark ($SERVERS): wrk -t$THREADS -c$CONNECTIONS -d$DURATION (peers: ${PEER_DURATION:-$DURATION}) --latency, loopback; $PINNING; server CPU from /proc/PID/stat at $CLK_TCK ticks/s; commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo '+dirty')"
    echo
    python3 - "$RESULTS" "$CLK_TCK" <<'EOF'
import sys
from collections import defaultdict

clk_tck = int(sys.argv[2])
# (n, enc) -> server -> (rps, p50, p99, size, cenc, errors, duration, cpu ms/request or None, gzip -9 size or None)
runs = defaultdict(dict)
rss = defaultdict(dict)    # n -> server -> KiB
for line in open(sys.argv[1], encoding="utf-8"):
    f = line.rstrip("\n").split("\t")
    if f[1] == "RSS":
        rss[int(f[0])][f[2]] = int(f[3])
    else:
        requests, ticks = int(f[10] or 0), int(f[11] or 0)
        cpu = ticks * 1000 / clk_tck / requests if requests else None
        runs[(int(f[0]), f[1])][f[2]] = (float(f[4] or 0), float(f[5] or 0), float(f[6] or 0), int(f[7]), f[8], f[9], f[3],
                                         cpu, int(f[12]) if f[12] else None)

PEERS = ("go", "python")
def ratio(a, b):
    return f"{a / b:.2f}x" if b else "n/a"

def cpu_ratio(a, b):
    # CPU per request against nginx's (lower is better); n/a when either run saw no request or
    # nginx's CPU stayed under one clock tick.
    return f"{a / b:.2f}x" if a is not None and b else "n/a"

print("| series | Accept-Encoding | server | wrk -d | req/s | server CPU ms/req | p50 ms | p99 ms | bytes/response (encoding) | gzip -9 of the same body (sent vs it) | req/s vs nginx | CPU/req vs nginx | req/s vs best peer | p99 vs nginx | errors |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for (n, enc), by in sorted(runs.items()):
    nginx = by.get("nginx")
    best = max((by[p] for p in PEERS if p in by and by[p][0] > 0), key=lambda r: r[0], default=None)
    for server in ("exporter", "go", "python", "nginx"):
        if server not in by:
            continue
        rps, p50, p99, size, cenc, errors, duration, cpu, gz9 = by[server]
        cpu_s = f"{cpu:.4f}" if cpu is not None else "n/a"
        gz9_s = f"{gz9} ({ratio(size, gz9)})" if gz9 else "-"
        print(f"| {n} | {enc} | {server} | {duration} | {rps:.1f} | {cpu_s} | {p50:.2f} | {p99:.2f} | {size} ({cenc}) | {gz9_s} | "
              f"{ratio(rps, nginx[0]) if nginx else 'n/a'} | {cpu_ratio(cpu, nginx[7]) if nginx else 'n/a'} | "
              f"{ratio(rps, best[0]) if best else 'n/a'} | "
              f"{ratio(p99, nginx[2]) if nginx else 'n/a'} | {errors.strip()} |")
print()
print("| series | server | peak RSS (VmHWM) | vs best (lowest) peer |")
print("|---|---|---|---|")
for n, by in sorted(rss.items()):
    best = min((by[p] for p in PEERS if p in by), default=0)
    for server in ("exporter", "go", "python", "nginx"):
        if server in by:
            print(f"| {n} | {server} | {by[server] / 1024:.1f} MiB | {ratio(by[server], best)} |")
EOF
}
report
if [ -n "$MARKDOWN" ]; then report >"$MARKDOWN"; fi
