"""Nearest-centroid assignment: features.assign.Assigner against FAISS exact search.

Peer: ``faiss.IndexFlatL2(128).search(x, 1)``, what the sbow peer pipeline uses. Ours:
``Assigner(centroids).assign(x)`` (exact, lower-bound pruning; see src/features/codebook/assign.py),
plus its brute-force method and a sweep of the bound's rank. Where the CPU has AVX512_BF16 the
default takes the bfloat16 bounds; the float32 BLAS path (``FEATURES_ASSIGN_BF16=0``, what
other CPUs run) is timed beside it, at its own default rank. One process, one thread
(FAISS OpenMP, the BLAS libraries and our kernel), the same descriptors, one call per
image as the pipeline makes it, methods interleaved in every round; medians of the rounds.

Realistic setting, built here from the photos scikit-image ships:
- sbow: dense SIFT (``features.dense_sift_pyramid``: bin 5, step 10, scales 1, 1/2, 1/4)
  on 300 x 225 crops (an ImageNet 500 x 375 JPEG resized to max side 300: ~780
  descriptors); 1000 words from ``features.codebook.kmeans`` (seed 0) on 100k descriptors
  sampled from crops of one set of photos; timed and scored on crops of OTHER photos.
- sift: OpenCV RootSIFT (``features.sift(gray, root=True)``), codebook and test split
  the same way.
Agreement is against a float64 brute-force argmin (ties to the smallest index).

    python benchmarks/bench_assign.py [--rounds 7] [--images 40]
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
sys.path.insert(0, str(HERE.parent / "src"))

from features.codebook import Assigner  # noqa: E402
from features.codebook import kmeans  # noqa: E402
from features.extract.dense import dense_sift_pyramid  # noqa: E402
from features.extract import sift  # noqa: E402

TRAIN = ("brick.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png",
         "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png",
         "moon.png", "page.png", "retina.jpg", "text.png", "horse.png", "color.png",
         "microaneurysms.png")
TEST = ("astronaut.png", "camera.png", "rocket.jpg", "motorcycle_left.png",
        "motorcycle_right.png")
PER_IMAGE = 780          # the sbow descriptors of a 300 x 225 image
WORDS = 1000


def _gray(name):
    import skimage
    from skimage.io import imread
    image = np.asarray(imread(Path(skimage.__file__).parent / "data" / name))
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
    if image.dtype != np.uint8:
        image = (255 * (image / max(image.max(), 1))).astype(np.uint8)
    return image


def _crop(gray, rng, shape):
    """A random crop with the aspect of ``shape`` (h, w), flipped at random, resized."""
    h, w = gray.shape
    th, tw = shape
    scale = rng.uniform(0.5, 1.0) * min(h / th, w / tw)
    ch, cw = max(8, int(th * scale)), max(8, int(tw * scale))
    y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = gray[y0:y0 + ch, x0:x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(np.ascontiguousarray(crop), (tw, th), interpolation=cv2.INTER_AREA)


def _dsift(gray):
    return dense_sift_pyramid(gray, bin_size=5, step=10, scales=(1.0, 0.5, 0.25))[1]


def _rootsift(gray):
    return sift(gray, root=True)[1]


def build_setting(kind, n_images, rng):
    """(codebook, list of per-image descriptor arrays of the test photos)."""
    if kind == "sbow":
        extract, shape, crops_per_photo, sample = _dsift, (225, 300), 12, 100_000
    else:
        extract, shape, crops_per_photo, sample = _rootsift, (480, 640), 6, 100_000
    train = [extract(_crop(_gray(name), rng, shape))
             for name in TRAIN for _ in range(crops_per_photo)]
    pool = np.concatenate(train)
    rows = rng.choice(len(pool), size=min(sample, len(pool)), replace=False)
    t0 = time.perf_counter()
    centroids = kmeans(pool[rows].astype(np.float32), WORDS, seed=0, n_threads=1)
    fit = time.perf_counter() - t0
    photos = [_gray(name) for name in TEST]
    images = [extract(_crop(photos[i % len(photos)], rng, shape)) for i in range(n_images)]
    info = {"train_descriptors": int(len(pool)), "kmeans_sample": int(len(rows)),
            "kmeans_seconds": round(fit, 1), "test_images": len(images),
            "test_descriptors": int(sum(len(x) for x in images)),
            "descriptors_per_image": round(float(np.mean([len(x) for x in images])), 1),
            "zero_descriptors": round(float(np.mean(np.concatenate(images).max(1) == 0)), 4)}
    return centroids, images, info


def reference(centroids, x, chunk=512):
    """Float64 brute-force argmin, ties to the smallest index."""
    c = centroids.astype(np.float64)
    out = np.empty(len(x), np.int64)
    for s in range(0, len(x), chunk):
        xs = x[s:s + chunk].astype(np.float64)
        out[s:s + chunk] = ((xs[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
    return out


def run(kind, args, rng):
    centroids, images, info = build_setting(kind, args.images, rng)
    allx = np.concatenate(images)
    truth = reference(centroids, allx)

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(centroids)

    def faiss_assign(x):
        return index.search(np.ascontiguousarray(x, dtype=np.float32), 1)[1][:, 0]

    methods = {"faiss IndexFlatL2": faiss_assign}
    default = Assigner(centroids)
    path = "bfloat16" if default._use_bf16 else "float32"
    methods[f"features pruned r={default.rank} (default, {path})"] = default.assign
    if default._use_bf16:
        os.environ["FEATURES_ASSIGN_BF16"] = "0"
        portable = Assigner(centroids)
        del os.environ["FEATURES_ASSIGN_BF16"]
        methods[f"features pruned r={portable.rank} (float32 BLAS path)"] = portable.assign
    methods["features brute"] = Assigner(centroids, method="brute").assign
    for r in args.ranks:
        if r != default.rank:
            methods[f"features pruned r={r}"] = Assigner(centroids, method="pruned",
                                                         rank=r).assign

    mismatches = {}
    for name, fn in methods.items():
        words = np.concatenate([fn(x) for x in images])
        mismatches[name] = int(np.sum(words != truth))

    # All-zero descriptors are free for us (not for FAISS): time the two
    # defaults once more on the same images without them, the harder case.
    nonzero = [x[x.max(axis=1) > 0] for x in images]
    runs = [(name, fn, images, "") for name, fn in methods.items()]
    if info["zero_descriptors"] > 0:
        runs += [(name, methods[name], nonzero, " (all-zero rows removed)")
                 for name in list(methods)[:3 if default._use_bf16 else 2]]
    totals = {name + tag: [] for name, _, _, tag in runs}
    for _ in range(args.rounds):
        for name, fn, imgs, tag in runs:
            t0 = time.perf_counter()
            for x in imgs:
                fn(x)
            totals[name + tag].append(time.perf_counter() - t0)
    rows = []
    base = {}
    for name, _, imgs, tag in runs:
        n = sum(len(x) for x in imgs)
        sec = float(np.median(totals[name + tag]))
        ms = 1e3 * sec / n * PER_IMAGE
        base.setdefault(tag, ms)
        rows.append({"method": name + tag, "ms_per_780": round(ms, 3),
                     "descriptors_per_s": round(n / sec),
                     "speedup_vs_faiss": round(base[tag] / ms, 2),
                     "agreement_with_exact": 1.0 - mismatches[name] / len(allx),
                     "mismatches": mismatches[name], "descriptors": len(allx)})
    out = {"setting": info, "results": rows}
    if default._use_bf16:
        # The two paths of the default side by side (same rounds, interleaved).
        ms = {row["method"]: row["ms_per_780"] for row in rows}
        names = list(methods)[1:3]
        out["bf16_vs_float32"] = {tag or "all rows": round(ms[names[0] + tag] / ms[names[1] + tag], 3)
                                  for _, _, _, tag in runs[:1] + runs[len(methods):][:1]}
    return out


def blas_info():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    return [{k: v for k, v in lib.items() if k in ("internal_api", "prefix", "version",
                                                     "architecture", "num_threads")}
            for lib in threadpool_info()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--ranks", type=int, nargs="*", default=[24, 32, 40, 48, 56])
    parser.add_argument("--out", default=str(HERE / "results" / "assign"))
    parser.add_argument("--kinds", nargs="*", default=["sbow", "sift"], choices=["sbow", "sift"])
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(1)
    except ImportError:  # the environment variables above already ask for 1 thread
        limits = None
    rng = np.random.default_rng(0)
    report = {"machine": {"cpu": platform.processor() or platform.machine(),
                          "cores": os.cpu_count(), "python": platform.python_version(),
                          "numpy": np.__version__, "faiss": faiss.__version__,
                          "blas": blas_info(),
                          "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")},
              "threads": 1, "rounds": args.rounds}
    for kind in args.kinds:
        report[kind] = run(kind, args, rng)
        for row in report[kind]["results"]:
            print(f"{kind:5s} {row['method']:36s} {row['ms_per_780']:7.3f} ms/780  "
                  f"{row['descriptors_per_s']:>9,d} desc/s  x{row['speedup_vs_faiss']:5.2f}  "
                  f"agree {100 * row['agreement_with_exact']:.3f}% "
                  f"({row['mismatches']} differ)", flush=True)
        if "bf16_vs_float32" in report[kind]:
            print(f"{kind:5s} time of the bfloat16 path / the float32 BLAS path: "
                  f"{report[kind]['bf16_vs_float32']}", flush=True)
    if limits is not None:
        limits.restore_original_limits()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


def markdown(report):
    lines = ["# Nearest-centroid assignment: features vs FAISS exact search", "",
             f"One process, one thread (FAISS OpenMP, BLAS, our kernel), 1000 words, 128-D; "
             f"one call per image; median of {report['rounds']} interleaved rounds. "
             f"ms are per {PER_IMAGE} descriptors (one sbow image). Agreement is with a "
             f"float64 brute-force argmin (ties to the smallest index). numpy "
             f"{report['machine']['numpy']}, faiss {report['machine']['faiss']}.", ""]
    for kind, title in (("sbow", "sbow: dense SIFT pyramid, 300 x 225 crops"),
                        ("sift", "sift: OpenCV RootSIFT, 640 x 480 crops")):
        if kind not in report:
            continue
        s = report[kind]["setting"]
        lines += [f"## {title}", "",
                  f"Codebook: k-means on {s['kmeans_sample']:,} of {s['train_descriptors']:,} "
                  f"descriptors of {len(TRAIN)} photos; test: {s['test_images']} crops of "
                  f"{len(TEST)} other photos, {s['test_descriptors']:,} descriptors "
                  f"({s['descriptors_per_image']} per image, "
                  f"{100 * s['zero_descriptors']:.1f}% all-zero).", "",
                  "| method | ms / 780 descriptors | descriptors/s | speed-up vs FAISS "
                  "| words equal to exact |", "|---|---|---|---|---|"]
        for row in report[kind]["results"]:
            lines.append(f"| {row['method']} | {row['ms_per_780']:.3f} | "
                         f"{row['descriptors_per_s']:,} | {row['speedup_vs_faiss']:.2f} | "
                         f"{100 * row['agreement_with_exact']:.3f}% "
                         f"({row['descriptors'] - row['mismatches']:,} of "
                         f"{row['descriptors']:,}) |")
        if "bf16_vs_float32" in report[kind]:
            lines += ["", "Time of the bfloat16 path over the float32 BLAS path (same rounds): "
                      + ", ".join(f"{k}: {v}" for k, v in report[kind]["bf16_vs_float32"].items())
                      + "."]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
