#!/bin/bash
# `trustmoe chat`: each reply is the greedy continuation of the whole
# conversation under the chat template (checked against `generate` on the
# same text), /reset forgets it, EOF and /exit end the chat, bad use exits 2.
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
finish
