#!/bin/bash
# Hosts, emulated: three Linux network namespaces, each with its own address
# on one bridge and its own hostname, stand in for three nodes.  mpirun runs
# in the first; an rsh agent starts orted in the others through
# `ip netns exec`, and the ranks talk TCP between them.  Checks that -np 3
# (one rank per "host") gives the -np 1 logits within 1e-5 and that the
# handshake saw three hosts.  Skipped, with one line, where namespaces are
# not permitted (not root, no CAP_NET_ADMIN).
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/cli/mpi_lib.bash

id=$$
ns=(tmn${id}a tmn${id}b tmn${id}c)
br=tmb$id
net=10.$((200 + id % 50)).$(((id / 50) % 250))
cleanup_ns() {
    for n in "${ns[@]}"; do ip netns del "$n" 2>/dev/null; done
    ip link del "$br" 2>/dev/null
}
trap 'cleanup_ns; rm -rf "$TMP"' EXIT
if ! ip netns add "${ns[0]}" 2>"$TMP/err"; then
    echo "skip: network namespaces are not permitted here ($(head -1 "$TMP/err"))"
    finish
fi
setup() {
    ip link add "$br" type bridge && ip link set "$br" up || return 1
    for i in 0 1 2; do
        n=${ns[$i]}
        [ "$i" = 0 ] || ip netns add "$n" || return 1
        ip link add "tmv${id}$i" type veth peer name eth0 netns "$n" || return 1
        ip link set "tmv${id}$i" master "$br" up || return 1
        ip -n "$n" addr add "$net.$((i + 1))/24" dev eth0 || return 1
        ip -n "$n" link set eth0 up && ip -n "$n" link set lo up || return 1
    done
}
if ! setup 2>"$TMP/err"; then
    echo "skip: cannot build the namespaces' network ($(head -1 "$TMP/err"))"
    finish
fi

# the "remote shell": tools/netns_agent.sh runs orted in the namespace of a host's address, as host hN
export TRUSTMOE_NETNS="${ns[*]}"
for i in 1 2 3; do echo "$net.$i slots=1"; done >"$TMP/hosts"

M=$FIX/qwen3moe-bf16
V=$(vocab_of qwen3moe-bf16)
ids=$(prompt_ids qwen3moe-bf16 1)
timeout 60 "$TRUSTMOE" logits -m "$M" --ids "$ids" -o "$TMP/ref.f32" 2>/dev/null
mca=(--mca plm_rsh_agent "$PWD/tools/netns_agent.sh" --mca plm_rsh_no_tree_spawn 1 --mca oob_tcp_if_include "$net.0/24"
    --mca btl tcp,self --mca btl_tcp_if_include "$net.0/24" --mca mpi_yield_when_idle 1)
if timeout -k 5 120 ip netns exec "${ns[0]}" unshare --uts sh -c 'hostname h1; exec "$@"' sh \
    mpirun --hostfile "$TMP/hosts" -np 3 "${mca[@]}" -x OPENBLAS_NUM_THREADS -x PATH -x LD_LIBRARY_PATH \
    "$PWD/$TRUSTMOE" logits -m "$PWD/$M" --ids "$ids" -o "$TMP/ns.f32" --comm-timeout 30 \
    --stats-json "$TMP/s.json" >/dev/null 2>"$TMP/err" &&
    msg=$(compare_logits "$TMP/ref.f32" "$TMP/ns.f32" "$V" 1e-5); then
    ok "-np 3 over three network namespaces (TCP) matches -np 1: $msg"
else
    bad "-np 3 over three network namespaces: $(grep -m2 -i "trustmoe\|error" "$TMP/err" | tr '\n' ' ') ${msg:-}"
fi
hosts=$(python3 -c 'import json,sys; print(" ".join(sorted(r["host"] for r in json.load(open(sys.argv[1]))["ranks_detail"])))' \
    "$TMP/s.json" 2>/dev/null)
if [ "$hosts" = "h1 h2 h3" ]; then
    ok "each rank ran on its own emulated host ($hosts)"
else
    bad "ranks' hosts: '$hosts' (want h1 h2 h3)"
fi
finish
