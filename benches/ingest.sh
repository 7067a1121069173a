#!/usr/bin/env bash
# Ingest benchmark: how long one real Prometheus (Debian's prometheus package, 2.42) takes to
# ingest ONE scrape of this exporter serving `atlas-cost-exporter simulate --series N`, and
# what the exporter's first refresh of that org costs on the way.
#
# For each size N it
#   1. starts the simulator (`simulate --series N`) and the exporter (release build) against
#      it, and times the exporter's first refresh (start to /readyz 200, polled every 0.2 s);
#   2. fetches one scrape as Prometheus asks for it (its Accept header: OpenMetrics), plain and
#      gzip, and checks that the cost series are there;
#   3. starts one `prometheus` with a fresh TSDB, scraping only the exporter, once: its
#      scrape_interval (--scrape-interval, default 3m; scrape_timeout the same) is longer than
#      the run. Prometheus puts a target's first scrape at a fixed offset inside the interval
#      (a hash of the target, to spread targets out), so the scrape comes 0 to one interval
#      after start; the script waits for it and stops Prometheus before the second one;
#   4. reports Prometheus's own figures for that scrape (`up`, `scrape_duration_seconds`:
#      fetch + parse + append, before the commit; `scrape_samples_scraped`,
#      `scrape_samples_post_metric_relabeling`, `scrape_series_added`, `scrape_body_size_bytes`
#      from --enable-feature=extra-scrape-metrics), the wall time from the scrape's TCP
#      connection (seen with ss) to its samples being queryable (the commit included),
#      Prometheus's CPU time (utime+stime, /proc/PID/stat) over the same span, its RSS before
#      the scrape and its peak (VmHWM), and its head series.
# The exporter runs pinned to --server-cpu and Prometheus to --client-cpu (taskset); the
# simulator and the script's own polling are not pinned. On a 1-core machine all run unpinned.
# Exporter-side figures: refresh wall time, CPU (utime+stime at /readyz 200), peak RSS at
# /readyz and after Prometheus's scrape, the simulator's peak RSS, and the Atlas requests of
# the refresh (sum of atlas_cost_api_requests_total).
#
# Usage: benches/ingest.sh [--smoke] [--sizes "10000 100000 1000000"] [--scrape-interval 3m]
#                          [--markdown FILE] [--server-cpu 0] [--client-cpu 1]
#   --smoke: 1000 series, a 15 s scrape interval (a check that everything starts and answers).
#   --scrape-interval: Prometheus's scrape_interval and scrape_timeout; the longest wait for
#     the first scrape, and the longest the scrape may take (at 1,000,000 series Prometheus
#     took 98 s on a shared 2-core machine: 2m leaves too little room there).
# KEEP_WORK=1 keeps the work directory (logs, the exporter's self metrics, the TSDB).
# Installs Debian's prometheus, curl and iproute2 (ss) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SIZES="10000 100000"
INTERVAL=3m
MARKDOWN=
SERVER_CPU=0
CLIENT_CPU=1
usage="usage: $0 [--smoke] [--sizes \"10000 100000 1000000\"] [--scrape-interval 3m] [--markdown FILE] [--server-cpu 0] [--client-cpu 1]"
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SIZES=1000; INTERVAL=15s ;;
        --sizes) SIZES=$2; shift ;;
        --scrape-interval) INTERVAL=$2; shift ;;
        --markdown) MARKDOWN=$2; shift ;;
        --server-cpu) SERVER_CPU=$2; shift ;;
        --client-cpu) CLIENT_CPU=$2; shift ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
    shift
done
case "$INTERVAL" in
    *[0-9]s) INTERVAL_S=${INTERVAL%s} ;;
    *[0-9]m) INTERVAL_S=$((${INTERVAL%m} * 60)) ;;
    *) echo "$0: --scrape-interval takes seconds or minutes (15s, 2m), not $INTERVAL" >&2; exit 2 ;;
esac
case "$INTERVAL_S" in
    '' | *[!0-9]*) echo "$0: --scrape-interval takes seconds or minutes (15s, 2m), not $INTERVAL" >&2; exit 2 ;;
