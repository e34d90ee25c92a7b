#!/bin/bash
# Decode across emulated hosts at added one-way latency (bench/RESULTS.md,
# "Hosts, emulated: added latency").  Each host is a network namespace; the
# hosts talk through bench/netdelay, a userspace switch on TUN devices that
# holds every packet for the given delay (the kernel here has no netem).
# mpirun runs in the first namespace and starts orted in the others through
# an rsh agent (as tests/cli/mpi_netns.sh does); MPI and its out-of-band
# channel use TCP over the switch.  Needs root (namespaces, /dev/net/tun).
#   bench/mpi_latency.sh OUTDIR [DELAY_US ...]        default delays: 0 25 100
# Environment (defaults in brackets):
#   TRUSTMOE [build/trustmoe], NETDELAY [build/bench/netdelay]
#   MODEL [--synthetic omni48-small], NP [3] ranks, one per host, THREADS [1]
#   NEW_TOKENS [16], PROMPT_LEN [8], VOCAB: prompt ids below it [150000], MBIT [0: no rate limit]
#   EAGER: an extra run per delay with btl_tcp_eager_limit and
#          btl_tcp_rndv_eager_limit at EAGER bytes [unset: none]
# Per run: OUTDIR/NAME.json (--stats-json), NAME.err, the switch's summary
# in dDELAY.netdelay, and one line in OUTDIR/summary.txt: the median UDP
# round trip host 1 -> host 2 over the switch, decode ms/token, prefill ms,
# and per MoE layer call the wait, the slowest compute and the exchange
# overhead (mean; median over decode calls).
set -u
OUT=$1
shift
DELAYS=("$@")
[ ${#DELAYS[@]} -eq 0 ] && DELAYS=(0 25 100)
T=$(realpath "${TRUSTMOE:-build/trustmoe}")
ND=$(realpath "${NETDELAY:-build/bench/netdelay}")
MODEL=${MODEL:---synthetic omni48-small}
NP=${NP:-3}
TH=${THREADS:-1}
NEW=${NEW_TOKENS:-16}
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
id=$$
pre=tmd$id
net=10.$((200 + id % 50)).$(((id / 50) % 250))
ns=()
for i in $(seq 0 $((NP - 1))); do ns+=("tml${id}_$i"); done
nd_pid=""
cleanup() {
    [ -n "$nd_pid" ] && kill "$nd_pid" 2>/dev/null && wait "$nd_pid" 2>/dev/null
    for n in "${ns[@]}"; do ip netns del "$n" 2>/dev/null; done
}
trap cleanup EXIT
for n in "${ns[@]}"; do ip netns add "$n" || { echo "mpi_latency: cannot add network namespaces (root needed)" >&2; exit 1; }; done
for n in "${ns[@]}"; do ip -n "$n" link set lo up; done

# the "remote shell": tools/netns_agent.sh runs orted in the namespace of a host's address
export TRUSTMOE_NETNS="${ns[*]}"
AGENT=$(realpath "$(dirname "$0")/../tools/netns_agent.sh")
for i in $(seq 1 "$NP"); do echo "$net.$i slots=1"; done >"$OUT/hosts"
P=$(python3 -c "print(','.join(str((7919 * i + 104729) % ${VOCAB:-150000} + 1) for i in range(${PROMPT_LEN:-8})))")

# start_switch DELAY: the switch, its devices moved into the namespaces and addressed
# (a new device prefix per switch: the last one's devices may still be going)
k=0
start_switch() {
    k=$((k + 1))
    local p=$pre$k
    : >"$OUT/cur.ready"
    "$ND" -n "$NP" -d "$1" -r "${MBIT:-0}" "$p" >"$OUT/cur.ready" 2>"$OUT/cur.netdelay" &
    nd_pid=$!
    for _ in $(seq 100); do grep -q ready "$OUT/cur.ready" && break; sleep 0.1; done
    grep -q ready "$OUT/cur.ready" || { echo "mpi_latency: netdelay did not start: $(cat "$OUT/cur.netdelay")" >&2; exit 1; }
    for i in $(seq 0 $((NP - 1))); do
        ip link set "$p$i" netns "${ns[$i]}" || exit 1
        ip -n "${ns[$i]}" addr add "$net.$((i + 1))/24" dev "$p$i" || exit 1
        ip -n "${ns[$i]}" link set "$p$i" up || exit 1
    done
}
stop_switch() {
    kill "$nd_pid" 2>/dev/null
    wait "$nd_pid" 2>/dev/null
    nd_pid=""
}

# rtt: median UDP round trip host 1 -> host 2 over the switch, ms
rtt() {
    ip netns exec "${ns[1]}" python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 9999)); s.settimeout(5)
try:
    while True:
        d, a = s.recvfrom(64); s.sendto(d, a)
except socket.timeout:
    pass' "$net.2" &
    local echo_pid=$!
    sleep 0.3
    ip netns exec "${ns[0]}" python3 -c '
import socket, statistics, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
r = []
for i in range(200):
    t = time.perf_counter(); s.sendto(b"x", (sys.argv[1], 9999)); s.recvfrom(64); r.append(time.perf_counter() - t)
print("%.3f" % (1e3 * statistics.median(r[20:])))' "$net.2"
    kill $echo_pid 2>/dev/null
    wait $echo_pid 2>/dev/null
}

