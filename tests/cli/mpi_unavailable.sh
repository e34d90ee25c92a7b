#!/bin/bash
# Workers declared unavailable (--unavailable R,...): the experts only they
# host are masked, so the router's next best take their slots and no token
# row reaches them.  -np 3 with worker 2 out gives the ids of -np 1 with
# --mask naming worker 2's experts (contiguous placement), and rank 2's
# token rows are 0; -np 5 with two of four workers out, the same against
# their experts; the server likewise; bad lists, every worker out, replicas
# and a run without workers end with one line and exit 2.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/cli/mpi_lib.bash

M=models/brown-moe
P="The jury said"
# mask_of NP RANK...: a --mask file of the experts the contiguous placement
# gives those worker ranks among NP-1 workers (16 experts per layer)
mask_of() {
    local np=$1
    shift
    python3 - "$np" "$@" <<'PY'
import sys
np, ranks = int(sys.argv[1]), [int(r) for r in sys.argv[2:]]
W, E = np - 1, 16
for e in range(E):
    if e * W // E + 1 in ranks:
        print(f"* {e}")
PY
}
for cfgline in "3 2" "5 1,3"; do
    set -- $cfgline
    np=$1 out=$2
    mask_of "$np" ${out//,/ } >"$TMP/mask"
    timeout 60 "$TRUSTMOE" generate -m $M -p "$P" -n 16 --temp 0 --mask "$TMP/mask" --json >"$TMP/ref.json" 2>/dev/null
    if tm_mpirun 120 "$np" generate -m $M -p "$P" -n 16 --temp 0 --unavailable "$out" --json \
        --stats-json "$TMP/s.json" >"$TMP/got.json" 2>"$TMP/err"; then
        want=$(json_ids "$TMP/ref.json") got=$(json_ids "$TMP/got.json")
        rows=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); out={int(r) for r in sys.argv[2].split(",")}
print(sum(r["token_rows"] for r in d["ranks_detail"] if r["rank"] in out), sum(r["token_rows"] for r in d["ranks_detail"] if r["rank"] not in out and r["rank"] > 0))' \
            "$TMP/s.json" "$out")
        set -- $rows
        if [ "$got" = "$want" ] && [ "$1" = 0 ] && [ "$2" -gt 0 ]; then
            ok "-np $np --unavailable $out: the ids of -np 1 with their experts masked; their token rows 0, the others' $2"
        else
            bad "-np $np --unavailable $out: ids $got against $want; rows to them $1, to the others $2"
        fi
    else
        bad "-np $np --unavailable $out: $(grep -m1 trustmoe "$TMP/err")"
    fi
done
# the server: a greedy completion under -np 3 --unavailable 2 is the text of
# -np 1 with --mask, and rank 2 evaluates no (token, expert) pair
mask_of 3 2 >"$TMP/mask"
want=$(timeout 60 "$TRUSTMOE" generate -m $M -p "$P" -n 12 --temp 0 --mask "$TMP/mask" --json 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["text"])')
if start_server "$TMP/serr" "$TMP/port" timeout -k 5 120 mpirun --oversubscribe -np 3 "$TRUSTMOE" serve -m $M \
    --port 0 --port-file "$TMP/port" --unavailable 2; then
    url=http://127.0.0.1:$PORT
    got=$(curl -s "$url/v1/completions" -d "{\"model\":\"brown-moe\",\"prompt\":\"$P\",\"max_tokens\":12,\"temperature\":0}" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["text"])' 2>/dev/null)
    r2=$(curl -s "$url/metrics" | sed -n 's/^trustmoe_rank_expert_tokens_total{rank="2"} //p')
    if [ -n "$got" ] && [ "$got" = "$want" ] && [ "$r2" = 0 ]; then
        ok "serve -np 3 --unavailable 2: the completion of -np 1 with --mask; rank 2 evaluated 0 pairs"
    else
        bad "serve -np 3 --unavailable 2: '$got' against '$want'; rank 2 evaluated '$r2' pairs"
    fi
    # SIGTERM to rank 0 ends the job cleanly (to mpirun, Open MPI kills the ranks)
    kill -TERM "$(sed -n 's/.*trustmoe serve: model .*; pid \([0-9]*\)).*/\1/p' "$TMP/serr")"
    wait $SERVER_PID
    rc=$?
    SERVER_PID=
    [ $rc -eq 0 ] && ok "serve -np 3 --unavailable 2: SIGTERM to rank 0 ends the job, exit 0" ||
        bad "serve -np 3 --unavailable 2: exit $rc after SIGTERM to rank 0"
else
    bad "serve -np 3 --unavailable 2 did not start: $(head -2 "$TMP/serr")"
fi

# refusals: one line, exit 2, no rank left behind
while IFS='|' read -r np args want; do
    # shellcheck disable=SC2086
    if [ "$np" = 1 ]; then
        timeout 60 "$TRUSTMOE" generate -m $M -p "$P" -n 2 $args </dev/null >/dev/null 2>"$TMP/err"
    else # (mpirun would read the rest of this loop's input)
        timeout -k 5 60 mpirun -q --oversubscribe -np "$np" "$TRUSTMOE" generate -m $M -p "$P" -n 2 $args \
            </dev/null >/dev/null 2>"$TMP/err"
    fi
    rc=$?
    if [ $rc -eq 2 ] && [ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -qF -- "$want" "$TMP/err"; then
        ok "-np $np $args: exit 2, $(cat "$TMP/err")"
    else
        bad "-np $np $args: exit $rc, $(head -3 "$TMP/err")"
    fi
done <<'EOF2'
3|--unavailable 1,2|every worker
3|--unavailable 3|not a worker of this job
3|--unavailable 2,x|not a list of worker ranks
3|--unavailable 2 --replicas 2|not with --replicas
1|--unavailable 1|needs an MPI job with workers
EOF2
finish
