#!/bin/bash
# Replays every fuzz harness's seed corpus and recorded crashes
# (tests/fuzz/corpus/NAME, tests/fuzz/crashes/NAME) through the harness built
# with the project's compiler: each input must return without a crash or a
# sanitizer report.
set -u
BUILD=${BUILD:-build}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
pass=0; fail=0
for src in tests/fuzz/fuzz_*.c; do
    n=$(basename "$src" .c); n=${n#fuzz_}
    bin="$BUILD/fuzz/replay_$n"
    if [ ! -x "$bin" ]; then fail=$((fail + 1)); echo "FAIL $n: $bin not built"; continue; fi
    if out=$(timeout 120 "$bin" "tests/fuzz/corpus/$n" "tests/fuzz/crashes/$n" 2>&1) &&
        ! grep -q "AddressSanitizer\|runtime error" <<<"$out"; then
        pass=$((pass + 1)); echo "ok   $n: $(grep -c inputs <<<"$out") folders, $(tail -n 1 <<<"$out")"
    else
        fail=$((fail + 1)); echo "FAIL $n"; tail -n 20 <<<"$out" | sed 's/^/     /'
    fi
done
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
