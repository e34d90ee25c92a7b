#!/bin/bash
# The source folders include each other only downwards (tools/check_layers.py),
# and the check itself catches a cycle and an upward include.
set -u
cd "$(dirname "$0")/../.." || exit 2
fail=0
if python3 tools/check_layers.py >/dev/null; then echo "ok   the tree's includes follow the layers, no cycle"
else python3 tools/check_layers.py; fail=1; fi

W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
copy() { rm -rf "$W/t"; mkdir -p "$W/t"; cp -r core proto engine cluster worker coordinator "$W/t/"; }

copy # the engine reaching up into the commands
sed -i "s/^#include \"arena.h\"/#include \"arena.h\"\n#include \"cli.h\"/" "$W/t/engine/model.h"
out=$(python3 tools/check_layers.py "$W/t")
if [ $? -ne 0 ] && grep -q 'engine/model.h: includes coordinator/cli/cli.h' <<<"$out"; then
    echo "ok   an upward include is reported"
else echo "FAIL an upward include was not reported: $out"; fail=1; fi

copy # two trust modules that include each other
sed -i "s/^#include <stdint.h>/#include <stdint.h>\n#include \"trust_select.h\"/" "$W/t/coordinator/trust/trust_rep.h"
out=$(python3 tools/check_layers.py "$W/t")
if [ $? -ne 0 ] && grep -q 'include cycle: .*trust_rep.*trust_select\|include cycle: .*trust_select.*trust_rep' <<<"$out"; then
    echo "ok   a cycle is reported"
else echo "FAIL a cycle was not reported: $out"; fail=1; fi
exit $fail
