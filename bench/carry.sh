#!/bin/bash
# Packs the binaries built here and the shared libraries they need (except
# MPI's, which the other host brings) into one folder, to run the benchmarks
# on a host that has Open MPI but not this project's Debian packages.
#   bench/carry.sh DIR [BINARY ...]      default binaries: build/trustmoe build/bench/bench_kernels
# On the other host:  source DIR/env.sh   (sets LD_LIBRARY_PATH to the
# carried libraries that host lacks; the host's own copies win).
set -eu
DIR=$1
shift
BINS=("$@")
[ ${#BINS[@]} -eq 0 ] && BINS=(build/trustmoe build/bench/bench_kernels)
mkdir -p "$DIR/bin" "$DIR/lib"
for b in "${BINS[@]}"; do cp "$b" "$DIR/bin/"; done
# every library the binaries load, less the C runtime and MPI's own tree
ldd "${BINS[@]}" | awk '$3 ~ /^\// {print $1, $3}' | sort -u | while read -r name path; do
    case $name in
    libc.so* | libm.so* | libpthread* | libdl* | librt* | ld-linux* | libmpi* | libopen-* | libhwloc* | libevent* | \
        libudev* | libz.so*) continue ;;
    esac
    cp -L "$path" "$DIR/lib/$name"
done
cat >"$DIR/env.sh" <<'EOF'
# sourced on the other host: the carried libraries the host does not have
_carry=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$_carry/use"
for _l in "$_carry"/lib/*; do
    _n=$(basename "$_l")
    ldconfig -p | grep -q "^[[:space:]]*$_n " || ln -sf "$_l" "$_carry/use/$_n"
done
export LD_LIBRARY_PATH="$_carry/use${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$_carry/bin:$PATH"
unset _carry _l _n
EOF
du -sh "$DIR"
