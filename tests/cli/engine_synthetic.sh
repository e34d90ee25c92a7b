#!/bin/bash
# --synthetic PRESET builds in memory exactly the weights mkmodel writes.
set -u
T=${TRUSTMOE:-build/trustmoe}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
fail=0
declare -a ids
for seed in 0 7; do
    $T mkmodel --preset tiny --seed $seed -o "$W/tiny$seed" >/dev/null || { echo "FAIL mkmodel"; exit 1; }
    $T logits -m "$W/tiny$seed" --ids 1,2,3,500 -o "$W/file.f32" 2>/dev/null || fail=1
    $T logits --synthetic tiny --synthetic-seed $seed --ids 1,2,3,500 -o "$W/mem.f32" 2>/dev/null || fail=1
    if cmp -s "$W/file.f32" "$W/mem.f32"; then echo "ok   seed $seed: synthetic logits equal the mkmodel folder's"
    else echo "FAIL seed $seed: logits differ"; fail=1; fi
    ids[$seed]=$($T inspect --synthetic tiny --synthetic-seed $seed | grep identity)
    again=$($T inspect --synthetic tiny --synthetic-seed $seed | grep identity)
    [ "${ids[$seed]}" = "$again" ] && echo "ok   seed $seed: stable identity (${ids[$seed]})" || { echo "FAIL identity unstable"; fail=1; }
done
[ "${ids[0]}" != "${ids[7]}" ] && echo "ok   seeds 0 and 7 have different identities" || { echo "FAIL seeds share an identity"; fail=1; }
$T logits --synthetic nosuch --ids 1 -o "$W/x" 2>"$W/err"; rc=$?
if [ $rc -eq 2 ] && grep -q "unknown preset" "$W/err"; then echo "ok   unknown preset: $(cat "$W/err")"; else echo "FAIL unknown preset (rc $rc)"; fail=1; fi
exit $fail