# one NAME DELAY [mpirun args]: a generate run over the switch
one() {
    local name=$1 d=$2
    shift 2
    local rt
    rt=$(rtt)
    local mca=(--mca plm_rsh_agent "$AGENT" --mca plm_rsh_no_tree_spawn 1 --mca oob_tcp_if_include "$net.0/24"
        --mca btl tcp,self --mca btl_tcp_if_include "$net.0/24" --mca mpi_yield_when_idle 1 "$@")
    # shellcheck disable=SC2086
    timeout -k 5 300 ip netns exec "${ns[0]}" unshare --uts sh -c 'hostname h1; exec "$@"' sh \
        mpirun --hostfile "$OUT/hosts" -np "$NP" "${mca[@]}" -x OPENBLAS_NUM_THREADS -x PATH -x LD_LIBRARY_PATH \
        "$T" generate $MODEL --ids "$P" -n "$NEW" --temp 0 -t "$TH" --comm-timeout 60 \
        --stats-json "$OUT/$name.json" >/dev/null 2>"$OUT/$name.err"
    local rc=$?
    python3 - "$OUT/$name.json" "$name" "$d" "$rt" "$rc" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
path, name, d, rtt, rc = sys.argv[1:]
try:
    j = json.load(open(path))
except Exception:
    print(f"{name}: delay {d} us: FAILED (exit {rc})"); sys.exit()
dec, pre = j["decode"], j.get("prefill", {})
ms = 1e3 * dec["seconds"] / max(dec["tokens"], 1)
pl = j["per_layer_us"]
print(f"{name}: delay {d} us, udp rtt {rtt} ms: decode {ms:.2f} ms/token, prefill {1e3 * pre.get('seconds', 0):.1f} ms, "
      f"per MoE call: wait {pl['dispatch_wait']:.1f} us, slowest compute {pl['slowest_compute']:.1f} us, "
      f"overhead mean {pl['exchange_overhead']:.1f} / decode median {pl['exchange_overhead_decode_median']:.1f} us")
PY
}

for d in "${DELAYS[@]}"; do
    start_switch "$d"
    one "d$d" "$d"
    [ -n "${EAGER:-}" ] && one "d${d}_eager" "$d" --mca btl_tcp_eager_limit "$EAGER" --mca btl_tcp_rndv_eager_limit "$EAGER"
    stop_switch
    mv "$OUT/cur.netdelay" "$OUT/d$d.netdelay"
    cat "$OUT/d$d.netdelay" >&2
done
