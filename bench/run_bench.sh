#!/bin/bash
# make bench: every benchmark of the suite, in turn, printing its tables.
# Figures worth keeping go to bench/RESULTS.md with the machine and date.
#   RUNS (default 3) repeats per setting where a script takes one.
set -u
cd "$(dirname "$0")/.."
B=${BUILD:-build}
RUNS=${RUNS:-3}
status=0
section() { printf '\n==== %s ====\n' "$*"; }
step() { "$@" || { echo "bench: '$*' failed" >&2; status=1; }; }

section "machine"
echo "$(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(date -u +%Y-%m-%d)"
section "kernels: read bandwidth, BF16 matvec, decode shapes, GEMM (1 thread)"
step "$B/bench/bench_kernels" -t 1 -r 5
section "engine: roofline, prefill, batching (omni48-small)"
step bench/engine.sh 1 "$RUNS"
section "expert parallelism: -np 1 vs -np 3"
step bench/mpi_overhead.sh "" 32 16 "$RUNS"
section "selection cost"
step bench/select.sh "$RUNS"
section "tokenizer: trustmoe vs @huggingface/tokenizers"
step bench/tokenizer.sh "$RUNS"
section "trust selection: perplexity and diversity (models/brown-moe)"
step bench/trust_eval.sh
exit $status
