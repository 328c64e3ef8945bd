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
from pathlib import Path

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
    (it verifies the best ``shortlist`` of them)."""
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
            t, _ = _cpu(lambda: searcher._rerank(query, hits[:shortlist], {}))
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


def extraction_costs(files, variants):
    """Median CPU milliseconds of decoding and of DoG SIFT (RootSIFT, relative contrast),
    and the median descriptors, per ``(max_side, n_octave_layers, max_keypoints)``."""
    from features.decode import decode_gray
    from features.extract.dog import sift
    datas = [Path(f).read_bytes() for f in files]
    out = []
    for side, layers, most in variants:
        decode, extract, counts = [], [], []
        for data in datas:
            t, decoded = _cpu(lambda: decode_gray(data, side))
            decode.append(t)
            t, (frames, _) = _cpu(lambda: sift(decoded.gray, max_keypoints=most, root=True,
                                               relative_contrast=True,
                                               n_octave_layers=layers))
            extract.append(t)
            counts.append(len(frames))
        out.append({"max_side": side, "octave_layers": layers, "max_keypoints": most,
                    "decode_ms": round(1e3 * float(np.median(decode)), 1),
                    "sift_ms": round(1e3 * float(np.median(extract)), 1),
                    "descriptors": int(np.median(counts))})
    return out


VARIANTS = [(640, 3, 2000), (640, 2, 2000), (384, 3, 2000), (384, 2, 2000), (320, 3, 2000),
            (320, 2, 2000), (256, 3, 2000), (256, 2, 2000), (256, 3, 150)]


def main():
    """``python benchmarks/query_costs.py``: the extraction of the 72 query files of
    ``bench_distractors.py`` at other sides and OpenCV SIFT parameters (query_extract.md)."""
    import json
    import os
    import sys
    import tempfile

    import cv2
    cv2.setNumThreads(1)
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    from bench_distractors import QUERY_PHOTOS
    from features.demo import EDITS, write_copy_set
    with tempfile.TemporaryDirectory() as tmp:
        files = sorted(write_copy_set(Path(tmp) / "q", photos=QUERY_PHOTOS,
                                      edits=EDITS).rglob("*.jpg"))
        rows = extraction_costs(files, VARIANTS)
    lines = ["# A query's extraction at other sides and SIFT parameters", "",
             f"`python benchmarks/query_costs.py`: the {len(files)} query files of "
             "bench_distractors.py (at most 512 px a side), median CPU ms on one thread, "
             f"load average {os.getloadavg()[0]:.1f}; OpenCV DoG SIFT with RootSIFT and the "
             "relative contrast threshold (the `sift` preset's), its 3 octave layers or 2, "
             "its strongest 2000 keypoints or 150.", "",
             "| max side | octave layers | max keypoints | decode ms | SIFT ms | descriptors |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['max_side']} | {r['octave_layers']} | {r['max_keypoints']} | "
                     f"{r['decode_ms']} | {r['sift_ms']} | {r['descriptors']} |")
    out = here / "results" / "query_extract"
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
