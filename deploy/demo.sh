#!/bin/bash
# The demo: a coordinator and two workers (mpirun -np 3) generate greedily with
# trust-based expert selection, then print the text, tokens per second, the
# per-layer expert load and the trust statistics.
#
#   deploy/demo.sh ["PROMPT"]          the trained models/brown-moe (8 layers, 16 experts)
#   deploy/demo.sh --omni48-small      the same pipeline on the 48-layer, 128-expert
#                                      synthetic omni48-small, built in memory (ids in,
#                                      ids out: a synthetic model has no tokenizer)
#
# The first run fits 4 contexts and trains the reputation database
# build/demo-trust.db on the first 64 windows of the held-out text.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s build/trustmoe
T=build/trustmoe
root=()
[ "$(id -u)" -eq 0 ] && root=(--allow-run-as-root)
# -q: an error is trustmoe's one line, without mpirun's exit-status banner
MPIRUN=(mpirun -q "${root[@]}" --oversubscribe -np 3 -x OPENBLAS_NUM_THREADS=1)
SELECT=(--select blend --alpha 0.95)

if [ "${1:-}" = "--omni48-small" ]; then
    # a synthetic model has no corpus to train a reputation on: blend over
    # an empty database would be the router's choice with a table of zeros
    echo "demo: omni48-small has no trained reputation, so it selects with the router (--select router)" >&2
    set -x
    "${MPIRUN[@]}" $T generate --synthetic omni48-small --ids 9707,1879,374,264,1273 -n 16 --temp 0 \
        --select router --stats-json build/demo-omni48-stats.json
    exit
fi

M=models/brown-moe
DB=build/demo-trust.db
if [ ! -f "$DB" ]; then
    echo "demo: training the reputation database $DB (first run only)" >&2
    $T trust fit-contexts -m $M --corpus $M/heldout.txt --trust-db $DB --contexts 4 --max-windows 64 >&2
    $T trust train -m $M --corpus $M/heldout.txt --trust-db $DB --max-windows 64 >&2
fi
set -x
"${MPIRUN[@]}" $T generate -m $M -p "${1:-The jury said}" -n 40 --temp 0 "${SELECT[@]}" --trust-db $DB \
    --stats-json build/demo-stats.json
