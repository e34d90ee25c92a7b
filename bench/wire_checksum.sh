#!/bin/bash
# wire_checksum.sh: what CRC32C over every activation payload costs in decode.
# Runs the same greedy generation with and without the checksum in paired,
# alternating rounds (on a shared, noisy machine a pair sees the same load),
# and prints each round, the medians of decode seconds and tok/s, and the
# median of the per-pair relative difference.
#
#   bench/wire_checksum.sh [ROUNDS] [NEW_TOKENS]   (default 5 rounds, 32 tokens)
set -u
cd "$(dirname "$0")/.." || exit 2
BUILD=${BUILD:-build}
TRUSTMOE=${TRUSTMOE:-$BUILD/trustmoe}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
R=${1:-5}
N=${2:-32}
out=$(mktemp -d /tmp/trustmoe-crc.XXXXXX)
trap 'rm -rf "$out"' EXIT
run() { # run FLAG STATS
    timeout 600 mpirun --oversubscribe -np 3 "$TRUSTMOE" generate --synthetic omni48-small --ids 1,2,3 -n "$N" \
        --temp 0 $1 --stats-json "$2" >/dev/null 2>"$out/err" || { cat "$out/err" >&2; exit 1; }
}
for r in $(seq "$R"); do
    # alternate which goes first, so neither always follows the other
    if [ $((r % 2)) -eq 1 ]; then
        run --wire-checksum "$out/on-$r.json"; run --no-wire-checksum "$out/off-$r.json"
    else
        run --no-wire-checksum "$out/off-$r.json"; run --wire-checksum "$out/on-$r.json"
    fi
done
python3 - "$out" "$R" <<'PY'
import json, statistics, sys
d, R = sys.argv[1], int(sys.argv[2])
on, off = [], []
print("| round | decode s, checksum | decode s, none | difference |")
print("|---|---|---|---|")
for r in range(1, R + 1):
    a = json.load(open(f"{d}/on-{r}.json")); b = json.load(open(f"{d}/off-{r}.json"))
    assert a["wire_checksum"] is True and b["wire_checksum"] is False
    on.append(a["decode"]["seconds"]); off.append(b["decode"]["seconds"])
    print(f"| {r} | {on[-1]:.3f} | {off[-1]:.3f} | {100 * (on[-1] / off[-1] - 1):+.2f}% |")
diff = [100 * (x / y - 1) for x, y in zip(on, off)]
steps = a["decode"]["steps"]
print(f"\nmedian decode: checksum {statistics.median(on):.3f} s ({steps / statistics.median(on):.2f} tok/s), "
      f"none {statistics.median(off):.3f} s ({steps / statistics.median(off):.2f} tok/s); "
      f"median paired difference {statistics.median(diff):+.2f}%; bytes per token {a['bytes']['per_token']:.0f}")
PY
