#!/usr/bin/env python
"""Build the shipped WordNet 3.0 noun is-a table from the WordNet database files.

    apt-get install -y wordnet-base
    python tools/make_wordnet_table.py [/usr/share/wordnet/data.noun] [-o OUT.npz]

Reads ``data.noun`` (the format is documented in WordNet's ``wndb(5WN)`` manual page) and
writes a compressed ``.npz`` holding, for every noun synset:

- ``offsets`` (int32, sorted): the synset offset; its ImageNet wnid is ``n%08d``;
- ``parent_indptr``, ``parent_index`` (int32): the parents of synset i are rows
  ``parent_index[parent_indptr[i]:parent_indptr[i+1]]``: its hypernyms (``@``) and instance
  hypernyms (``@i``), as WordNet lists them (several for multiple inheritance);
- ``words`` (uint8): the synset's lemmas, ``, ``-joined with underscores shown as spaces (as
  ImageNet's words.txt), one synset per line, UTF-8.

The default output is the table the package ships, ``features/baseline/data/``; WordNet's
license notice is shipped beside it (WORDNET_LICENSE).
"""
import argparse
import sys
from pathlib import Path

import numpy as np

DEFAULT_DATA = "/usr/share/wordnet/data.noun"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "features/baseline/data/wordnet30_nouns.npz"


def parse_data_noun(path):
    """[(offset, [lemma...], [parent offset...])] of the noun synsets in ``path``."""
    synsets = []
    with open(path, "rb") as f:
        for raw in f:
            if raw.startswith(b"  "):  # the license header: lines start with two spaces
                continue
            line = raw.decode("utf-8")
            fields = line.split(" | ", 1)[0].split()
            offset, ss_type = int(fields[0]), fields[2]
            if ss_type != "n":
                raise ValueError(f"{path}: synset {fields[0]} is of type {ss_type!r}, not a noun")
            w_cnt = int(fields[3], 16)  # the word count is written in hexadecimal
            lemmas = [fields[4 + 2 * k].replace("_", " ") for k in range(w_cnt)]
            pos = 4 + 2 * w_cnt
            p_cnt = int(fields[pos])
            parents = []
            for k in range(p_cnt):
                symbol, target, target_pos = fields[pos + 1 + 4 * k: pos + 4 + 4 * k]
                if symbol in ("@", "@i") and target_pos == "n":
                    parents.append(int(target))
            synsets.append((offset, lemmas, parents))
    return synsets


def build_table(synsets):
    synsets = sorted(synsets)
    offsets = np.array([s[0] for s in synsets], dtype=np.int32)
    where = {int(o): i for i, o in enumerate(offsets)}
    indptr = np.zeros(len(synsets) + 1, dtype=np.int32)
    index = []
    for i, (_, _, parents) in enumerate(synsets):
        index.extend(where[p] for p in parents)
        indptr[i + 1] = len(index)
    words = "\n".join(", ".join(s[1]) for s in synsets).encode("utf-8")
    return dict(offsets=offsets, parent_indptr=indptr,
                parent_index=np.array(index, dtype=np.int32),
                words=np.frombuffer(words, dtype=np.uint8))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data_noun", nargs="?", default=DEFAULT_DATA)
    p.add_argument("-o", "--out", default=str(DEFAULT_OUT))
    args = p.parse_args(argv)
    if not Path(args.data_noun).is_file():
        sys.exit(f"no {args.data_noun}: apt-get install -y wordnet-base")
    table = build_table(parse_data_noun(args.data_noun))
    np.savez_compressed(args.out, **table)
    print(f"{len(table['offsets'])} noun synsets, {len(table['parent_index'])} is-a edges: "
          f"{args.out} ({Path(args.out).stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