esac

log() { echo "ingest.sh: $*" >&2; }

# ---------------------------------------------------------------- pinning
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
pin_cores "$SERVER_CPU" "$CLIENT_CPU" exporter Prometheus
if [ "$PINNED" = 1 ]; then
    PINNING="exporter pinned to core $SERVER_CPU, Prometheus to core $CLIENT_CPU, simulator unpinned"
else
    PINNING="unpinned (1 core: exporter and Prometheus share it)"
fi
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- dependencies
missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v ss >/dev/null 2>&1 || missing+=(iproute2)
install_missing ${missing[@]+"${missing[@]}"}
PROMETHEUS=$(command -v prometheus)
PROM_VERSION=$("$PROMETHEUS" --version 2>&1 | awk 'NR==1 {print $3}')

# ---------------------------------------------------------------- build
build_release
make_work ingest-bench
trap 'exit 130' INT TERM

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", b - a}'; }

# Fails when the process PID is gone (with the tail of its log).
alive() {
    local pid=$1 name=$2 logfile=$3
    if ! kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) exited; the end of its log:"
        tail -n 20 "$logfile" >&2 || true
        return 1
    fi
}

# Waits until URL answers 200, at most LIMIT seconds, while PID lives.
wait_200() {
    local url=$1 limit=$2 pid=$3 name=$4 logfile=$5 deadline
    deadline=$(($(date +%s) + limit))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)" = 200 ]; then return 0; fi
        alive "$pid" "$name" "$logfile"
        sleep 0.2
    done
    log "timed out after ${limit}s waiting for $url"; return 1
}

# Waits until something answers HTTP at URL, whatever the status, at most LIMIT seconds.
wait_listening() {
    local url=$1 limit=$2 pid=$3 name=$4 logfile=$5 deadline
    deadline=$(($(date +%s) + limit))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)" != 000 ]; then return 0; fi
        alive "$pid" "$name" "$logfile"
        sleep 0.2
    done
    log "timed out after ${limit}s waiting for $url"; return 1
}

# A line of /proc/PID/status (VmHWM, VmRSS) in KiB; 0 when the pid is gone.
status_kib() {
    awk -v k="$2:" '$1 == k {print $2; found = 1} END {if (!found) print 0}' "/proc/$1/status" 2>/dev/null || echo 0
}

