#!/usr/bin/env bash
# The HTTP benchmark against its ceiling on this 2-core machine: one qkvd
# (N=1) pinned to core 1, the load generator pinned to core 0, and the
# built-in ceiling server on core 1 too, so the node and the ceiling get the
# same single core.
#
#   client/scripts/bench.sh [periodic|always] [more `qkv bench` flags...]
#   NODES=3 client/scripts/bench.sh periodic     # 3 nodes, N=3, quorum,
#                                                 # all on NODE_CPU (default 1)
#   NODES=3 NODE_CPU=0,1 CEILING_CPU=1 client/scripts/bench.sh periodic
#                                                 # nodes free on both cores
#   QKVD_FLAGS="--read-digests on" ...            # extra qkvd flags
#   CEILING=0 ...                                  # the node only, no ceiling run
#   client/scripts/bench.sh periodic --rounds 15 --duration 3s --warmup 1s
#                                                 # node and ceiling alternating,
#                                                 # ratio = median of 15 pairs
#
# Builds release binaries (unless QKVD/QKV point at existing ones), starts the
# node on a fresh temporary data dir, waits for /health, runs
# `qkv bench --ceiling --cpu 0` with the reference workload (100 000 keys,
# 100-byte values, 50% reads, 32 connections, 10 s after 2 s warmup), then
# stops the node and deletes the data. Extra flags override the defaults
# (e.g. `--duration 30s`, `--json`).
set -euo pipefail

sync=${1:-periodic}
shift || true
case "$sync" in periodic|always) ;; *) echo "usage: $0 [periodic|always] [qkv bench flags]" >&2; exit 2 ;; esac

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
target=${CARGO_TARGET_DIR:-$root/target}
if [[ -z "${QKVD:-}" || -z "${QKV:-}" ]]; then
    (cd "$root" && cargo build --release -p quorumkv-node -p quorumkv-client)
fi
qkvd=${QKVD:-$target/release/qkvd}
qkv=${QKV:-$target/release/qkv}
node_cpu=${NODE_CPU:-1}
gen_cpu=${GEN_CPU:-0}
listen=127.0.0.1:$(( ${LISTEN_PORT:-17500} + 1 ))

nodes=${NODES:-1}
n=$(( nodes < 3 ? nodes : 3 ))
dir=$(mktemp -d -t qkv-bench-XXXXXX)
pids=()
urls=()
for i in $(seq "$nodes"); do
    h=127.0.0.1:$(( ${HTTP_PORT:-18500} + i ))
    l=127.0.0.1:$(( ${LISTEN_PORT:-17500} + i ))
    taskset -c "$node_cpu" "$qkvd" --id "bench$i" --http "$h" --listen "$l" --seeds "$listen" \
        --data-dir "$dir/data$i" --default-n "$n" --sync "$sync" ${QKVD_FLAGS:-} >"$dir/qkvd$i.log" 2>&1 &
    pids+=($!)
    urls+=("http://$h")
done
pid=${pids[0]}
cleanup() {
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

for u in "${urls[@]}"; do
    for _ in $(seq 300); do
        if curl -sf "$u/health" >/dev/null; then break; fi
        sleep 0.1
    done
    curl -sf "$u/health" >/dev/null || { tail -20 "$dir"/qkvd*.log >&2; exit 1; }
done
# Every node must see every node up and joined (normal) before the load
# starts: nodes join one at a time.
for u in "${urls[@]}"; do
    for _ in $(seq 600); do
        m=$(curl -sf "$u/cluster/members" || true)
        up=$(grep -o '"status":"up"' <<<"$m" | wc -l)
        normal=$(grep -o '"state":"normal"' <<<"$m" | wc -l)
        [[ "$up" -ge "$nodes" && "$normal" -ge "$nodes" ]] && break
        sleep 0.1
    done
done

node_flags=()
for u in "${urls[@]}"; do node_flags+=(--node "$u"); done
ceiling=(--ceiling --ceiling-cpu "${CEILING_CPU:-$node_cpu}")
where="ceiling server on core ${CEILING_CPU:-$node_cpu}"
if [[ "${CEILING:-1}" == 0 ]]; then
    ceiling=()
    where="no ceiling"
fi
echo "$nodes qkvd (pids ${pids[*]}, N=$n) on core(s) $node_cpu (sync=$sync), generator on core $gen_cpu, $where"
"$qkv" "${node_flags[@]}" bench --keys 100000 --value-size 100 --read-ratio 0.5 \
    --concurrency 32 --duration 10s --warmup 2s --cpu "$gen_cpu" "${ceiling[@]}" --server-pid "$pid" "$@"
