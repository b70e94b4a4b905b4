#!/usr/bin/env bash
# Tail tolerance (docs/PERFORMANCE.md, "Tail tolerance"): 3 local nodes
# with fault injection, n3 slowed by 50 ms on every leg of n1's and n2's
# calls to it (a write or read round trip to n3 takes 100 ms), then
# `qkv bench` through n1 at quorum and at all. With tail tolerance the
# quorum p99s stay near the healthy ones while `all` shows the 100 ms.
#
#   client/scripts/tail.sh QKVD [QKVD...]      # each build in turn
#   SECS=10 CONC=8 KEYS=10000 client/scripts/tail.sh OLD NEW OLD NEW
#   READS=1.0 CONC=1 client/scripts/tail.sh OLD NEW   # reads only
#
# With writes in the mix, n1 always has replication calls to n3 in flight
# (each takes 100 ms), so even ordering by outstanding calls alone avoids
# n3; a read-only workload leaves only what reads themselves learn.
#
# Uses the qkv of this checkout's release target (QKV overrides); every
# build gets a fresh cluster in a temporary directory, deleted after.
set -euo pipefail

[[ $# -ge 1 ]] || { echo "usage: $0 QKVD [QKVD...]" >&2; exit 2; }
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
qkv=${QKV:-${CARGO_TARGET_DIR:-$root/target}/release/qkv}
secs=${SECS:-10}
conc=${CONC:-8}
keys=${KEYS:-10000}
reads=${READS:-0.5}
http=${HTTP_PORT:-18801}
listen=${LISTEN_PORT:-17801}

one() {
    local bin=$1 dir n1
    dir=$(mktemp -d -t qkv-tail-XXXXXX)
    n1=http://127.0.0.1:$http
    "$qkv" local up --nodes 3 --dir "$dir" --qkvd "$bin" --sync periodic \
        --base-http-port "$http" --base-listen-port "$listen" -- --fault-injection >/dev/null
    # shellcheck disable=SC2064
    trap "'$qkv' local down --dir '$dir' >/dev/null 2>&1 || true; rm -rf '$dir'" RETURN
    for i in 0 1; do
        "$qkv" --node "http://127.0.0.1:$((http + i))" faults set --to n3 \
            --w-delay const:50 --a-delay const:50 --r-delay const:50 --s-delay const:50 >/dev/null
    done
    echo "== $bin, reads $reads, $conc connections ($(uptime | sed 's/.*load/load/'))"
    local pre=()
    for level in quorum all; do
        echo "-- r=$level w=$level"
        "$qkv" --node "$n1" bench --r "$level" --w "$level" --keys "$keys" \
            --concurrency "$conc" --read-ratio "$reads" --duration "${secs}s" --warmup 2s "${pre[@]}" |
            grep -E '^ +(read|write) '
        pre=(--no-preload)
    done
}

for bin in "$@"; do
    one "$bin"
done
