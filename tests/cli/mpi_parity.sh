#!/bin/bash
# Same answer at every scale: logits of -np 2, 3, 5 (contiguous, round-robin,
# --replicas 2) match -np 1 within 1e-5 x max|logit| with the same argmax;
# greedy generation gives identical ids; two runs with the same -np and
# placement are bitwise identical; mpirun -np 1 equals the plain run bitwise.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/cli/mpi_lib.bash

for fx in $FIXTURES; do
    M=$FIX/$fx
    V=$(vocab_of "$fx")
    np_last=$(($(n_prompts "$fx") - 1))
    for p in 1 $np_last; do
        ids=$(prompt_ids "$fx" "$p")
        ref=$TMP/$fx.$p.np1.f32
        if ! timeout 60 "$TRUSTMOE" logits -m "$M" --ids "$ids" -o "$ref" 2>"$TMP/err"; then
            bad "$fx prompt $p: single-process logits failed: $(tail -1 "$TMP/err")"
            continue
        fi
        if tm_mpirun 60 1 logits -m "$M" --ids "$ids" -o "$TMP/mp1.f32" 2>"$TMP/err" && cmp -s "$ref" "$TMP/mp1.f32"; then
            ok "$fx prompt $p: mpirun -np 1 is bitwise the plain run"
        else
            bad "$fx prompt $p: mpirun -np 1 differs or failed: $(tail -1 "$TMP/err")"
        fi
        for cfgline in "2 contiguous 1" "3 contiguous 1" "5 contiguous 1" "3 round-robin 1" "3 round-robin 2" \
            "5 contiguous 2" "5 round-robin 4"; do
            set -- $cfgline
            np=$1 pol=$2 rep=$3
            out=$TMP/$fx.$p.np$np.$pol.$rep.f32
            if ! tm_mpirun 120 "$np" logits -m "$M" --ids "$ids" -o "$out" --placement "$pol" --replicas "$rep" \
                --comm-timeout 30 2>"$TMP/err"; then
                bad "$fx prompt $p -np $np $pol replicas $rep: run failed: $(grep -m1 trustmoe "$TMP/err")"
                continue
            fi
            if msg=$(compare_logits "$ref" "$out" "$V" 1e-5); then
                ok "$fx prompt $p -np $np $pol replicas $rep: $msg"
            else
                bad "$fx prompt $p -np $np $pol replicas $rep: $msg"
            fi
        done
        # bitwise repeatability, same -np and placement
        out2=$TMP/$fx.$p.np3.again.f32
        if tm_mpirun 120 3 logits -m "$M" --ids "$ids" -o "$out2" --placement round-robin --replicas 2 2>"$TMP/err" &&
            cmp -s "$TMP/$fx.$p.np3.round-robin.2.f32" "$out2"; then
            ok "$fx prompt $p: two -np 3 runs are bitwise identical"
        else
            bad "$fx prompt $p: two -np 3 runs differ"
        fi
    done

    # greedy ids: -np 1 and -np 3 / 5 generate the same tokens
    ids=$(prompt_ids "$fx" 1)
    if ! timeout 60 "$TRUSTMOE" generate -m "$M" --ids "$ids" -n 8 --temp 0 --json >"$TMP/g1.json" 2>"$TMP/err"; then
        bad "$fx: single-process generate failed: $(tail -1 "$TMP/err")"
        continue
    fi
    g1=$(json_ids "$TMP/g1.json")
    for np in 3 5; do
        if tm_mpirun 120 "$np" generate -m "$M" --ids "$ids" -n 8 --temp 0 --json --placement round-robin \
            >"$TMP/g$np.json" 2>"$TMP/err" && [ "$(json_ids "$TMP/g$np.json")" = "$g1" ]; then
            ok "$fx: greedy ids with -np $np equal -np 1 ($g1)"
        else
            bad "$fx: greedy ids with -np $np: '$(json_ids "$TMP/g$np.json" 2>/dev/null)' vs '$g1'"
        fi
    done
done
finish
