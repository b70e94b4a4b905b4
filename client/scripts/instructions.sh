#!/usr/bin/env bash
# User-space instructions per request of qkvd builds, counted by valgrind's
# callgrind: a figure this noisy machine cannot move. Throughput on the VM
# varies by 20% between identical runs (see docs/PERFORMANCE.md), so a 3%
# change to the request path is invisible to `ab.sh`; the instruction count
# of the same seeded workload repeats within about 1%. It counts neither
# kernel time nor cache misses, so it says whether a change does less work,
# not how much faster it runs: quote it next to the throughput figures.
#
#   client/scripts/instructions.sh QKVD [QKVD...]       # each build once
#   RUNS=2 SECS=20 client/scripts/instructions.sh OLD NEW   # OLD NEW OLD NEW
#
# For each run: a fresh node (N=1, --sync periodic) under callgrind with
# instrumentation off, `qkv bench` preloads the benchmark's 100 000 keys, then
# instrumentation goes on for a SECS-second window (default 20) of the
# benchmark's workload (100-byte values, 50% reads, 32 connections,
# seed 1), and the instructions of that window are divided by the requests
# it served. Needs valgrind (`apt-get install valgrind`); takes about a
# minute per run. Uses the qkv of this checkout's release target (QKV
# overrides).
set -euo pipefail

[[ $# -ge 1 ]] || { echo "usage: $0 QKVD [QKVD...]" >&2; exit 2; }
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null ||
    { echo "$0: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
qkv=${QKV:-${CARGO_TARGET_DIR:-$root/target}/release/qkv}
runs=${RUNS:-1}
secs=${SECS:-20}
port=${HTTP_PORT:-18700}

one() {
    local bin=$1 dir vp
    dir=$(mktemp -d -t qkv-instr-XXXXXX)
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/cg.out" \
        "$bin" --id instr --http "127.0.0.1:$port" --listen "127.0.0.1:$((port + 1))" \
        --data-dir "$dir/data" --default-n 1 --sync periodic >"$dir/log" 2>&1 &
    vp=$!
    for _ in $(seq 600); do
        curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
        kill -0 "$vp" 2>/dev/null || { tail -5 "$dir/log" >&2; exit 1; }
        sleep 0.5
    done
    "$qkv" bench --node "http://127.0.0.1:$port" --keys 100000 --duration 1s --warmup 0s >/dev/null
    callgrind_control -i on "$vp" >/dev/null 2>&1
    "$qkv" bench --node "http://127.0.0.1:$port" --keys 100000 --no-preload \
        --duration "${secs}s" --warmup 0s --json >"$dir/bench.json"
    callgrind_control -i off "$vp" >/dev/null 2>&1
    callgrind_control -d "$vp" >/dev/null 2>&1
    kill -TERM "$vp"
    wait "$vp" || true
    python3 - "$dir" "$bin" <<'PY'
import glob, json, re, sys
d, bin = sys.argv[1], sys.argv[2]
t = json.load(open(d + "/bench.json"))["target"]
ir = sum(int(m.group(1)) for f in glob.glob(d + "/cg.out*")
         for m in re.finditer(r"^totals: (\d+)", open(f).read(), re.M))
print(f"{bin}: {ir / t['ops']:.0f} instructions per request "
      f"({t['ops']} requests, {t['read']['ops']} reads, {ir} instructions)")
PY
    rm -rf "$dir"
}

for _ in $(seq "$runs"); do
    for bin in "$@"; do
        one "$bin"
    done
done
