#!/usr/bin/env bash
# Streaming benchmark, a node joining: a 3-node cluster (N=3, --sync periodic)
# is loaded with KEYS keys of VALUE bytes (default 1 100 000 x 1000 B, a bit
# over 1 GB of values on every node), then a fourth node started with
# `--join manual` joins through `qkv ring plan --add n4` + `qkv ring apply
# --yes`. Prints the plan's estimate, the bytes streamed, the time to join
# and MB/s (apply's summary), and the data size per node.
#
#   client/scripts/join-bench.sh
#   KEYS=200000 VALUE=1000 client/scripts/join-bench.sh      # a smaller run
#   QKVD_FLAGS="--stream-bytes-per-sec 1000000000" ...        # lift the throttle
#
# Needs a few GB of free disk under DIR (default: a temporary directory).
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
target=${CARGO_TARGET_DIR:-$root/target}
if [[ -z "${QKVD:-}" || -z "${QKV:-}" ]]; then
    (cd "$root" && cargo build --release -p quorumkv-node -p quorumkv-client)
fi
qkvd=${QKVD:-$target/release/qkvd}
qkv=${QKV:-$target/release/qkv}
keys=${KEYS:-1100000}
value=${VALUE:-1000}
base=${BASE_PORT:-18700}
dir=$(mktemp -d "${DIR:-${TMPDIR:-/tmp}}/qkv-join-bench-XXXXXX")
pids=()
cleanup() {
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

start() { # id index extra-flags...
    local id=$1 i=$2
    shift 2
    "$qkvd" --id "$id" --http "127.0.0.1:$((base + i))" --listen "127.0.0.1:$((base + 100 + i))" \
        --seeds "127.0.0.1:$((base + 101))" --data-dir "$dir/$id" --default-n 3 --sync periodic \
        ${QKVD_FLAGS:-} "$@" >"$dir/$id.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 300); do
        curl -sf "http://127.0.0.1:$((base + i))/health" >/dev/null && return 0
        sleep 0.1
    done
    tail -20 "$dir/$id.log" >&2
    return 1
}
state_of() { # node-id -> its state as n1 sees it
    curl -sf "http://127.0.0.1:$((base + 1))/cluster/members" |
        python3 -c "import json,sys; print(next((m['state']+'/'+m['status'] for m in json.load(sys.stdin) if m['id']=='$1'), 'unknown'))"
}
wait_state() { # node-id state/status
    for _ in $(seq 600); do
        [[ "$(state_of "$1")" == "$2" ]] && return 0
        sleep 0.1
    done
    echo "$1 never became $2 (is $(state_of "$1"))" >&2
    return 1
}

for i in 1 2 3; do start "n$i" "$i"; done
for i in 1 2 3; do wait_state "n$i" normal/up; done
n1=http://127.0.0.1:$((base + 1))
echo "3 nodes up (N=3), data under $dir; loading $keys keys of $value bytes"
t0=$(date +%s.%N)
"$qkv" --node "$n1" --node "http://127.0.0.1:$((base + 2))" --node "http://127.0.0.1:$((base + 3))" \
    bench --keys "$keys" --value-size "$value" --read-ratio 1.0 --concurrency 32 \
    --duration 1s --warmup 0s | grep -E "preload|errors"
t1=$(date +%s.%N)
echo "loaded in $(python3 -c "print(round($t1 - $t0, 1))") s; on disk: $(du -sh "$dir/n1" | cut -f1) per node"
curl -sf "$n1/metrics" | grep -E "^qkv_(keys|bytes)_stored " | sed 's/^/  n1 /'

start n4 4 --join manual
wait_state n4 standby/up
plan_file=$dir/plan.json
echo "--- qkv ring plan --add n4"
"$qkv" --node "$n1" ring plan --add n4 --plan-file "$plan_file" | tail -15
echo "--- qkv ring apply --yes"
"$qkv" --node "$n1" ring apply --yes --json --poll-ms 500 --plan-file "$plan_file" | tee "$dir/summary.json"
echo
python3 - "$dir/summary.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
mb = s["bytes"] / 1e6
est = s.get("estimate_bytes")
print(f"join of n4: {s['streams']} streams over {s['ranges']} ranges, {s['keys']} keys, "
      f"{mb:.1f} MB in {s['duration_ms'] / 1000:.1f} s = {s['mb_per_s']:.1f} MB/s")
if est:
    print(f"plan estimate {est / 1e6:.1f} MB, streamed {mb:.1f} MB: "
          f"{100 * (s['bytes'] - est) / est:+.2f}%")
EOF
for i in 1 2 3 4; do
    printf "n%s: %s keys stored\n" "$i" \
        "$(curl -sf "http://127.0.0.1:$((base + i))/metrics" | awk '/^qkv_keys_stored /{print $2}')"
done
