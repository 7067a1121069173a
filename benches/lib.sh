# shellcheck shell=bash disable=SC2034  # the variables set here are read by the scripts that source it
# Shared by benches/scrape.sh and benches/ingest.sh (sourced after they define `log` and set
# ROOT): core pinning, Debian packages, the release build, the work directory and its
# clean-up, free ports.

# pin_cores SERVER_CPU CLIENT_CPU SERVER CLIENT: pins the server under test and its client to
# two cores. Sets SERVER_PIN and CLIENT_PIN (command prefixes, empty when unpinned) and PINNED
# (1 or 0: a 1-core machine runs both unpinned, sharing the core). Exits 2 when a core cannot
# be pinned to.
pin_cores() {
    local server_cpu=$1 client_cpu=$2 server=$3 client=$4 cpu
    SERVER_PIN=()
    CLIENT_PIN=()
    PINNED=0
    if [ "$(nproc)" -lt 2 ]; then
        log "only one core available: running the $server and $client unpinned, sharing it"
        return 0
    fi
    for cpu in "$server_cpu" "$client_cpu"; do
        if ! taskset -c "$cpu" true 2>/dev/null; then
            echo "$0: cannot pin to core $cpu (taskset -c $cpu failed)" >&2; exit 2
        fi
    done
    if [ "$server_cpu" = "$client_cpu" ]; then
        log "warning: --server-cpu and --client-cpu are both $server_cpu: $server and $client share it"
    fi
    SERVER_PIN=(taskset -c "$server_cpu")
    CLIENT_PIN=(taskset -c "$client_cpu")
    PINNED=1
}

# install_missing PKG...: installs the Debian packages named (none: nothing to do).
install_missing() {
    [ $# -gt 0 ] || return 0
    log "installing $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# build_release: the exporter and the sim_orgs example, release. Sets BIN and SIM_ORGS.
build_release() {
    log "building the exporter (release)"
    cargo build --release --locked --quiet --bin atlas-cost-exporter --example sim_orgs
    BIN=$ROOT/target/release/atlas-cost-exporter
    SIM_ORGS=$ROOT/target/release/examples/sim_orgs
}

# make_work NAME: a fresh work directory in WORK, and a trap that kills every pid in PIDS
# and removes WORK on exit (KEEP_WORK=1 keeps it).
make_work() {
    WORK=$(mktemp -d "/tmp/$1.XXXXXX")
    PIDS=()
    trap cleanup EXIT
}
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -z "${KEEP_WORK:-}" ]; then rm -rf "$WORK"; fi
}

# free_port: a TCP port free on 127.0.0.1 right now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
