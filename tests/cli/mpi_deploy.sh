#!/bin/bash
# deploy/: the wrapper builds a working mpirun line (one-box --local run
# matches -np 1), prints it with --dry-run, refuses bad input; the Slurm
# script parses.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/cli/mpi_lib.bash

M=$FIX/qwen3moe-bf16
V=$(vocab_of qwen3moe-bf16)
ids=$(prompt_ids qwen3moe-bf16 2)
run=deploy/trustmoe-run.sh

line=$(TRUSTMOE=$TRUSTMOE bash $run -m "$M" -w 4 --hostfile deploy/hostfile.example --dry-run -- logits --ids 1,2 -o x 2>&1)
if echo "$line" | grep -q -- "-np 5" && echo "$line" | grep -q -- "--hostfile deploy/hostfile.example" &&
    echo "$line" | grep -q "OPENBLAS_NUM_THREADS=1" && echo "$line" | grep -q -- "--bind-to core"; then
    ok "wrapper --dry-run: $line"
else
    bad "wrapper --dry-run: $line"
fi
line=$(TRUSTMOE=$TRUSTMOE bash $run -m "$M" -w 2 --worker-model /elsewhere --dry-run -- logits --ids 1 -o x 2>&1)
if echo "$line" | grep -q -- "-np 1 .* -m $M .* : -np 2 .* -m /elsewhere" &&
    [ "$(echo "$line" | grep -o "OPENBLAS_NUM_THREADS=1" | wc -l)" = 2 ]; then
    ok "wrapper --worker-model writes an MPMD line, -x in each app context"
else
    bad "wrapper --worker-model: $line"
fi
line=$(TRUSTMOE=$TRUSTMOE bash $run -m "$M" -w 2 --local --cores-per-rank 1 --dry-run -- logits --ids 1 -o x 2>&1)
want_t0=$(($(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc) - 2))
[ "$want_t0" -ge 1 ] || want_t0=1
want_share=$(awk -v a="$want_t0" 'BEGIN { printf "%.4g", 1 - 2 / (a + 2) / 2 }') # half the workers' threads
if echo "$line" | grep -q -- "--coordinator-share $want_share " &&
    { [ "$want_t0" = 1 ] || echo "$line" | grep -q -- "-np 1 .* -t $want_t0 .* : -np 2 .* -t 1 "; }; then
    ok "wrapper --local gives rank 0 the cores the workers leave, and all but half the workers' share of the experts"
else
    bad "wrapper --local layout: $line"
fi
if ! TRUSTMOE=$TRUSTMOE bash $run -m /nonexistent -w 2 -- logits >/dev/null 2>&1 &&
    ! TRUSTMOE=$TRUSTMOE bash $run -m "$M" -w x -- logits >/dev/null 2>&1; then
    ok "wrapper refuses a missing model and a bad worker count"
else
    bad "wrapper accepted bad input"
fi

timeout 60 "$TRUSTMOE" logits -m "$M" --ids "$ids" -o "$TMP/ref.f32" 2>/dev/null
if TRUSTMOE=$TRUSTMOE timeout -k 5 120 bash $run -m "$M" -w 2 --local --placement round-robin -- \
    logits --ids "$ids" -o "$TMP/w.f32" >/dev/null 2>"$TMP/err" &&
    msg=$(compare_logits "$TMP/ref.f32" "$TMP/w.f32" "$V" 1e-5); then
    ok "wrapper --local -w 2 run matches -np 1: $msg"
else
    bad "wrapper --local run: $(grep -m1 trustmoe "$TMP/err") ${msg:-}"
fi
if bash -n deploy/trustmoe.slurm; then ok "Slurm script parses"; else bad "Slurm script syntax"; fi
finish
