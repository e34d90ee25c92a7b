# mpi_lib.bash: helpers sourced by tests/cli/mpi_*.sh (not a test itself).
# Expects BUILD and TRUSTMOE from tests/run_tests.sh (defaults for a manual run).
BUILD=${BUILD:-build}
TRUSTMOE=${TRUSTMOE:-$BUILD/trustmoe}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS=1
# Under `make asan`, Open MPI's own allocations (MCA components, op tables)
# are reported as leaks at exit; leak checking of our code is done by the unit
# tests.  Address and UB errors are still fatal here.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
FIX=tests/fixtures
FIXTURES="qwen3moe-bf16 qwen3moe-mixed-sharded omni-thinker-bf16"
TMP=$(mktemp -d /tmp/trustmoe-mpi.XXXXXX)
SERVER_PID=
# a server a test started and did not stop goes with the test
trap '[ -n "$SERVER_PID" ] && kill -9 $SERVER_PID 2>/dev/null; rm -rf "$TMP"' EXIT
n_pass=0
n_fail=0

ok() { n_pass=$((n_pass + 1)); echo "ok   $*"; }
bad() { n_fail=$((n_fail + 1)); echo "FAIL $*"; }
finish() {
    echo "$n_pass passed, $n_fail failed"
    [ "$n_fail" -eq 0 ]
    exit
}

# mpirun under a hard wall-clock limit; the rest of the arguments follow -np.
# usage: tm_mpirun SECONDS NP trustmoe-args...
tm_mpirun() {
    local limit=$1 np=$2
    shift 2
    timeout -k 5 "$limit" mpirun --oversubscribe -np "$np" "$TRUSTMOE" "$@"
}

# Prompt ids of a fixture's reference prompt number i, comma separated.
prompt_ids() {
    python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(",".join(map(str, m["prompts"][int(sys.argv[2])]["ids"])))' \
        "$FIX/$1/ref/manifest.json" "$2"
}
n_prompts() {
    python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["prompts"]))' "$FIX/$1/ref/manifest.json"
}

# compare_logits REF GOT VOCAB REL_TOL: max|got - ref| <= REL_TOL * max|ref|
# and the same argmax in every row.  Prints the measured relative error.
compare_logits() {
    python3 - "$@" <<'PY'
import struct, sys
ref_p, got_p, vocab, tol = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
def load(p):
    b = open(p, 'rb').read()
    if len(b) % 4: sys.exit(f"{p}: {len(b)} bytes is not float32")
    return struct.unpack('<%df' % (len(b) // 4), b)
a, b = load(ref_p), load(got_p)
if len(a) != len(b) or len(a) % vocab: sys.exit(f"shape: {len(a)} vs {len(b)} floats (vocab {vocab})")
m = max(abs(x) for x in a)
d = max(abs(x - y) for x, y in zip(a, b))
rel = d / m if m else d
rows = len(a) // vocab
am = lambda v, r: max(range(vocab), key=lambda j: v[r * vocab + j])
argmax_diff = [r for r in range(rows) if am(a, r) != am(b, r)]
print(f"max|ref| {m:.4g}, max|diff| {d:.3g}, relative {rel:.3g} (limit {tol:g}), argmax differs in rows {argmax_diff}")
sys.exit(0 if rel <= tol and not argmax_diff else 1)
PY
}

vocab_of() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["vocab"])' "$FIX/$1/ref/manifest.json"
}

# The "ids" list of a generate --json output file.
json_ids() {
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(",".join(map(str, d["ids"])))' "$1"
}

# ---- a server in the background (`trustmoe serve`, alone or under mpirun)

# start_server LOG PORTFILE CMD...: runs CMD in the background, waits for the port
start_server() {
    local log=$1 pf=$2; shift 2
    rm -f "$pf"
    "$@" >"$log.out" 2>"$log" &
    SERVER_PID=$!
    for _ in $(seq 300); do
        [ -s "$pf" ] && { PORT=$(cat "$pf"); return 0; }
        kill -0 $SERVER_PID 2>/dev/null || break
        sleep 0.1
    done
    echo "server did not start: $(cat "$log")"
    return 1
}
# stop_server NAME: SIGTERM, then the exit status within 20 s
stop_server() {
    kill -TERM $SERVER_PID
    for _ in $(seq 200); do
        kill -0 $SERVER_PID 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 $SERVER_PID 2>/dev/null; then
        bad "$1: still running 20 s after SIGTERM"
        kill -9 $SERVER_PID
        SERVER_PID=
        return
    fi
    wait $SERVER_PID
    local rc=$?
    SERVER_PID=
    [ $rc -eq 0 ] && ok "$1: exits 0 on SIGTERM" || bad "$1: exit $rc after SIGTERM"
}
