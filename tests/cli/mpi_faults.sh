#!/bin/bash
# Faults are caught: the test-only switch TRUSTMOE_FAULT makes worker rank 1
# misbehave at decode step 2.  Every case must end the whole job with a
# non-zero status and a message naming the fault, within the deadline, and
# leave no process behind.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/cli/mpi_lib.bash

M=$FIX/qwen3moe-bf16
ids=$(prompt_ids qwen3moe-bf16 1)
DEADLINE=3   # --comm-timeout
LIMIT=40     # the whole job, start-up included, must end well within this

# fault NAME NP EXTRA-FLAGS EXPECTED-REGEX [SECOND-EXPECTED-REGEX]
fault() {
    local kind=$1 np=$2 extra=$3 want=$4 also=${5:-.}
    local marker=$TMP/fault-$kind.json
    local t0=$SECONDS rc
    TRUSTMOE_FAULT=$kind TRUSTMOE_FAULT_RANK=1 TRUSTMOE_FAULT_STEP=2 \
        timeout -k 5 $LIMIT mpirun --oversubscribe -np "$np" -x TRUSTMOE_FAULT -x TRUSTMOE_FAULT_RANK \
        -x TRUSTMOE_FAULT_STEP "$TRUSTMOE" generate -m "$M" --ids "$ids" -n 6 --temp 0 --json \
        --comm-timeout $DEADLINE --stats-json "$marker" $extra >"$TMP/out" 2>"$TMP/err"
    rc=$?
    local dt=$((SECONDS - t0))
    sleep 1
    local left
    left=$(pgrep -f -- "--stats-json $marker" | tr '\n' ' ')
    local line
    line=$(grep -E -m1 -- "$want" "$TMP/err")
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] && [ -n "$line" ] && [ -z "$left" ] &&
        [ "$dt" -lt $LIMIT ] && grep -q -E -- "$also" "$TMP/err"; then
        ok "fault $kind: exit $rc after ${dt}s: $line"
    else
        bad "fault $kind: exit $rc after ${dt}s, message '${line:-<none matching $want>}', processes left: '${left}'"
        sed 's/^/    /' "$TMP/err" | head -20
    fi
}

fault dtype 3 "" "field 'dtype': expected F32, received BF16"
fault dtype 3 "--wire-dtype bf16" "field 'dtype': expected BF16, received F32"
fault truncate 3 "" "payload truncated"
fault corrupt 3 "" "checksum mismatch"   # the checksum is on by default
fault exit 3 "" "TRUSTMOE_FAULT=exit: exiting at step 2" "exited with non-zero status|exited on signal"
fault silent 3 "" "timeout: no reply at step 2, layer [0-9]+ within $DEADLINE s .*rank 1 "
fault version 3 "" "build mismatch: worker rank 1"

# without a fault the same command succeeds (the switch is off by default)
if tm_mpirun $LIMIT 3 generate -m "$M" --ids "$ids" -n 6 --temp 0 --json --comm-timeout $DEADLINE \
    >"$TMP/out" 2>"$TMP/err"; then
    ok "no fault: the same job succeeds"
else
    bad "no fault: the job failed: $(grep -m1 trustmoe "$TMP/err")"
fi
finish
