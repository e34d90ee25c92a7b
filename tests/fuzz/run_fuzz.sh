#!/bin/bash
# run_fuzz.sh BUILD SECONDS NAME...: runs each libFuzzer harness for SECONDS,
# one at a time, from its seed corpus (tests/fuzz/corpus/NAME, read-only) and
# a growing work corpus in BUILD/fuzz-corpus/NAME.  A crash is written to
# tests/fuzz/crashes/NAME/, which `make test` replays from then on.
set -u
build=$1 seconds=$2
shift 2
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
status=0
for n in "$@"; do
    work="$build/fuzz-corpus/$n"
    mkdir -p "$work" "tests/fuzz/crashes/$n"
    echo "== $n: ${seconds} s"
    nice "$build/fuzz/fuzz_$n" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -max_len=65536 \
        -artifact_prefix="tests/fuzz/crashes/$n/" "$work" "tests/fuzz/corpus/$n" 2>"$build/fuzz-$n.log"
    rc=$?
    grep -E "^Done|stat::number_of_executed_units|SUMMARY" "$build/fuzz-$n.log" | tail -n 2
    [ $rc -eq 0 ] || { status=1; echo "   $n: exit $rc, see $build/fuzz-$n.log"; }
    rmdir "tests/fuzz/crashes/$n" 2>/dev/null
done
exit $status
