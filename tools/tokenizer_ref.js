// tokenizer_ref.js: reference ids from @huggingface/tokenizers for the C tokenizer's parity test.
//
//   npm install --prefix tools --no-package-lock   (once; into tools/node_modules)
//   node tools/tokenizer_ref.js hard  TOKENIZER_DIR CASES.json OUT.json
//   node tools/tokenizer_ref.js corpus TOKENIZER_DIR CORPUS_DIR OUT.ids.gz
//   node tools/tokenizer_ref.js fuzz  TOKENIZER_DIR COUNT OUT.json
//
// hard: CASES.json is a JSON array of strings; OUT.json is an array of
//   {"text": s, "ids": [...], "nfc": NFC(s)} in the same order.
// fuzz: COUNT random strings (fixed seed, so the file is reproducible) drawn from
//   pieces that stress the pre-tokenizer's edges (spaces of every kind, newlines,
//   apostrophes and contractions, digits, marks, symbols, added tokens), written
//   like hard.
// corpus: every regular file of CORPUS_DIR (names sorted by byte order, dot files
//   skipped) is encoded whole; OUT is gzip of the binary layout below, all integers
//   little-endian:
//     magic    8 bytes  "TMTKIDS1"
//     n_docs   u32
//     per document, in name order:
//       name_len u32, name bytes (no NUL)
//       n_ids    u32, then n_ids x i32 token ids
// No special tokens are added (Qwen adds no BOS/EOS); added tokens in the text are matched.
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { Tokenizer } from "@huggingface/tokenizers";

function load(dir) {
    const json = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
    const config = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
    return new Tokenizer(json, config);
}

function encode(tok, text) {
    return tok.encode(text, { add_special_tokens: false }).ids.map(Number);
}

const [mode, dir, input, output] = process.argv.slice(2);
if (!output) {
    console.error("usage: tokenizer_ref.js hard|corpus TOKENIZER_DIR INPUT OUTPUT");
    process.exit(2);
}
const tok = load(dir);
if (mode === "hard") {
    const cases = JSON.parse(fs.readFileSync(input, "utf8"));
    const out = cases.map((text) => ({ text, ids: encode(tok, text), nfc: text.normalize("NFC") }));
    fs.writeFileSync(output, "[\n" + out.map((c) => JSON.stringify(c)).join(",\n") + "\n]\n");
    console.error(`tokenizer_ref: ${out.length} cases -> ${output}`);
} else if (mode === "fuzz") {
    const pieces = [" ", " ", "  ", "\t", "\n", "\r", "\r\n", "\u0085", "\u00a0", "\u3000", "\u2009", "\u000b",
        "\u001c", "\u001f", "\ufeff", "\u200b", "a", "Z", "word", "The", "é", "e\u0301", "\u0301", "\u0308", "ß",
        "Я", "щ", "中", "文字", "ا", "ب", "\u064e", "א", "\u05b0", "ק", "'", "'s", "'S", "'ll", "'LL", "'re", "'Ve",
        "'m", "'D", "'t", "'x", "\"", "0", "7", "42", "½", "²", "٣", "Ⅻ", ".", ",", "!", "?", "-", "_", "(", ")", "{",
        "}", "<", ">", "|", "/", "\\", "#", "$", "%", "&", "*", "+", "=", "@", "~", "`", "^", "…", "—", "€", "©",
        "😀", "👍🏽", "\u200d", "🇯🇵", "\u{1F9D1}", "<|im_start|>", "<|im_end|>", "<think>", "</think>",
        "<|endoftext|>", "<|im_", "|>"];
    let seed = 12345;
    const rand = (n) => {
        seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
        return (seed >>> 8) % n;
    };
    const count = parseInt(input, 10);
    const out = [];
    for (let i = 0; i < count; i++) {
        let text = "";
        const len = rand(24);
        for (let k = 0; k < len; k++) text += pieces[rand(pieces.length)];
        out.push({ text, ids: encode(tok, text), nfc: text.normalize("NFC") });
    }
    fs.writeFileSync(output, "[\n" + out.map((c) => JSON.stringify(c)).join(",\n") + "\n]\n");
    console.error(`tokenizer_ref: ${out.length} fuzz cases -> ${output}`);
} else if (mode === "corpus") {
    const names = fs.readdirSync(input).filter((n) => !n.startsWith(".") &&
        fs.statSync(path.join(input, n)).isFile()).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    const parts = [Buffer.from("TMTKIDS1"), u32(names.length)];
    let total = 0;
    for (const name of names) {
        const ids = encode(tok, fs.readFileSync(path.join(input, name), "utf8"));
        const nb = Buffer.from(name, "utf8");
        parts.push(u32(nb.length), nb, u32(ids.length), Buffer.from(Int32Array.from(ids).buffer));
        total += ids.length;
    }
    fs.writeFileSync(output, zlib.gzipSync(Buffer.concat(parts), { level: 9 }));
    console.error(`tokenizer_ref: ${names.length} documents, ${total} ids -> ${output}`);
} else {
    console.error(`tokenizer_ref: unknown mode '${mode}'`);
    process.exit(2);
}

function u32(v) {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    return b;
}
