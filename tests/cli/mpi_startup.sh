#!/bin/bash
# A rank that stops during MPI start-up does not hang the job: the other
# ranks wait in MPI_Init, and their start-up watchdog ends them after
# --idle-timeout with one line naming the limit.  TRUSTMOE_FAULT=startup-stall
# makes rank TRUSTMOE_FAULT_RANK stop itself (SIGSTOP) before MPI_Init.  The
# job must end non-zero, no sooner than the timeout and well within LIMIT,
# and leave no process behind (the stopped one included).
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/cli/mpi_lib.bash

M=$FIX/qwen3moe-bf16
ids=$(prompt_ids qwen3moe-bf16 1)
IDLE=4     # --idle-timeout
LIMIT=60   # the whole job must end well within this

# stall RANK NP
stall() {
    local rank=$1 np=$2
    local marker=$TMP/stall-$rank.json
    local t0=$SECONDS rc
    TRUSTMOE_FAULT=startup-stall TRUSTMOE_FAULT_RANK=$rank \
        timeout -k 5 $LIMIT mpirun --oversubscribe -np "$np" -x TRUSTMOE_FAULT -x TRUSTMOE_FAULT_RANK \
        "$TRUSTMOE" generate -m "$M" --ids "$ids" -n 4 --temp 0 --idle-timeout $IDLE \
        --stats-json "$marker" >"$TMP/out" 2>"$TMP/err"
    rc=$?
    local dt=$((SECONDS - t0))
    sleep 1
    local left line fired
    left=$(pgrep -f -- "--stats-json $marker" | tr '\n' ' ')
    line=$(grep -E -m1 -- "^trustmoe: rank [0-9]+ \([^)]*\): start-up did not complete within $IDLE s \(--idle-timeout\)" \
        "$TMP/err")
    fired=$(grep -c -- "rank $rank: TRUSTMOE_FAULT=startup-stall: stopping before MPI_Init" "$TMP/err")
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] && [ -n "$line" ] && [ "$fired" -ge 1 ] &&
        [ -z "$left" ] && [ "$dt" -ge $IDLE ] && [ "$dt" -lt $LIMIT ] && ! grep -q . "$TMP/out" &&
        [ ! -e "$marker" ]; then
        ok "rank $rank stopped at start-up (-np $np): exit $rc after ${dt}s: $line"
    else
        bad "rank $rank stopped at start-up (-np $np): exit $rc after ${dt}s, fault fired: $fired," \
            "message '${line:-<none>}', processes left: '${left}'"
        sed 's/^/    /' "$TMP/err" | head -20
        [ -n "$left" ] && kill -9 $left 2>/dev/null
    fi
}

stall 2 3   # a worker
stall 0 3   # the coordinator

# with every rank running, the same short limit does not cut start-up off
if tm_mpirun $LIMIT 3 generate -m "$M" --ids "$ids" -n 4 --temp 0 --idle-timeout $IDLE >"$TMP/out" 2>"$TMP/err" &&
    ! grep -q "start-up did not complete" "$TMP/err"; then
    ok "no fault: the job with --idle-timeout $IDLE succeeds"
else
    bad "no fault: the job failed: $(grep -m1 trustmoe "$TMP/err")"
fi
finish
