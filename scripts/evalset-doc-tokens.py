#!/usr/bin/env python3
"""Writes the `--doc-tokens` JSONL of an eval set (one array of wordpiece strings per document,
in docs.jsonl order) the way its token vectors were made: the token encoder's tokenizer over
title + " " + text, truncated to --max-tokens wordpieces with [CLS] and [SEP], single
punctuation tokens dropped (ColBERT's document skiplist). Checks each count against
doc_lens.npy and fails naming the first document that differs.

Usage: scripts/evalset-doc-tokens.py EVALSET_DIR TOKENIZER_JSON OUT [--max-tokens 180]
Needs the PyPI packages `tokenizers` and `numpy`, e.g. for scifact:
  python3 -m venv .venv && .venv/bin/pip install tokenizers numpy
  .venv/bin/python scripts/evalset-doc-tokens.py ../shared/evalsets/scifact \\
      models/minilm/tokenizer.json scifact-doc-tokens.jsonl
"""

import argparse
import gzip
import json
import pathlib
import sys

import numpy as np
from tokenizers import Tokenizer

PUNCTUATION = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("evalset", type=pathlib.Path)
    parser.add_argument("tokenizer", type=pathlib.Path)
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--max-tokens", type=int, default=180)
    args = parser.parse_args()
    tokenizer = Tokenizer.from_file(str(args.tokenizer))
    tokenizer.no_padding()
    tokenizer.enable_truncation(args.max_tokens)
    texts = {}
    with gzip.open(args.evalset / "corpus.jsonl.gz", "rt", encoding="utf-8") as corpus:
        for line in corpus:
            doc = json.loads(line)
            texts[doc["_id"]] = (doc["title"] + " " + doc["text"]).strip()
    lens = np.load(args.evalset / "doc_lens.npy")
    docs = args.evalset / "docs.jsonl"
    tmp = args.out.with_name(args.out.name + ".tmp")
    with open(docs, encoding="utf-8") as ids, open(tmp, "w", encoding="utf-8") as out:
        for line_no, line in enumerate(ids, 1):
            doc_id = json.loads(line)["id"]
            if doc_id not in texts:
                print(f"{docs}:{line_no}: id {doc_id!r} is not in corpus.jsonl.gz", file=sys.stderr)
                return 1
            tokens = [t for t in tokenizer.encode(texts[doc_id]).tokens if t not in PUNCTUATION]
            if len(tokens) != lens[line_no - 1]:
                print(
                    f"{docs}:{line_no}: document {doc_id} has {len(tokens)} tokens here, "
                    f"{lens[line_no - 1]} in doc_lens.npy (another tokenizer or --max-tokens?)",
                    file=sys.stderr,
                )
                return 1
            out.write(json.dumps(tokens) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}: {len(lens)} documents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
