"""Where the CPU time of one query by image file goes, stage by stage.

The stages of ``Searcher.search(path, k, rerank=True)`` (``features.search.searcher``), each
timed by the process's CPU time on one thread, per query file, in the order the searcher runs
them: reading and decoding the file to the recipe's grey image (``decode``), DoG SIFT with
RootSIFT (``sift``), the descent of the vocabulary tree or the nearest centroid (``assign``),
the query's tf-idf row (``encode``), the index search (``search``), and the spatial
verification of the shortlist (``rerank``). ``total`` is the CPU time of the whole
``Searcher.search`` call timed separately on the same file, so that the stages can be checked
against it. Medians over the query files.
"""
from __future__ import annotations

import time

import numpy as np

from features.extract import extract_image
from features.search import Searcher
from features.search.query import Query

STAGES = ("decode", "sift", "assign", "encode", "search", "rerank")


def _cpu(fn):
    c0 = time.process_time()
    out = fn()
    return time.process_time() - c0, out


def stage_costs(store, files, k=501, shortlist=100):
    """Median CPU milliseconds per stage over ``files`` (image paths), and the median number
    of descriptors per query, searching ``k`` results re-ranked as ``Searcher.search`` does
    (it verifies ``max(k, shortlist)`` candidates)."""
    per = {s: [] for s in STAGES + ("total",)}
    counts = []
    with Searcher(store, threads=1) as searcher:
        enc = searcher.encoder
        searcher.search(str(files[0]), k=10, rerank=True)            # warm up
        for f in files:
            path = str(f)
            t, (decoded, _) = _cpu(lambda: enc._decode(path, None))
            per["decode"].append(t)
            t, (frames, descriptors, _) = _cpu(lambda: extract_image(enc.extraction, decoded))
            per["sift"].append(t)
            counts.append(len(descriptors))
            t, words = _cpu(lambda: enc.quantizer.assign(descriptors))
            per["assign"].append(t)
            feats = type("F", (), {})()
            feats.frames, feats.descriptors, feats.words = frames, descriptors, words
            feats.width, feats.height, feats.decoded = decoded.width, decoded.height, decoded
            t, vector = _cpu(lambda: enc.encode_features(feats))
            per["encode"].append(t)
            query = Query(path, vector, frames, words, None, decoded.width, decoded.height,
                          **searcher._frame_kind())
            n = max(k, shortlist)
            t, hits = _cpu(lambda: searcher._search_vector(vector, n, None))
            per["search"].append(t)
            t, _ = _cpu(lambda: searcher._rerank(query, hits, {}))
            per["rerank"].append(t)
            t, _ = _cpu(lambda: searcher.search(path, k=k, rerank=True, shortlist=shortlist))
            per["total"].append(t)
    out = {s: round(1e3 * float(np.median(v)), 1) for s, v in per.items()}
    out["stages_sum"] = round(sum(out[s] for s in STAGES), 1)
    out["descriptors"] = int(np.median(counts))
    out["queries"] = len(files)
    return out


def costs_table(rows):
    """Markdown lines of ``rows``: ``{(store name, distractors): stage_costs(...)}``."""
    lines = ["| store | distractors | descriptors / query | " + " | ".join(STAGES)
             + " | sum of stages | whole search |",
             "|---|---:|---:|" + "---:|" * (len(STAGES) + 2)]
    for (name, n), c in rows.items():
        lines.append(f"| {name} | {int(n):,} | {c['descriptors']} | "
                     + " | ".join(str(c[s]) for s in STAGES)
                     + f" | {c['stages_sum']} | {c['total']} |")
    return lines
