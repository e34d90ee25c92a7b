#!/bin/bash
# The command line as a new user meets it: safe defaults (mkmodel, trust
# databases), generation limits and sampling settings, hidden special tokens,
# stop strings, output formats, per-command options and help, stdin/stdout,
# warnings, the launcher's help and the trust tables.
set -u
T=${TRUSTMOE:-build/trustmoe}
FIX=tests/fixtures/qwen3moe-bf16
BROWN=models/brown-moe
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; [ -f "$W/err" ] && sed 's/^/     /' "$W/err" | head -5; }

# run CMD...: stdout to $W/out, stderr to $W/err, exit code to $rc
run() { timeout 120 "$@" >"$W/out" 2>"$W/err"; rc=$?; }
# err2 NAME PATTERN -- CMD...: exit 2, one stderr line holding PATTERN
err2() {
    local name=$1 pat=$2; shift 3
    run "$@"
    if [ $rc -eq 2 ] && [ "$(wc -l <"$W/err")" -eq 1 ] && grep -qF -- "$pat" "$W/err"; then ok "$name"
    else bad "$name (exit $rc, want 2 and one line with '$pat')"; fi
}

# ---- 1: mkmodel never writes over a folder that holds something
mkdir -p "$W/full" && echo keep >"$W/full/config.json"
err2 "mkmodel refuses a folder that is not empty" "--force" -- $T mkmodel --preset tiny -o "$W/full"
[ "$(cat "$W/full/config.json")" = keep ] && ok "the folder's config.json is untouched" || bad "config.json was overwritten"
run $T mkmodel --preset tiny -o "$W/full" --force
[ $rc -eq 0 ] && grep -q '"num_experts"' "$W/full/config.json" && ok "mkmodel --force writes" || bad "mkmodel --force (exit $rc)"
mkdir -p "$W/empty"
run $T mkmodel --preset tiny -o "$W/empty"
[ $rc -eq 0 ] && ok "mkmodel writes into an empty folder" || bad "mkmodel into an empty folder (exit $rc)"

# ---- 2: read-only trust commands refuse a missing database and create nothing
for sub in show check dump; do
    err2 "trust $sub refuses a missing database" "no such database" -- $T trust $sub --trust-db "$W/none.db"
done
# so do the commands that select with trust (a mistyped path must not start an empty database)
printf '1,2,3,4,5,6,7,8\n' >"$W/tiny.corpus"
err2 "generate refuses a missing database" "no such database" -- $T generate -m $FIX --ids 1,2,3 -n 2 --trust-db "$W/none.db"
err2 "eval refuses a missing database" "no such database" -- $T eval -m $FIX --corpus "$W/tiny.corpus" --trust-db "$W/none.db"
[ ! -e "$W/none.db" ] && ok "no database file was created" || bad "a database file was created"

# ---- 4: -n 0 generates nothing
run $T generate -m $FIX --ids 1,2,3 -n 0 --json -q
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d["ids"] == [] and d["stop"] == "length" else 1)' "$W/out" \
    && ok "-n 0 generates no token" || bad "-n 0: $(head -c 200 "$W/out")"

# ---- 5: seeds, generation_config.json, penalties
run $T generate -m $FIX --ids 1,2,3 -n 4 --json
s1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seed"])' "$W/out" 2>/dev/null)
grep -q "seed $s1" "$W/err" && ok "the random seed is in the summary and the JSON" || bad "seed '$s1' not in the summary"
run $T generate -m $FIX --ids 1,2,3 -n 4 --json -q
s2=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seed"])' "$W/out" 2>/dev/null)
[ -n "$s1" ] && [ "$s1" != "$s2" ] && ok "no -s: a different seed per run" || bad "seeds '$s1' and '$s2'"
run $T generate -m $FIX --ids 1,2,3 -n 4 --json -q -s "$s1"
s3=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seed"])' "$W/out" 2>/dev/null)
[ "$s3" = "$s1" ] && ok "-s S replays seed S" || bad "-s $s1 gave seed $s3"
cp -r $FIX "$W/gc" && rm -rf "$W/gc/ref"
echo '{"temperature": 0.0, "max_new_tokens": 3}' >"$W/gc/generation_config.json"
run $T generate -m "$W/gc" --ids 1,2,3 --json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if len(d["ids"]) == 3 else 1)' "$W/out" \
    && grep -q "greedy" "$W/err" && ok "generation_config.json sets -n and the temperature" || bad "generation_config.json not applied"
run $T generate -m "$W/gc" --ids 1,2,3 -n 5 --temp 0.5 --json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if len(d["ids"]) == 5 else 1)' "$W/out" \
    && grep -q "temp 0.5" "$W/err" && ok "flags win over generation_config.json" || bad "flags did not win"
