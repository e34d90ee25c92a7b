#!/bin/bash
# SIGKILL `trustmoe trust train` during updates: the database must then pass
# PRAGMA integrity_check (trust check) and hold exactly the windows its
# progress count says were committed: a clean run of that many windows dumps
# the same entries (trust dump).
set -u
TRUSTMOE=${TRUSTMOE:-build/trustmoe}
MODEL=tests/fixtures/qwen3moe-bf16
dir=$(mktemp -d /tmp/trust_crash_cli.XXXXXX)
trap 'rm -rf "$dir"' EXIT
awk 'BEGIN { srand(7); for (i = 0; i < 200000; i++) print int(rand() * 512) }' >"$dir/corpus.ids"
rounds=0
for try in 1 2 3 4 5 6 7 8; do
    [ "$rounds" -ge 3 ] && break
    rm -f "$dir"/killed.db* "$dir"/redo.db*
    "$TRUSTMOE" trust train -m "$MODEL" --corpus "$dir/corpus.ids" --trust-db "$dir/killed.db" \
        --window 32 >/dev/null 2>&1 &
    pid=$!
    sleep "0.$((RANDOM % 5 + 1))"
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    [ -e "$dir/killed.db" ] || continue   # killed before it created the database (check opens read-only)
    out=$("$TRUSTMOE" trust check --trust-db "$dir/killed.db") || { echo "FAIL: integrity_check: $out"; exit 1; }
    n=$(printf '%s\n' "$out" | sed -n 's/^progress .*: \([0-9]*\) windows$/\1/p')
    [ -z "$n" ] && continue   # killed before the first window committed
    "$TRUSTMOE" trust train -m "$MODEL" --corpus "$dir/corpus.ids" --trust-db "$dir/redo.db" \
        --window 32 --max-windows "$n" >/dev/null 2>&1 || { echo "FAIL: clean run of $n windows"; exit 1; }
    "$TRUSTMOE" trust dump --trust-db "$dir/killed.db" >"$dir/killed.txt"
    "$TRUSTMOE" trust dump --trust-db "$dir/redo.db" >"$dir/redo.txt"
    if ! cmp -s "$dir/killed.txt" "$dir/redo.txt" || [ ! -s "$dir/killed.txt" ]; then
        echo "FAIL: killed after $n windows, the database differs from a clean run of $n windows"
        exit 1
    fi
    echo "killed after $n committed windows: integrity ok, state equals a clean run"
    rounds=$((rounds + 1))
done
[ "$rounds" -ge 3 ] || { echo "FAIL: only $rounds rounds were killed mid-run"; exit 1; }
echo "1 passed, 0 failed"
