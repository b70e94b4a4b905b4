#!/usr/bin/env bash
# Side-by-side comparison of two qkvd builds on this 2-core machine: runs
# `bench.sh periodic` without the ceiling (a fresh single node per run,
# pinned as there) for each build in turn, A B A B..., so that the
# machine's slow drifts hit both alike. The node saturates its core, so
# ops/s and CPU per request compare the builds directly.
#
#   client/scripts/ab.sh OLD_QKVD NEW_QKVD [rounds (default 6)]
#
# A build can be a wrapper script that sets environment variables and
# `exec`s a qkvd. Prints each run, then the medians and the per-round
# NEW/OLD ratios. Uses the qkv of this checkout's release target (QKV
# overrides).
set -euo pipefail

a=${1:?usage: $0 OLD_QKVD NEW_QKVD [rounds]}
b=${2:?usage: $0 OLD_QKVD NEW_QKVD [rounds]}
rounds=${3:-6}
here=$(dirname "$0")
root=$(git -C "$here" rev-parse --show-toplevel)
qkv=${QKV:-${CARGO_TARGET_DIR:-$root/target}/release/qkv}

results=()
for r in $(seq "$rounds"); do
    for which in A B; do
        bin=$([[ $which == A ]] && echo "$a" || echo "$b")
        out=$(QKVD=$bin QKV=$qkv CEILING=0 "$here/bench.sh" periodic --duration 8s)
        ops=$(awk '/^  total/ {print $2}' <<<"$out")
        cpu=$(sed -n 's/^  cpu .*server \([0-9]*\)%.*/\1/p' <<<"$out")
        echo "round $r $which: $ops ops/s, node CPU $cpu%"
        results+=("$which $ops $cpu")
    done
done

printf '%s\n' "${results[@]}" | python3 -c '
import statistics as st, sys
runs = {"A": [], "B": []}
for line in sys.stdin:
    which, ops, cpu = line.split()
    runs[which].append((int(ops), 1e6 * int(cpu) / 100 / int(ops)))
for which in "AB":
    ops = st.median(o for o, _ in runs[which])
    us = st.median(u for _, u in runs[which])
    print(f"{which}: median {ops:.0f} ops/s, {us:.2f} us of node CPU per request")
ratios = [b[0] / a[0] for a, b in zip(runs["A"], runs["B"])]
print("B/A per round: " + " ".join(f"{r:.3f}" for r in ratios) + f"; median {st.median(ratios):.3f}")
'