echo '{"top_p": "high"}' >"$W/gc/generation_config.json"
err2 "a malformed generation_config.json is named" "generation_config.json" -- $T generate -m "$W/gc" --ids 1 -n 1
run $T generate -m $FIX --ids 1,2,3 -n 12 --temp 0 --json -q
plain=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ids"])' "$W/out")
run $T generate -m $FIX --ids 1,2,3 -n 12 --temp 0 --json -q --repeat-penalty 5 --presence-penalty 2 --frequency-penalty 1
pen=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ids"])' "$W/out")
[ -n "$plain" ] && [ "$plain" != "$pen" ] && ok "the penalties change a greedy run" || bad "penalties had no effect ($plain)"
run $T generate --help
for f in --min-p --repeat-penalty --presence-penalty --frequency-penalty --stop "default 0.8" "default 40" "default 0.95" "default 16" "default random"; do
    grep -qF -- "$f" "$W/out" || { bad "generate --help lacks '$f'"; continue 2; }
done
ok "generate --help lists the sampler options and their defaults"

# ---- 3: special and stop tokens are hidden from the text; ids keep them
# The copy ends generation at the id the greedy run makes second.
mkdir -p "$W/eos" && for f in $BROWN/*; do ln -s "$(pwd)/$f" "$W/eos/"; done
run $T generate -m $BROWN --ids 473,503,1144,556 -n 4 --temp 0 --json -q --special
second=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ids"][1])' "$W/out")
rm "$W/eos/config.json" "$W/eos/generation_config.json"
python3 - "$BROWN/config.json" "$W/eos/config.json" "$second" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["eos_token_id"] = int(sys.argv[3]); json.dump(c, open(sys.argv[2], "w"))
PY
run $T generate -m "$W/eos" --ids 473,503,1144,556 -n 8 --temp 0 --json -q
hidden=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(len(d["ids"]), d["stop"], repr(d["text"]))' "$W/out")
run $T generate -m "$W/eos" --ids 473,503,1144,556 -n 8 --temp 0 --json -q --special
shown=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(len(d["ids"]), d["stop"], repr(d["text"]))' "$W/out")
run $T detokenize -m $BROWN --ids "$second"
piece=$(cat "$W/out")
python3 - "$hidden" "$shown" "$piece" <<'PY' && ok "the stop token is hidden from the text, kept in the ids; --special shows it" || bad "stop token: hidden=[$hidden] shown=[$shown]"
import ast, sys
h, s, piece = sys.argv[1].split(" ", 2), sys.argv[2].split(" ", 2), sys.argv[3]
ht, st = ast.literal_eval(h[2]), ast.literal_eval(s[2])
sys.exit(0 if h[0] == "2" and h[1] == "eos" and st == ht + piece and piece else 1)
PY
run $T generate -m $BROWN -p "The jury said" -n 30 --temp 0 -q
[ -s "$W/out" ] && ! grep -q "<|" "$W/out" && ok "no <|...|> in the streamed text" || bad "streamed text"
run $T generate -m $BROWN --ids 473,503,1144,556 -n 40 --temp 0 --json -q
full=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["text"])' "$W/out")
stop=$(python3 -c 'import sys; t=sys.argv[1]; print(t[5:9])' "$full")
run $T generate -m $BROWN --ids 473,503,1144,556 -n 40 --temp 0 --json -q --stop "$stop"
python3 - "$W/out" "$full" "$stop" <<'PY' && ok "--stop ends the text before the stop string" || bad "--stop '$stop'"
import json, sys
d = json.load(open(sys.argv[1])); full, stop = sys.argv[2], sys.argv[3]
sys.exit(0 if d["stop"] == "stop" and d["text"] == full[:full.index(stop)] and len(d["ids"]) < 40 else 1)
PY
run $T generate -m $BROWN --ids 473,503,1144,556 -n 40 --temp 0 -q --stop "$stop"
[ "$(cat "$W/out")" = "${full:0:$(python3 -c 'import sys; print(sys.argv[1].index(sys.argv[2]))' "$full" "$stop")}" ] \
    && ok "--stop while streaming: the held-back text never shows the stop string" || bad "streamed --stop: $(head -c 100 "$W/out")"
err2 "--stop without a tokenizer" "--stop needs a tokenizer" -- $T generate -m $FIX --ids 1 --stop x

# ---- 6: checks in order, and a tokenizer from elsewhere
err2 "a missing folder is named before the tokenizer" "-m /nonexistent: no such folder" -- $T generate -m /nonexistent -p hi
err2 "synthetic models have no tokenizer" "synthetic models have no tokenizer" -- $T generate --synthetic tiny -p hi
run $T generate -m $FIX --tokenizer $BROWN -p "The" -n 2 --temp 0 --json -q
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d["prompt_ids"] == [473] else 1)' "$W/out" \
    && ok "--tokenizer DIR pairs a tokenizer with any model" || bad "--tokenizer (exit $rc)"

# ---- 7, 8: one summary, text first, -q and -v
run $T generate -m $FIX --ids 1,2,3 -n 5 --temp 0
[ "$(grep -c "prefill" "$W/err")" -eq 1 ] && [ "$(wc -l <"$W/err")" -eq 2 ] && ok "one summary line (and the seed line)" || bad "summary: $(cat "$W/err")"
[ "$(tail -c 1 "$W/out" | od -An -c | tr -d ' ')" = '\n' ] && ok "the text ends with a newline" || bad "no final newline"
run $T generate -m $FIX --ids 1,2,3 -n 5 --temp 0 -q
[ ! -s "$W/err" ] && [ -s "$W/out" ] && ok "-q: nothing on stderr" || bad "-q: $(head -c 200 "$W/err")"
run $T generate -m $FIX --ids 1,2,3 -n 5 --temp 0 -v
grep -q "time attention" "$W/err" && ok "-v: the time split" || bad "-v"
run $T generate -m $FIX --ids 1,2,3 -n 5 --temp 0 --json -q --stats-json "$W/s.json"
python3 - "$W/out" "$W/s.json" <<'PY' && ok "--json and --stats-json report the same figures" || bad "--json and --stats-json disagree"
import json, sys
g, s = json.load(open(sys.argv[1]))["timings"], json.load(open(sys.argv[2]))
ok = abs(g["prefill_ms"] - 1e3 * s["prefill"]["seconds"]) < 1e-6 and abs(g["decode_ms"] - 1e3 * s["decode"]["seconds"]) < 1e-6
ok = ok and g["decode_tokens"] == s["decode"]["tokens"] and g["prefill_tokens"] == s["prefill"]["tokens"]
sys.exit(0 if ok else 1)
PY
bash -c "$T generate -m $FIX --ids 1,2,3 -n 5 --temp 0 2>&1" >"$W/both"
head -1 "$W/both" | grep -qE '^[0-9,]+$' && ok "2>&1: the text comes first, on its own line" || bad "2>&1: $(head -1 "$W/both")"

# ---- 9: at a terminal the prompt is echoed (--no-echo turns it off); pipes get the text only
script -qec "$T generate -m $BROWN -p 'The jury said' -n 5 --temp 0 -q" /dev/null >"$W/tty" 2>&1
grep -q "The jury said" "$W/tty" && ok "a terminal sees the prompt echoed" || bad "no echo at a terminal: $(head -c 200 "$W/tty")"
script -qec "$T generate -m $BROWN -p 'The jury said' -n 5 --temp 0 -q --no-echo" /dev/null >"$W/tty" 2>&1
! grep -q "The jury said" "$W/tty" && ok "--no-echo" || bad "--no-echo still echoes"
run $T generate -m $BROWN -p "The jury said" -n 5 --temp 0 -q
! grep -q "The jury said" "$W/out" && ok "a pipe gets only the generated text" || bad "the prompt went to a pipe"

# ---- 10: --prompts has one format, whatever its line count
printf '1,2,3\n' >"$W/one.txt"; printf '1,2,3\n4,5\n' >"$W/two.txt"
run $T generate -m $FIX --prompts "$W/one.txt" -n 3 --temp 0 -q; one=$(head -1 "$W/out")
run $T generate -m $FIX --prompts "$W/two.txt" -n 3 --temp 0 -q; two=$(head -1 "$W/out")
[ "${one:0:4}" = "==> " ] && [ "${two:0:4}" = "==> " ] && [ "$(grep -c '^==> prompt' "$W/out")" -eq 2 ] \
    && ok "--prompts: plain, one header per sequence, for 1 or 2 lines" || bad "--prompts formats: '$one' / '$two'"
run $T generate -m $FIX --prompts "$W/one.txt" -n 3 --temp 0 -q --json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if len(d["sequences"]) == 1 else 1)' "$W/out" \
    && ok "--prompts --json: a sequences array even for one line" || bad "--prompts --json"

# ---- 12: options of other commands, contradictions, single-process notes
err2 "generate --workers" "it belongs to inspect" -- $T generate -m $FIX --ids 1 --workers 2
err2 "generate --epochs" "not an option of generate" -- $T generate -m $FIX --ids 1 --epochs 2 --select router
err2 "generate --contexts" "not an option of generate" -- $T generate -m $FIX --ids 1 --contexts 2
err2 "inspect --temp" "not an option of inspect" -- $T inspect -m $FIX --temp 1
err2 "logits -n" "not an option of logits" -- $T logits -m $FIX --ids 1 -n 3 -o "$W/l"
err2 "logits --chat" "not an option of logits" -- $T logits -m $FIX --ids 1 --chat -o "$W/l"
err2 "--system without --chat" "--system needs --chat" -- $T generate -m $FIX --ids 1 --system hi
err2 "-m with --synthetic" "not both" -- $T generate -m $FIX --synthetic tiny --ids 1
err2 "an unknown option names the command" "trustmoe generate --help" -- $T generate -m $FIX --ids 1 --bogus
run $T generate -m $FIX --ids 1 -n 1 --replicas 2
grep -q "nothing is distributed" "$W/err" && ok "--replicas without mpirun: a note" || bad "no note for --replicas"

# ---- 13: per-command help, --version
run $T inspect --help
! grep -q -- "--temp" "$W/out" && grep -q -- "--workers" "$W/out" && ok "inspect --help: its own options only" || bad "inspect --help"
run $T generate --help
! grep -q -- "--workers\|--epochs\|--corpus" "$W/out" && grep -q -- "--chat" "$W/out" && grep -q -- "--json" "$W/out" \
    && ok "generate --help: its own options only" || bad "generate --help"
run $T --version
[ $rc -eq 0 ] && grep -q "^trustmoe 0.1, wire v" "$W/out" && ok "--version: $(cat "$W/out")" || bad "--version"

# ---- 14: warnings that name the problem
run $T generate -m $FIX --ids 1,2,3 -n 8 -c 5 --temp 0
grep -q "warning: stopped after 3 of -n 8 tokens: the context of 5 tokens is full" "$W/err" \
    && ok "-n cut short by the context: a warning" || bad "no context warning: $(cat "$W/err")"
err2 "inspect --placement foo lists the policies" "contiguous, round-robin" -- $T inspect -m $FIX --workers 2 --placement foo

# ---- 15: - is stdin/stdout; logits -p
printf '1,2,3\n' | $T generate -m $FIX --prompts - -n 2 --temp 0 -q >"$W/out" 2>"$W/err"
grep -q '^==> prompt 1 of 1' "$W/out" && ok "--prompts - reads stdin" || bad "--prompts -"
$T logits -m $FIX --ids 1,2 -o - -q >"$W/l.f32" 2>"$W/err"; $T logits -m $FIX --ids 1,2 -o "$W/l2.f32" -q
[ -s "$W/l.f32" ] && cmp -s "$W/l.f32" "$W/l2.f32" && ok "logits -o - writes stdout" || bad "logits -o -"
run $T logits -m $BROWN -p "The jury" -o "$W/p.f32" -q
run $T logits -m $BROWN --ids 473,503,1144 -o "$W/i.f32" -q
cmp -s "$W/p.f32" "$W/i.f32" && ok "logits -p TEXT equals its ids" || bad "logits -p"
printf 'The jury' | $T tokenize -m $BROWN -f - >"$W/out" 2>"$W/err"
[ "$(cat "$W/out")" = "473,503,1144" ] && ok "tokenize -f - reads stdin" || bad "tokenize -f -: $(cat "$W/out" "$W/err")"

# ---- 16: the launcher's help is its usage, no source lines
bash deploy/trustmoe-run.sh --help >"$W/out" 2>&1; rc=$?
[ $rc -eq 0 ] && grep -q "^Options:" "$W/out" && ! grep -q 'set -euo\|here=\|^#' "$W/out" && ok "trustmoe-run.sh --help" || bad "trustmoe-run.sh --help"

# ---- 17: trust tables with headers that line up
DB="$W/t.db"
python3 -c 'print(",".join(str(i % 400 + 1) for i in range(256)))' >"$W/corpus.ids" # a regular file: inputs must be
$T trust fit-contexts -m $FIX --corpus "$W/corpus.ids" --trust-db "$DB" --contexts 2 --window 32 >/dev/null 2>&1
$T trust train -m $FIX --corpus "$W/corpus.ids" --trust-db "$DB" --window 32 >/dev/null 2>&1
run $T trust dump --trust-db "$DB"
[ "$(head -1 "$W/out")" = "model context layer expert trust evidence last_quality last_credit window" ] && [ "$(wc -l <"$W/out")" -gt 1 ] \
    && ok "trust dump has a header line" || bad "trust dump header: $(head -1 "$W/out")"
run $T trust show --trust-db "$DB"
python3 - "$W/out" <<'PY' && ok "trust show's columns line up" || bad "trust show columns"
import sys
rows = [l.rstrip("\n") for l in open(sys.argv[1])][1:]
rows = [r for r in rows if not r.startswith("contexts of")]
head, body = rows[0], rows[1:]
# every column's right edge (numbers right-aligned) is at the header's
ends = lambda s: [i for i in range(len(s)) if s[i] != " " and (i + 1 == len(s) or s[i + 1] == " ")]
sys.exit(0 if body and all(ends(r)[2:] == ends(head)[2:] for r in body) else 1)
PY

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
