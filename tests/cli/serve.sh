#!/bin/bash
# `trustmoe serve` end to end: the OpenAI API checked by tests/cli/serve_client.py
# (greedy completions equal `generate`, streaming, stops, logprobs, concurrent
# requests, every bad-input class), 429 past the queue bound, bad flags, a
# clean stop on SIGTERM, and the same answers from a coordinator and two
# workers under mpirun.
cd "$(dirname "$0")/../.." || exit 2
source tests/cli/mpi_lib.bash
M=models/brown-moe

expected=$("$TRUSTMOE" generate -m $M -p "The jury said" -n 12 --temp 0 2>/dev/null)

if start_server "$TMP/s1" "$TMP/p1" "$TRUSTMOE" serve -m $M --port 0 --port-file "$TMP/p1" --max-body 65536; then
    if python3 tests/cli/serve_client.py "$PORT" brown-moe "$expected" >"$TMP/client1" 2>&1; then
        ok "API checks: $(tail -1 "$TMP/client1")"
    else
        bad "API checks:"; grep -v '^ok' "$TMP/client1" | head -20
    fi
    # a second server on the same port cannot listen
    "$TRUSTMOE" serve -m $M --port "$PORT" >/dev/null 2>"$TMP/busy"; rc=$?
    [ $rc -eq 2 ] && grep -q "cannot listen" "$TMP/busy" && [ "$(wc -l <"$TMP/busy")" -eq 1 ] &&
        ok "port in use: exit 2, $(cat "$TMP/busy")" || bad "port in use: rc $rc, $(cat "$TMP/busy")"
    stop_server "one process"
else
    bad "one-process server did not start"
fi

if start_server "$TMP/s2" "$TMP/p2" "$TRUSTMOE" serve -m $M --port 0 --port-file "$TMP/p2" --max-seqs 1 --max-queue 0; then
    python3 tests/cli/serve_client.py "$PORT" brown-moe --capacity >"$TMP/client2" 2>&1 &&
        ok "capacity: $(grep 429 "$TMP/client2")" || { bad "capacity:"; cat "$TMP/client2"; }
    stop_server "capacity server"
else
    bad "capacity server did not start"
fi

for args in "--port 70000" "--host 300.1.2.3" "--max-seqs 0" "--ctx-size 100000" "--batch-wait -1" "--batch-wait 5000"; do
    # shellcheck disable=SC2086
    "$TRUSTMOE" serve -m $M $args >/dev/null 2>"$TMP/e"; rc=$?
    [ $rc -eq 2 ] && [ "$(wc -l <"$TMP/e")" -eq 1 ] && ok "serve $args: exit 2, $(cat "$TMP/e")" ||
        bad "serve $args: rc $rc, $(cat "$TMP/e")"
done

# SIGTERM while a request streams (sent by the client once its first token is
# in): it finishes within the grace period; with no grace it is cut short, and
# either way the stream ends properly and the server exits 0
stream_stop() { # NAME LOG PORTFILE TOKENS WANT(regex) SERVER-ARGS...
    local name=$1 log=$2 pf=$3 n=$4 want=$5; shift 5
    if start_server "$log" "$pf" "$TRUSTMOE" serve -m $M --port 0 --port-file "$pf" "$@"; then
        python3 tests/cli/serve_client.py "$PORT" brown-moe --stream "The jury said" "$n" $SERVER_PID >"$log.c"
        wait $SERVER_PID; local rc=$?
        [ $rc -eq 0 ] && ok "$name: exits 0" || bad "$name: exit $rc"
        grep -Eq "$want" "$log.c" && ok "$name: $(cat "$log.c")" || bad "$name: $(cat "$log.c") (want $want)"
    else
        bad "$name: server did not start"
    fi
}
stream_stop "SIGTERM during a stream, grace 10 s" "$TMP/s5" "$TMP/p5" 60 "^200 length 60 DONE$"
stream_stop "SIGTERM during a stream, no grace" "$TMP/s6" "$TMP/p6" 400 "^200 abort [0-9]+ DONE$" --shutdown-grace 0

# a coordinator and two workers: the same greedy answer; SIGTERM to rank 0
# stops the job in order (exit 0), SIGTERM to mpirun leaves no rank behind
MPI_SERVE=(timeout -k 5 120 mpirun --oversubscribe -np 3 "$TRUSTMOE" serve -m $M --port 0 -v)
if start_server "$TMP/s3" "$TMP/p3" "${MPI_SERVE[@]}" --port-file "$TMP/p3"; then
    got=$(python3 tests/cli/serve_client.py "$PORT" brown-moe --greedy "The jury said" 12)
    [ "$got" == "$expected" ] && ok "mpirun -np 3: completion equals one-process generate" ||
        bad "mpirun -np 3: [$got] vs [$expected]"
    grep -q "2 workers ready" "$TMP/s3" && ok "mpirun -np 3: two workers hold the experts" ||
        bad "mpirun -np 3: no workers? $(head -5 "$TMP/s3")"
    MPIRUN_PID=$SERVER_PID
    SERVER_PID=$(sed -n 's/.*trustmoe serve: model .*; pid \([0-9]*\)).*/\1/p' "$TMP/s3")
    python3 tests/cli/serve_client.py "$PORT" brown-moe --stream "The jury said" 60 "$SERVER_PID" >"$TMP/c3"
    wait $MPIRUN_PID; rc=$?
    [ $rc -eq 0 ] && grep -q "stopping (signal)" "$TMP/s3" && ok "mpirun -np 3: SIGTERM to rank 0 stops the job, exit 0" ||
        bad "mpirun -np 3: exit $rc after SIGTERM to rank 0"
    [ "$(cat "$TMP/c3")" == "200 length 60 DONE" ] && ok "mpirun -np 3: the stream in flight finished first: $(cat "$TMP/c3")" ||
        bad "mpirun -np 3: stream during SIGTERM: $(cat "$TMP/c3")"
else
    bad "mpirun -np 3 server did not start"
fi
# SIGTERM to mpirun: Open MPI passes it to every rank and kills them after a
# short delay; whatever the order, no rank is left behind
if start_server "$TMP/s4" "$TMP/p4" "${MPI_SERVE[@]}" --port-file "$TMP/p4"; then
    python3 tests/cli/serve_client.py "$PORT" brown-moe --stream "The jury said" 400 >"$TMP/c4" 2>&1 &
    python3 tests/cli/serve_client.py "$PORT" brown-moe --wait-running
    kill -TERM $SERVER_PID
    left=1
    for _ in $(seq 300); do
        pgrep -f "port-file $TMP/p4" >/dev/null || { left=0; break; }
        sleep 0.1
    done
    [ $left -eq 0 ] && ok "mpirun -np 3: SIGTERM to mpirun during a stream leaves no rank running" ||
        bad "mpirun -np 3: ranks left 30 s after SIGTERM to mpirun"
    wait
else
    bad "mpirun -np 3 server did not start (second)"
fi
finish
