"""k-means for the codebook: `features.codebook.kmeans` against `faiss.Kmeans`.

Same sample (sbow dense SIFT descriptors of generated ImageNet-like JPEGs, words x 256 of
them: FAISS's max points per centroid), same k, one thread each (OpenBLAS and FAISS's
OpenMP set to 1), several seeds, runs interleaved. FAISS runs its default 25 iterations
from random rows; features runs its default (greedy k-means++ seeding, then Lloyd until
an iteration gains less than 0.1%, at most 25), and, for reference, 25 iterations from
random rows as FAISS does, with and without Hamerly's bounds (the same result). Reported:
median wall and CPU time, and the quantization error (mean squared distance to the
nearest centroid, exact) on held-out descriptors of other images, and on the training
sample.

    python benchmarks/bench_kmeans.py [--words 1000] [--points 256] [--seeds 5]
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from corpus import make_corpus  # noqa: E402

from features.codebook import kmeans_fit, quantization_error  # noqa: E402
from features.pipeline.tasks import features_of  # noqa: E402
from features.presets import get_preset  # noqa: E402
from features.sources import open_source  # noqa: E402


def descriptors(root, n_images, skip=0):
    config = get_preset("sbow")
    parts = []
    for i, item in enumerate(open_source(str(root))):
        if i < skip:
            continue
        if i >= skip + n_images:
            break
        _, d = features_of(config, item)
        if d is not None:
            parts.append(d)
    return np.concatenate(parts)


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--words", type=int, default=1000)
    ap.add_argument("--points", type=int, default=256, help="sample points per centroid")
    ap.add_argument("--iters", type=int, default=25)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--held-out", type=int, default=200000)
    ap.add_argument("--work", type=Path, default=HERE / "_work")
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)
    load_start = os.getloadavg()
    root = make_corpus(args.work / "corpus2k", 2000)
    k, n = args.words, args.words * args.points
    pool = descriptors(root, 1400)
    held_pool = descriptors(root, 600, skip=1400)
    rng = np.random.default_rng(0)
    x = pool[np.sort(rng.choice(len(pool), min(n, len(pool)), replace=False))]
    held = held_pool[np.sort(rng.choice(len(held_pool), min(args.held_out, len(held_pool)),
                                        replace=False))]
    x32 = x.astype(np.float32)
    print(f"sample: {len(x)} sbow descriptors of 1400 images ({(~x.any(1)).mean():.1%} all "
          f"zero); held out: {len(held)} of 600 other images; k={k}, {args.iters} iterations",
          flush=True)

    iters_of = {}
    methods = {
        "faiss.Kmeans": lambda s: faiss_kmeans(x32, k, args.iters, s),
        "features (k-means++ init, tol 0.1%)": lambda s: fit_features(
            "features (k-means++ init, tol 0.1%)", x, k, iters=args.iters, seed=s),
        f"features, random init, {args.iters} iterations": lambda s: fit_features(
            f"features, random init, {args.iters} iterations", x, k, iters=args.iters,
            seed=s, init="random", tol=0),
        f"features, random init, {args.iters} iterations, Hamerly bounds": lambda s: fit_features(
            f"features, random init, {args.iters} iterations, Hamerly bounds", x, k,
            iters=args.iters, seed=s, init="random", tol=0, bounds=True),
    }

    def fit_features(name, *a, **kw):
        r = kmeans_fit(*a, **kw)
        iters_of[name] = r.iterations
        return r.centroids

    runs = {name: [] for name in methods}
    for seed in range(args.seeds):
        for name, fit in methods.items():
            c, wall, cpu = timed(lambda: fit(seed))
            runs[name].append({"seed": seed, "wall_s": wall, "cpu_s": cpu,
                               "iterations": iters_of.pop(name, args.iters),
                               "held_out_error": quantization_error(c, held),
                               "train_error": quantization_error(c, x)})
            r = runs[name][-1]
            print(f"seed {seed} {name}: {r['iterations']} iterations, {wall:.1f} s wall, "
                  f"{cpu:.1f} s cpu, held-out error "
                  f"{r['held_out_error']:.1f}, train {r['train_error']:.1f}", flush=True)

    def med(name, key):
        return float(np.median([r[key] for r in runs[name]]))

    base = "faiss.Kmeans"
    summary = {name: {"wall_s": med(name, "wall_s"), "cpu_s": med(name, "cpu_s"),
                      "held_out_error": med(name, "held_out_error"),
                      "train_error": med(name, "train_error"),
                      "iterations": med(name, "iterations"),
                      "speedup_wall": med(base, "wall_s") / med(name, "wall_s"),
                      "speedup_cpu": med(base, "cpu_s") / med(name, "cpu_s"),
                      "held_out_vs_faiss": med(name, "held_out_error") / med(base, "held_out_error")}
               for name in methods}
    load_end = os.getloadavg()
    result = {"machine": {"cores": os.cpu_count(), "faiss": faiss.__version__,
                          "load_avg_start": load_start, "load_avg_end": load_end},
              "words": k, "sample": int(len(x)), "held_out": int(len(held)),
              "iters": args.iters, "seeds": args.seeds, "runs": runs, "summary": summary}
    out_dir = HERE / "results"
    (out_dir / "kmeans.json").write_text(json.dumps(result, indent=1))
    lines = [
        "# k-means: features vs faiss.Kmeans",
        "",
        f"{len(x):,} sbow dense SIFT descriptors (uint8; {(~x.any(1)).mean():.0%} all-zero) of "
        f"1400 generated ImageNet-like JPEGs = {args.points} per centroid, k = {k}, "
        f"one thread each, seeds 0..{args.seeds - 1} interleaved; medians. FAISS "
        f"{faiss.__version__} (`faiss.Kmeans`: {args.iters} iterations from random rows, no "
        f"subsampling). Quantization error: mean squared Euclidean distance to the nearest "
        f"centroid on {len(held):,} held-out descriptors of 600 other images (the bar: "
        f"equal or lower than FAISS's), and on the training sample. Load average (1 min) "
        f"{load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end, on "
        f"{os.cpu_count()} cores shared with other jobs: compare the ratios, measured in "
        f"the same run, rather than the seconds.",
        "",
        "| k-means | iterations | wall s | CPU s | speed-up (wall) | speed-up (CPU) | "
        "held-out error | vs FAISS | training error |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ] + [f"| {name} | {s['iterations']:.0f} | {s['wall_s']:.1f} | {s['cpu_s']:.1f} | "
         f"{s['speedup_wall']:.2f} | "
         f"{s['speedup_cpu']:.2f} | {s['held_out_error']:.1f} | "
         f"{100 * (s['held_out_vs_faiss'] - 1):+.2f}% | {s['train_error']:.1f} |"
         for name, s in summary.items()] + [
        "",
        "Per seed (held-out error): " + "; ".join(
            f"{name}: " + ", ".join(f"{r['held_out_error']:.1f}" for r in runs[name])
            for name in methods),
        "",
        "Per seed (CPU speed-up over FAISS in the same round): " + "; ".join(
            f"{name}: " + ", ".join(f"{f['cpu_s'] / r['cpu_s']:.2f}"
                                    for f, r in zip(runs[base], runs[name]))
            for name in methods if name != base),
    ]
    (out_dir / "kmeans.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def faiss_kmeans(x, k, iters, seed):
    km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=seed, max_points_per_centroid=1 << 30,
                      min_points_per_centroid=1)
    km.train(x)
    return km.centroids


if __name__ == "__main__":
    main()