# utime+stime (clock ticks) of a pid: fields 14 and 15 of /proc/PID/stat, counted after the
# ")" that ends the command name (which may hold spaces).
cpu_ticks() {
    local stat rest
    stat=$(cat "/proc/$1/stat" 2>/dev/null || true)
    [ -n "$stat" ] || { echo 0; return; }
    rest=${stat##*) }
    awk '{print $12 + $13}' <<<"$rest"
}

ticks_ms() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN {printf "%.0f", t * 1000 / hz}'; }

# The value of an instant PromQL query's first result ("" when it has none).
promql() {
    curl -s --get --data-urlencode "query=$2" "http://127.0.0.1:$1/api/v1/query" |
        python3 -c 'import json, sys
r = json.load(sys.stdin).get("data", {}).get("result", [])
print(r[0]["value"][1] if r else "")' 2>/dev/null || true
}

# The sum of a metric's samples in an exposition file (0 when absent).
metric_sum() {
    awk -v m="$2" 'index($0, m) == 1 && (substr($0, length(m) + 1, 1) == "{" || substr($0, length(m) + 1, 1) == " ") {s += $NF} END {printf "%d", s}' "$1"
}

# What Prometheus 2.42 sends when it scrapes.
PROM_ACCEPT='application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1'

RESULTS=$WORK/results.tsv
: >"$RESULTS"

for N in $SIZES; do
    D=$WORK/$N
    mkdir -p "$D/tsdb"
    SIM_PORT=$(free_port); EXP_PORT=$(free_port); PROM_PORT=$(free_port)

    # ------------------------------------------------------------ simulator and exporter
    log "n=$N: simulator"
    t_sim=$(now)
    "$BIN" --log.level warn simulate --series "$N" --listen "127.0.0.1:$SIM_PORT" \
        --polls-before-ready 1 2>"$D/sim.log" &
    SIM_PID=$!; PIDS+=("$SIM_PID")
    {
        echo "orgs:"
        for org in $("$SIM_ORGS" "$N" | tr ',' ' '); do
            printf '  - id: %s\n    queries:\n      - {name: clusters, group_by: clusters, months: 18}\n' "$org"
        done
    } >"$D/config.yml"
    wait_listening "http://127.0.0.1:$SIM_PORT/" 1200 "$SIM_PID" simulator "$D/sim.log"
    sim_start_s=$(elapsed "$t_sim" "$(now)")
    log "n=$N: simulator listening after ${sim_start_s}s; exporter's first refresh"
    t_exp=$(now)
    MONGODB_ATLAS_CLIENT_ID=mdb_sa_id_demo MONGODB_ATLAS_CLIENT_SECRET=mdb_sa_sk_demo \
        "${SERVER_PIN[@]}" "$BIN" --web.listen-address "127.0.0.1:$EXP_PORT" \
        --atlas.base-url "http://127.0.0.1:$SIM_PORT" --config.file "$D/config.yml" \
        --atlas.poll-interval 100ms --atlas.requests-per-minute 100000 --log.level warn \
        2>"$D/exporter.log" &
    EXP_PID=$!; PIDS+=("$EXP_PID")
    wait_200 "http://127.0.0.1:$EXP_PORT/readyz" 3600 "$EXP_PID" exporter "$D/exporter.log"
    refresh_s=$(elapsed "$t_exp" "$(now)")
    exp_cpu_ms=$(ticks_ms "$(cpu_ticks "$EXP_PID")")
    exp_hwm_ready=$(status_kib "$EXP_PID" VmHWM)
    exp_rss_ready=$(status_kib "$EXP_PID" VmRSS)
    sim_hwm=$(status_kib "$SIM_PID" VmHWM)
    # The simulator is not needed any more (the next refresh is an hour away).
    kill "$SIM_PID"; wait "$SIM_PID" 2>/dev/null || true
    log "n=$N: ready after ${refresh_s}s, exporter CPU ${exp_cpu_ms} ms, peak RSS $((exp_hwm_ready / 1024)) MiB (simulator $((sim_hwm / 1024)) MiB)"

    # One scrape as Prometheus asks for it, plain and gzip; then the exporter's own counters.
    plain=$(curl -s -H "Accept: $PROM_ACCEPT" -o "$D/scrape.txt" -w '%{size_download}' "http://127.0.0.1:$EXP_PORT/metrics")
    gz=$(curl -s -H "Accept: $PROM_ACCEPT" -H 'Accept-Encoding: gzip' -D "$D/gz.headers" -o "$D/scrape.gz" -w '%{size_download}' "http://127.0.0.1:$EXP_PORT/metrics")
    ctype=$(tr -d '\r' <"$D/gz.headers" | awk -F': ' 'tolower($1)=="content-type" {print $2}')
    cenc=$(tr -d '\r' <"$D/gz.headers" | awk -F': ' 'tolower($1)=="content-encoding" {print $2}')
    rm -f "$D/scrape.gz"
    cost_series=$(grep -c '^atlas_cost_usage_usd{' "$D/scrape.txt" || true)
    if [ "${cost_series:-0}" -eq 0 ]; then
        log "n=$N: the exporter's scrape holds no atlas_cost_usage_usd series; its log:"
        tail -n 20 "$D/exporter.log" >&2
        exit 1
    fi
    atlas_requests=$(metric_sum "$D/scrape.txt" atlas_cost_api_requests_total)
    by_endpoint=$(awk -F'[{}"]' '/^atlas_cost_api_requests_total\{/ {n[$3] += $NF} END {for (e in n) printf "%s %d, ", e, n[e]}' "$D/scrape.txt")
    grep -v '^atlas_cost_usage_usd{' "$D/scrape.txt" >"$D/exporter-self.txt" || true
    rm -f "$D/scrape.txt"
    log "n=$N: scrape of $plain B plain, $gz B ${cenc:-identity} ($ctype), $cost_series cost series, $atlas_requests Atlas requests (${by_endpoint%, })"

    # ------------------------------------------------------------ one Prometheus, one scrape
    cat >"$D/prometheus.yml" <<EOF
global:
  scrape_interval: $INTERVAL
  scrape_timeout: $INTERVAL
  evaluation_interval: $INTERVAL
scrape_configs:
  - job_name: exporter
    # Unlimited (also the defaults): the whole org in one scrape.
    body_size_limit: 0
    sample_limit: 0
    static_configs:
      - targets: ["127.0.0.1:$EXP_PORT"]
EOF
    "${CLIENT_PIN[@]}" "$PROMETHEUS" --config.file "$D/prometheus.yml" \
        --storage.tsdb.path "$D/tsdb" --web.listen-address "127.0.0.1:$PROM_PORT" \
        --enable-feature=extra-scrape-metrics >"$D/prometheus.log" 2>&1 &
    PROM_PID=$!; PIDS+=("$PROM_PID")
    wait_200 "http://127.0.0.1:$PROM_PORT/-/ready" 120 "$PROM_PID" prometheus "$D/prometheus.log"
    prom_rss_idle=$(status_kib "$PROM_PID" VmRSS)
    t_ready=$(now)
    log "n=$N: Prometheus $PROM_VERSION ready; waiting for its first scrape (at most $INTERVAL away)"
    # Until Prometheus connects to the exporter, keep its CPU time as the "before" figure.
    cpu0=$(cpu_ticks "$PROM_PID")
    t_conn=
    up=
    deadline=$(($(date +%s) + 2 * INTERVAL_S + 60))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        if [ -z "$t_conn" ]; then
            ticks=$(cpu_ticks "$PROM_PID")
            if [ -n "$(ss -Htn state established "( dport = :$EXP_PORT )" 2>/dev/null)" ]; then
                t_conn=$(now)
                log "n=$N: scrape started $(elapsed "$t_ready" "$t_conn")s after Prometheus was ready"
            else
                cpu0=$ticks
            fi
        fi
        up=$(promql "$PROM_PORT" 'up{job="exporter"}')
        [ -n "$up" ] && break
        alive "$PROM_PID" prometheus "$D/prometheus.log"
        sleep 0.2
    done
    t_done=$(now)
    cpu1=$(cpu_ticks "$PROM_PID")
    if [ -z "$up" ]; then
        log "n=$N: Prometheus did not report the scrape within $((2 * INTERVAL_S + 60))s"; exit 1
    fi
    prom_hwm=$(status_kib "$PROM_PID" VmHWM)
    exp_hwm=$(status_kib "$EXP_PID" VmHWM)
    wait_s=$(elapsed "$t_ready" "${t_conn:-$t_done}")
    visible_s=$([ -n "$t_conn" ] && elapsed "$t_conn" "$t_done" || echo n/a)
    dur=$(promql "$PROM_PORT" 'scrape_duration_seconds{job="exporter"}')
    scraped=$(promql "$PROM_PORT" 'scrape_samples_scraped{job="exporter"}')
    post=$(promql "$PROM_PORT" 'scrape_samples_post_metric_relabeling{job="exporter"}')
    added=$(promql "$PROM_PORT" 'scrape_series_added{job="exporter"}')
    body=$(promql "$PROM_PORT" 'scrape_body_size_bytes{job="exporter"}')
    scrapes=$(promql "$PROM_PORT" 'count_over_time(up{job="exporter"}[1d])')
    head=$(curl -s "http://127.0.0.1:$PROM_PORT/metrics" | awk '$1 == "prometheus_tsdb_head_series" {printf "%d", $2}')
    last_error=
    if [ "$up" != 1 ]; then
        last_error=$(curl -s "http://127.0.0.1:$PROM_PORT/api/v1/targets" | python3 -c 'import json, sys
t = json.load(sys.stdin)["data"]["activeTargets"]
print(t[0].get("lastError", "") if t else "no target")' 2>/dev/null || echo "?")
        last_error=$(tr '\t\n' '  ' <<<"$last_error")
        log "n=$N: the scrape failed (up=$up): $last_error"
    fi
    [ "${scrapes:-1}" = 1 ] || log "n=$N: warning: Prometheus scraped $scrapes times before the figures were read"
    log "n=$N: up=$up, scrape_duration_seconds=$dur, $scraped samples ($post after relabeling, $added series added), $((prom_hwm / 1024)) MiB peak RSS, CPU $(ticks_ms $((cpu1 - cpu0))) ms"
    kill "$PROM_PID" "$EXP_PID" 2>/dev/null || true
    wait "$PROM_PID" "$EXP_PID" 2>/dev/null || true

    printf '%s\t' "$N" "$cost_series" "$sim_start_s" "$refresh_s" "$exp_cpu_ms" "$exp_hwm_ready" "$exp_rss_ready" \
        "$exp_hwm" "$sim_hwm" "$atlas_requests" "$plain" "$gz" "${cenc:-identity}" "$ctype" "$up" "$dur" \
        "$scraped" "$post" "$added" "$body" "$scrapes" "$head" "$wait_s" "$visible_s" \
        "$(ticks_ms $((cpu1 - cpu0)))" "$prom_rss_idle" "$prom_hwm" >>"$RESULTS"
    printf '%s\n' "$last_error" >>"$RESULTS"
done

# ---------------------------------------------------------------- report
report() {
    echo "Ingest benchmark: Prometheus $PROM_VERSION scraping the exporter once (scrape_interval = scrape_timeout = $INTERVAL, OpenMetrics and gzip as Prometheus negotiates them), loopback; $PINNING; CPU from /proc/PID/stat at $CLK_TCK ticks/s; commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src benches || echo '+dirty')"
    echo
    python3 - "$RESULTS" <<'EOF'
import sys

rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1], encoding="utf-8")]

