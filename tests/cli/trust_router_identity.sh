#!/bin/bash
# --select router is the model's own routing: logits bit-identical to a run
# without any trust flag, in one process and over MPI (-np 3), also with a
# trained reputation database loaded; blend with that database does change
# the logits (the selector is really in the path).
set -u
cd "$(dirname "$0")/../.." || exit 2
T=${TRUSTMOE:-build/trustmoe}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0} # Open MPI's own allocations at exit
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
M=tests/fixtures/qwen3moe-bf16
python3 -c "import random; random.seed(5); print(' '.join(str(random.randrange(512)) for _ in range(2048)))" >"$W/corpus.txt"
if ! $T trust train -m $M --corpus "$W/corpus.txt" --trust-db "$W/t.db" --window 32 >/dev/null 2>"$W/err"; then
    bad "trust train: $(tail -1 "$W/err")"
fi
ids=3,1,4,1,5,9,2,6,5,3,5
for np in 1 3; do
    run() { if [ $np = 1 ]; then timeout 60 $T "$@"; else timeout -k 5 120 mpirun --oversubscribe -np 3 $T "$@"; fi; }
    run logits -m $M --ids $ids -o "$W/plain$np.f32" 2>"$W/err" || bad "-np $np plain: $(tail -1 "$W/err")"
    run logits -m $M --ids $ids -o "$W/router$np.f32" --select router 2>"$W/err" || bad "-np $np router: $(tail -1 "$W/err")"
    run logits -m $M --ids $ids -o "$W/routerdb$np.f32" --select router --trust-db "$W/t.db" 2>"$W/err" ||
        bad "-np $np router+db: $(tail -1 "$W/err")"
    run logits -m $M --ids $ids -o "$W/blend$np.f32" --select blend --alpha 0.5 --trust-db "$W/t.db" 2>"$W/err" ||
        bad "-np $np blend: $(tail -1 "$W/err")"
    cmp -s "$W/plain$np.f32" "$W/router$np.f32" && ok "-np $np: --select router is bitwise the run without trust" ||
        bad "-np $np: --select router differs"
    cmp -s "$W/plain$np.f32" "$W/routerdb$np.f32" && ok "-np $np: --select router with a trained database is bitwise the same" ||
        bad "-np $np: router with a database differs"
    if [ -s "$W/blend$np.f32" ] && ! cmp -s "$W/plain$np.f32" "$W/blend$np.f32"; then
        ok "-np $np: blend (alpha 0.5) with the trained database changes the logits"
    else
        bad "-np $np: blend left the logits unchanged"
    fi
done
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
