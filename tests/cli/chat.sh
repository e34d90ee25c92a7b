#!/bin/bash
# `trustmoe chat`: each reply is the greedy continuation of the whole
# conversation under the chat template (checked against `generate` on the
# same text), /reset forgets it, EOF and /exit end the chat, bad use exits 2.
# `chat --url` against `trustmoe serve`: the same replies, the server's error
# for a message over its context (and the chat goes on), a clear error for no
# server there.
cd "$(dirname "$0")/../.." || exit 2
source tests/cli/mpi_lib.bash
M=models/brown-moe
printf 'Hello\nTell me about the jury.\n/reset\nHello\n' | "$TRUSTMOE" chat -m $M -n 20 --temp 0 >"$TMP/out" 2>"$TMP/err"
rc=$?
[ $rc -eq 0 ] && ok "chat: exit 0 at EOF" || bad "chat: rc $rc, $(cat "$TMP/err")"
"$TRUSTMOE" generate -m $M --chat -p Hello -n 20 --temp 0 >"$TMP/want1" 2>/dev/null
reply1=$(cat "$TMP/want1")
printf -v convo '<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n%s<|im_end|>\n<|im_start|>user\nTell me about the jury.<|im_end|>\n<|im_start|>assistant\n' "$reply1"
"$TRUSTMOE" generate -m $M -p "$convo" -n 20 --temp 0 >"$TMP/want2" 2>/dev/null
cat "$TMP/want1" "$TMP/want2" "$TMP/want1" >"$TMP/want"
# each reply ends with a newline, as generate's text does
if cmp -s "$TMP/out" "$TMP/want"; then
    ok "chat: reply 1 is generate --chat's, reply 2 continues the whole conversation, /reset forgets it"
else
    bad "chat: replies differ: $(diff "$TMP/out" "$TMP/want" | head -10)"
fi
printf 'Hello\n/exit\nHello\n' | "$TRUSTMOE" chat -m $M -n 20 --temp 0 >"$TMP/out2" 2>/dev/null
cmp -s "$TMP/out2" "$TMP/want1" && ok "chat: /exit ends it" || bad "chat: /exit: $(cat "$TMP/out2")"
"$TRUSTMOE" chat --synthetic tiny </dev/null >/dev/null 2>"$TMP/e"; rc=$?
[ $rc -eq 2 ] && [ "$(wc -l <"$TMP/e")" -eq 1 ] && ok "chat without a tokenizer: exit 2, $(cat "$TMP/e")" ||
    bad "chat --synthetic: rc $rc, $(cat "$TMP/e")"
"$TRUSTMOE" chat -m $M -n 600 </dev/null >/dev/null 2>"$TMP/e"; rc=$?
[ $rc -eq 2 ] && [ "$(wc -l <"$TMP/e")" -eq 1 ] && ok "chat -n over the context: exit 2, $(cat "$TMP/e")" ||
    bad "chat -n 600: rc $rc, $(cat "$TMP/e")"

# ---- chat --url: the same conversation through `trustmoe serve`
# a small context, so that one long message does not fit (the conversation above does)
if start_server "$TMP/serve.err" "$TMP/port" "$TRUSTMOE" serve -m $M --port 0 --port-file "$TMP/port" -c 96; then
    URL=http://127.0.0.1:$PORT
    printf 'Hello\nTell me about the jury.\n/reset\nHello\n' |
        timeout 60 "$TRUSTMOE" chat --url "$URL" -n 20 --temp 0 >"$TMP/rout" 2>"$TMP/rerr"
    rc=$?
    if [ $rc -eq 0 ] && cmp -s "$TMP/rout" "$TMP/out"; then
        ok "chat --url: the server's replies are byte for byte chat -m's"
    else
        bad "chat --url: rc $rc, $(cat "$TMP/rerr"), $(diff "$TMP/rout" "$TMP/out" | head -10)"
    fi
    # URL/v1/ is the same server
    printf 'Hello\n' | timeout 60 "$TRUSTMOE" chat --url "$URL/v1/" -n 20 --temp 0 >"$TMP/rout2" 2>/dev/null
    cmp -s "$TMP/rout2" "$TMP/want1" && ok "chat --url URL/v1/: the same" || bad "chat --url URL/v1/: $(cat "$TMP/rout2")"
    # a message over the server's context: its error, the message dropped, the
    # chat goes on as chat -m does with the same context, the oldest turns
    # going when the conversation fills it
    long=$(printf 'the jury said %.0s' $(seq 40))
    printf 'Hello\n%s\nHello\nTell me about the jury.\nHello\n' "$long" >"$TMP/in3"
    timeout 60 "$TRUSTMOE" chat --url "$URL" -n 20 --temp 0 <"$TMP/in3" >"$TMP/rout3" 2>"$TMP/rerr3"
    rc=$?
    "$TRUSTMOE" chat -m $M -c 96 -n 20 --temp 0 <"$TMP/in3" >"$TMP/lout3" 2>/dev/null
    if [ $rc -eq 0 ] && [ "$(wc -l <"$TMP/rerr3")" -eq 1 ] && grep -q "^trustmoe chat: .*exceed the context of 96 tokens" "$TMP/rerr3" &&
        cmp -s -n "$(wc -c <"$TMP/want1")" "$TMP/rout3" "$TMP/want1" &&
        [ "$(wc -c <"$TMP/rout3")" -gt "$(wc -c <"$TMP/want1")" ] && cmp -s "$TMP/rout3" "$TMP/lout3"; then
        ok "chat --url: a message over the context: $(cat "$TMP/rerr3"); the next ones are answered as chat -m -c 96 does"
    else
        bad "chat --url over the context: rc $rc, $(cat "$TMP/rerr3"), $(diff "$TMP/rout3" "$TMP/lout3" | head -6)"
    fi
    stop_server "the server"
else
    bad "the server did not start: $(cat "$TMP/serve.err")"
fi
# no server there: one line naming the URL, a runtime failure
timeout 60 "$TRUSTMOE" chat --url http://127.0.0.1:1 </dev/null >/dev/null 2>"$TMP/e"; rc=$?
[ $rc -eq 1 ] && [ "$(wc -l <"$TMP/e")" -eq 1 ] && grep -q "http://127.0.0.1:1" "$TMP/e" &&
    ok "chat --url with no server there: exit 1, $(cat "$TMP/e")" || bad "chat --url, no server: rc $rc, $(cat "$TMP/e")"
"$TRUSTMOE" chat --url http://127.0.0.1:1 -m $M </dev/null >/dev/null 2>"$TMP/e"; rc=$?
[ $rc -eq 2 ] && [ "$(wc -l <"$TMP/e")" -eq 1 ] && ok "chat --url with -m: exit 2, $(cat "$TMP/e")" ||
    bad "chat --url -m: rc $rc, $(cat "$TMP/e")"
"$TRUSTMOE" chat --url http://127.0.0.1:1 -c 64 </dev/null >/dev/null 2>"$TMP/e"; rc=$?
[ $rc -eq 2 ] && [ "$(wc -l <"$TMP/e")" -eq 1 ] && ok "chat --url with a model flag: exit 2, $(cat "$TMP/e")" ||
    bad "chat --url -c: rc $rc, $(cat "$TMP/e")"
finish
