"""Geometric re-ranking on the copy-detection set: quality (mAP) and added time per query.

The set is the demo's (``features.demo``: 18 scikit-image photos x 6 versions), the
``sift`` preset with 1000 words; every image is a query (by key) against all the others.
Per query the plain search ranks all 107 other images; re-ranking verifies the first 100
(the shortlist of ``--rerank``) and the rest keep their order.

Methods, timed on the same shortlists, interleaved query by query (the order rotates
every round), one thread everywhere (FAISS, OpenCV, BLAS):

- ``plain``: the FAISS search alone;
- ``ransac`` (the peer: the implementation this replaces, kept here): each candidate's
  ``frames`` and ``words`` read from the store's HDF5 virtual datasets, tentative matches
  of features sharing a word (words seen more than 4 times in either image left out),
  OpenCV ``estimateAffinePartial2D`` RANSAC (500 iterations, threshold 1.5% of the
  matched points' extent), results sorted by inliers then score;
- ``features``: ``Searcher`` with ``rerank=True``: geometry records read with one
  ``pread`` per candidate, the kernel of ``ext/_verify.pyx``, verified results (>= 8
  inliers) first;
- ``features, frames+words``: the same verification reading ``frames`` and ``words`` as
  the peer does (what a store made without geometry records costs);
- ``features + expansion``: ``--expand 5``, average query expansion on the verified results.

"Added ms" is the time of the re-ranking step per query (reading the query's and the 100
candidates' features, verifying, sorting), measured around that step; the plain search
is not included. Medians and 99th percentiles over all queries and rounds.

    python benchmarks/bench_rerank.py [--rounds 1]
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import faiss  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from features.demo import write_copy_set  # noqa: E402
from features.search.metrics import average_precision  # noqa: E402
from features.pipeline import run  # noqa: E402
from features.presets import get_preset  # noqa: E402
from features.search import Searcher  # noqa: E402
from features.sources import open_source  # noqa: E402
from features.extract.geometry import frame_geometry, keeps_geometry  # noqa: E402
from features.search.spatial import verify_many  # noqa: E402

SHORTLIST = 100
EXPAND = 5


def ransac_inliers(q_frames, q_words, c_frames, c_words, max_per_word=4):
    """The verification that --rerank used before ext/_verify.pyx (the peer)."""
    qw, cw = q_words, c_words
    if len(qw) < 3 or len(cw) < 3:
        return 0
    pairs_q, pairs_c = [], []
    order_c = np.argsort(cw, kind="stable")
    sorted_c = cw[order_c]
    for word in np.intersect1d(qw, cw):
        qi = np.flatnonzero(qw == word)
        lo, hi = np.searchsorted(sorted_c, [word, word + 1])
        ci = order_c[lo:hi]
        if len(qi) > max_per_word or len(ci) > max_per_word:
            continue
        pairs_q.append(np.repeat(qi, len(ci)))
        pairs_c.append(np.tile(ci, len(qi)))
    if not pairs_q:
        return 0
    qi, ci = np.concatenate(pairs_q), np.concatenate(pairs_c)
    if len(qi) < 3:
        return 0
    src = q_frames[qi, :2].astype(np.float32)
    dst = c_frames[ci, :2].astype(np.float32)
    extent = max(float(np.ptp(dst[:, 0])), float(np.ptp(dst[:, 1])), 1.0)
    _, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC,
                                          ransacReprojThreshold=0.015 * extent, maxIters=500,
                                          confidence=0.99)
    return int(mask.sum()) if mask is not None else 0


def rerank_ransac(searcher, query, hits):
    f = searcher.store.image_features(query.self_index)
    inliers = {}
    for _, i in hits:
        c = searcher.store.image_features(i)
        inliers[i] = ransac_inliers(f["frames"], f["words"], c["frames"], c["words"])
    return sorted(hits, key=lambda h: (-inliers[h[1]], -h[0]))


def rerank_features(searcher, query, hits):
    query.geometry = None          # read it again: part of the cost
    return searcher._rerank(query, hits, {})


def rerank_frames_words(searcher, query, hits):
    """Our verification on features read as the peer reads them (frames + words)."""
    store, config = searcher.store, searcher.store.config
    width, height = searcher._image_sizes()
    oriented = keeps_geometry(config.extractor)

    def geometry(i):
        f = store.image_features(int(i))
        return frame_geometry(f["frames"], f["words"], int(width[i]), int(height[i]),
                              units=config.frame_units, oriented=oriented)

    qw, qg = geometry(query.self_index)
    ids = [i for _, i in hits]
    parts = [geometry(i) for i in ids]
    offsets = np.zeros(len(ids) + 1, np.int64)
    np.cumsum([len(p[0]) for p in parts], out=offsets[1:])
    sides = np.maximum(width[ids], height[ids]).astype(np.float32)
    counts, _ = verify_many(qw, qg, np.concatenate([p[0] for p in parts]),
                            np.concatenate([p[1] for p in parts]), offsets, sides,
                            searcher.verify_params)
    inliers = dict(zip(ids, counts.tolist()))
    from features.search import MIN_INLIERS
    verified = sorted((h for h in hits if inliers[h[1]] >= MIN_INLIERS),
                      key=lambda h: (-inliers[h[1]], -h[0]))
    return verified + [h for h in hits if inliers[h[1]] < MIN_INLIERS]


def expand_features(searcher, query, hits):
    query.geometry = None
    inliers = {}
    ranked = searcher._rerank(query, hits, inliers)
    return searcher._expand(query, ranked, inliers, EXPAND, len(hits))


METHODS = {
    "ransac": rerank_ransac,
    "features": rerank_features,
    "features, frames+words": rerank_frames_words,
    "features + expansion": expand_features,
}


def build_store(work):
    store = work / "store"
    from features.index import INDEX_FILE, current_index_paths
    if not current_index_paths(store)[INDEX_FILE].exists():
        images = write_copy_set(work / "images")
        run(get_preset("sift", words=1000), open_source(str(images)), store, jobs=1,
            progress=False)
    return store


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--work", default=str(HERE / "_work" / "rerank"))
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)
    cv2.setNumThreads(1)
    work = Path(args.work)
    store = build_store(work)

    searcher = Searcher(store)
    keys = searcher.store.keys
    labels = searcher.labels
    n = searcher.store.n_images
    queries = [searcher.query_from_key(str(k)) for k in keys]
    # The plain ranking of every query (all 107 others) and its time.
    plain, plain_ms = [], []
    for q in queries:
        t = time.perf_counter()
        hits = searcher._search_vector(q.vector, n - 1, q.self_index)
        plain_ms.append(1000 * (time.perf_counter() - t))
        plain.append(hits)

    def mean_ap(rankings):
        aps = []
        for qi, ranked in enumerate(rankings):
            rel = [labels[i] == labels[qi] for _, i in ranked]
            aps.append(average_precision(rel, int((labels == labels[qi]).sum()) - 1))
        return float(np.mean(aps))

    names = list(METHODS)
    times = {m: [] for m in names}
    read_ms = {"geometry records (pread)": [], "frames + words (h5py)": []}
    rankings = {m: [None] * n for m in names}
    for r in range(args.rounds):
        for qi, q in enumerate(queries):
            shortlist, rest = plain[qi][:SHORTLIST], plain[qi][SHORTLIST:]
            ids = [i for _, i in shortlist]
            order = names[(qi + r) % len(names):] + names[:(qi + r) % len(names)]
            for m in order:
                t = time.perf_counter()
                ranked = METHODS[m](searcher, q, list(shortlist))
                times[m].append(1000 * (time.perf_counter() - t))
                if r == 0:
                    seen = {i for _, i in ranked}
                    rankings[m][qi] = ranked + [h for h in rest if h[1] not in seen]
            t = time.perf_counter()
            searcher.store.geometry(ids)
            read_ms["geometry records (pread)"].append(1000 * (time.perf_counter() - t))
            t = time.perf_counter()
            for i in ids:
                searcher.store.image_features(i)
            read_ms["frames + words (h5py)"].append(1000 * (time.perf_counter() - t))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{m} {np.median(times[m]):.1f} ms" for m in names), flush=True)
    searcher.close()

    base = float(np.median(times["ransac"]))
    rows = [{"method": "plain search", "mAP": mean_ap(plain), "added_ms_median": 0.0,
             "added_ms_p99": 0.0, "search_ms_median": float(np.median(plain_ms))}]
    for m in names:
        t = np.array(times[m])
        rows.append({"method": m, "mAP": mean_ap(rankings[m]),
                     "added_ms_median": float(np.median(t)),
                     "added_ms_p99": float(np.percentile(t, 99)),
                     "speedup_vs_ransac": base / float(np.median(t))})
    reads = {k: {"median_ms": float(np.median(v)), "p99_ms": float(np.percentile(v, 99))}
             for k, v in read_ms.items()}
    with h5py_file(store) as f:
        n_features = int(f["offsets"][-1])
    result = {"benchmark": "rerank", "images": n, "queries": n, "shortlist": SHORTLIST,
              "expand": EXPAND, "rounds": args.rounds, "features_per_image": n_features / n,
              "rows": rows, "reads_of_100_candidates": reads,
              "machine": {"python": platform.python_version(), "numpy": np.__version__,
                          "faiss": faiss.__version__, "opencv": cv2.__version__,
                          "cpus": os.cpu_count()}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rerank.json").write_text(json.dumps(result, indent=1))
    lines = [
        "# Geometric re-ranking on the copy-detection set",
        "",
        f"The demo set ({n} images: 18 photos x 6 versions), `sift` preset, 1000 words, "
        f"{n_features / n:.0f} features per image; every image queried by key against all the "
        f"others. Re-ranking verifies the first {SHORTLIST} results of the plain search; the "
        f"others keep their order. One thread; added ms per query is the re-ranking step "
        f"(reading the query's and the {SHORTLIST} candidates' features, verifying, sorting), "
        f"median and 99th percentile over {n} queries x {args.rounds} interleaved rounds. "
        f"`python benchmarks/bench_rerank.py`.",
        "",
        "| method | mAP | added ms / query (median) | p99 | speed-up vs RANSAC |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['method']} | {row['mAP']:.4f} | {row['added_ms_median']:.2f} | "
                     f"{row['added_ms_p99']:.2f} | "
                     + (f"{row['speedup_vs_ransac']:.1f}x |" if "speedup_vs_ransac" in row
                        else "- |"))
    lines += ["", f"Plain search: {rows[0]['search_ms_median']:.2f} ms per query (median, "
              "flat index of 108 rows).", "",
              f"Reading {SHORTLIST} candidates' features (median / p99 ms):", ""]
    for k, v in reads.items():
        lines.append(f"- {k}: {v['median_ms']:.2f} / {v['p99_ms']:.2f}")
    lines += ["", f"python {platform.python_version()}, numpy {np.__version__}, "
              f"faiss {faiss.__version__}, opencv {cv2.__version__}, {os.cpu_count()} CPUs "
              "(shared with other work: medians of interleaved runs)."]
    (out / "rerank.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def h5py_file(store):
    import h5py
    return h5py.File(Path(store) / "store.h5", "r")


if __name__ == "__main__":
    main()
