// bench_tokenizer_hf.js: encode throughput of @huggingface/tokenizers on a folder
// of texts, the node side of bench/tokenizer.sh (same protocol as
// bench/bench_tokenizer.c: each run builds a fresh Tokenizer from the parsed
// JSON, then encodes every file, one call each, single-threaded; only the
// encode calls are timed).
//
//   npm install --prefix tools --no-package-lock   (once)
//   node tools/bench_tokenizer_hf.js TOKENIZER_DIR CORPUS_DIR [RUNS]
//
// Prints one line per run on stderr, then on stdout:
//   hf  MEDIAN_MB_S  BYTES  IDS  LOAD_MS
import fs from "node:fs";
import path from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";

const [dir, corpus, runsArg] = process.argv.slice(2);
if (!corpus) {
    console.error("usage: bench_tokenizer_hf.js TOKENIZER_DIR CORPUS_DIR [RUNS]");
    process.exit(2);
}
const runs = Math.max(1, parseInt(runsArg ?? "5", 10));
const names = fs.readdirSync(corpus).filter((n) => !n.startsWith(".")).sort();
const docs = names.map((n) => fs.readFileSync(path.join(corpus, n), "utf8"));
const bytes = names.reduce((s, n) => s + fs.statSync(path.join(corpus, n)).size, 0);
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

const mbs = [], loads = [];
let ids = 0;
for (let r = 0; r < runs; r++) {
    let t0 = process.hrtime.bigint();
    const json = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
    const config = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
    const tok = new Tokenizer(json, config);
    loads.push(Number(process.hrtime.bigint() - t0) / 1e6);
    ids = 0;
    t0 = process.hrtime.bigint();
    for (const d of docs) ids += tok.encode(d, { add_special_tokens: false }).ids.length;
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    mbs.push(bytes / 1e6 / dt);
    console.error(`hf run ${r}: ${dt.toFixed(3)} s, ${(bytes / 1e6 / dt).toFixed(2)} MB/s, ${ids} ids (load ${loads[r].toFixed(0)} ms)`);
}
console.log(`hf ${median(mbs).toFixed(2)} ${bytes} ${ids} ${median(loads).toFixed(0)}`);
