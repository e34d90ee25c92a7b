#!/bin/bash
# Errors that rank 0 finds before any expert runs (bad flags, a prompt without
# a tokenizer, a placement that cannot be built) end an MPI job with the
# command's one line and its exit code: the workers are told to stop and every
# rank finalizes, so there is no MPI_ABORT banner (mpirun -q drops the
# exit-status one).  Dead or silent ranks still abort (tests/cli/mpi_faults.sh).
set -u
T=${TRUSTMOE:-build/trustmoe}
FIX=tests/fixtures/qwen3moe-bf16
# Open MPI's own allocations show as leaks at exit under `make asan` (as in
# mpi_lib.bash); address and UB errors still break the one-line check.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
pass=0; fail=0
# expect NAME NP PATTERN -- ARGS...
expect() {
    local name=$1 np=$2 pat=$3; shift 4
    timeout 120 mpirun -q --oversubscribe -np "$np" "$T" "$@" >"$W/out" 2>"$W/err"
    local rc=$? why=""
    [ $rc -eq 2 ] || why="exit $rc, want 2"
    [ "$(wc -l <"$W/err")" -eq 1 ] || why="$why; $(wc -l <"$W/err") stderr lines, want 1"
    grep -qF -- "$pat" "$W/err" || why="$why; missing '$pat'"
    grep -q "MPI_ABORT\|ORTE_ERROR_LOG" "$W/err" && why="$why; MPI abort output"
    if [ -z "$why" ]; then pass=$((pass + 1)); echo "ok   $name: $(cat "$W/err")"
    else fail=$((fail + 1)); echo "FAIL $name: $why"; sed 's/^/     /' "$W/err" | head -12; fi
}
expect "text prompt without a tokenizer" 3 "tokenizer.json not found" -- generate -m $FIX -p hi
expect "an unknown flag, every rank alike" 3 "unknown option '--bogus'" -- generate -m $FIX --ids 1 --bogus
expect "--replicas beyond the workers" 2 "--replicas 2 needs at least 2 worker ranks" -- generate -m $FIX --ids 1 --replicas 2
expect "an unknown placement" 3 "none of contiguous, round-robin" -- logits -m $FIX --ids 1 -o "$W/l" --placement foo
expect "a missing model folder" 3 "no such folder" -- logits -m "$W/none" --ids 1 -o "$W/l"
# a good run afterwards: nothing was left behind, and -np 19 on 16 experts warns
timeout 120 mpirun -q --oversubscribe -np 19 "$T" generate -m $FIX --ids 1,2 -n 2 --temp 0 >"$W/out" 2>"$W/err"
rc=$?
if [ $rc -eq 0 ] && grep -q "warning: 2 of 18 worker ranks host no experts (ranks " "$W/err"; then
    pass=$((pass + 1)); echo "ok   -np 19 on 16 experts warns about idle workers"
else fail=$((fail + 1)); echo "FAIL -np 19 warning (exit $rc)"; sed 's/^/     /' "$W/err" | head -5; fi
# workers say nothing during generation unless -v
timeout 120 mpirun -q --oversubscribe -np 3 "$T" generate -m $FIX --ids 1,2 -n 2 --temp 0 >"$W/out" 2>"$W/err"
if ! grep -q "rank 1\|workers ready" "$W/err" && [ "$(wc -l <"$W/err")" -le 3 ]; then pass=$((pass + 1)); echo "ok   default: no per-rank lines"
else fail=$((fail + 1)); echo "FAIL default run prints per-rank lines"; sed 's/^/     /' "$W/err"; fi
timeout 120 mpirun -q --oversubscribe -np 3 "$T" generate -m $FIX --ids 1,2 -n 2 --temp 0 -v >"$W/out" 2>"$W/err"
grep -q "rank 1 (.*(layer, expert) instances" "$W/err" && { pass=$((pass + 1)); echo "ok   -v: per-rank lines name their units"; } \
    || { fail=$((fail + 1)); echo "FAIL -v per-rank lines"; sed 's/^/     /' "$W/err" | head; }
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