def mib(kib):
    return f"{int(kib) / 1024:.0f} MiB"

def mb(b):
    b = int(b)
    return f"{b / 1e6:.1f} MB" if b >= 1e6 else f"{b / 1e3:.1f} kB"

def num(v, fmt="{:.0f}"):
    try:
        return fmt.format(float(v))
    except ValueError:
        return v or "n/a"

print("| series (--series) | cost series | refresh wall | exporter CPU at ready | exporter peak RSS at ready / after the scrape | simulator peak RSS | Atlas requests | scrape plain | scrape gzip |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    (n, cost, sim_s, refresh_s, exp_cpu, hwm_ready, _rss_ready, hwm_after, sim_hwm, requests, plain, gz, cenc,
     _ctype) = r[:14]
    print(f"| {n} | {cost} | {refresh_s} s | {exp_cpu} ms | {mib(hwm_ready)} / {mib(hwm_after)} | {mib(sim_hwm)} | "
          f"{requests} | {mb(plain)} | {mb(gz)} ({cenc}) |")
print()
print("| series (--series) | up | samples scraped | after relabeling | series added | body read | scrape_duration_seconds | connection to queryable | Prometheus CPU over the scrape | Prometheus RSS before / peak | head series | wait for the first scrape |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    n = r[0]
    (up, dur, scraped, post, added, body, scrapes, head, wait_s, visible_s, cpu_ms, rss_idle, hwm, err) = r[14:28]
    note = f" ({scrapes} scrapes)" if scrapes not in ("1", "") else ""
    up_s = up + (f": {err}" if err else "") + note
    print(f"| {n} | {up_s} | {num(scraped)} | {num(post)} | {num(added)} | {mb(body) if body else 'n/a'} | "
          f"{num(dur, '{:.2f}')} s | {visible_s} s | {cpu_ms} ms | {mib(rss_idle)} / {mib(hwm)} | {head or 'n/a'} | {wait_s} s |")
EOF
}
report
if [ -n "$MARKDOWN" ]; then report >"$MARKDOWN"; fi
