"""Encoders side by side: features.fisher_vector and features.vlad against VLFeat 0.9.21
(``vl_fisher_encode``, ``vl_vlad_encode`` through ctypes, benchmarks/_vlfeat.py) and
against the plain NumPy references of the tests (tests/encoding_reference.py).

One process, one thread (BLAS, VLFeat's OpenMP, our kernels); per image one call, as
the aggregate step makes it per image; every case of a round runs over the same images,
cases interleaved in every round; medians of the rounds. Ratios are against the peer
(the first case of each group) measured in the same run.

Setting, built here from the photos scikit-image ships: dense SIFT
(``features.dense_sift``, step 4, bin sizes 4, 6, 8, 10) of photos at max side 256
(about 10,900 descriptors each), 10,000 descriptors per image (a seeded subset).
- Fisher: PCA to 64 dimensions and a 256-component diagonal GMM (k-means, then one
  maximization step), learned from other photos; encodings with the improved flag.
- VLAD: 64 k-means centers of the raw 128-D descriptors; hard assignment to the nearest
  center, timed both with the assignment given to both sides (excluded) and computed by
  each side (included: VLFeat's ``vl_kmeans_quantize``, then the dense N x K matrix
  that ``vl_vlad_encode`` takes; ours: ``features.vlad(x, centers)``).

Adding rows: append a ``Case`` to ``CASES`` (or groups to it from another module):
``Case(group, name, make)`` where ``make(setting)`` returns a function of one image
index; the first case of a group is the peer the others are compared with. ``setting``
holds the images and models (see ``build_setting``).

    python benchmarks/bench_encode.py [--rounds 7] [--images 5]
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from _vlfeat import (VL_FISHER_FLAG_FAST, VL_FISHER_FLAG_IMPROVED,  # noqa: E402
                     VL_VLAD_FLAG_NORMALIZE_COMPONENTS, VL_VLAD_FLAG_SQUARE_ROOT, VLFeat,
                     load_libvl)
from encoding_reference import (fisher_reference, gmm_from_kmeans,  # noqa: E402
                                nearest_centers, pca_fit, vlad_reference)

from features import fisher_vector, vlad  # noqa: E402
from features.codebook import kmeans  # noqa: E402
from features.extract.dense import dense_sift  # noqa: E402

TRAIN = ("brick.png", "grass.png", "gravel.png", "coins.png", "moon.png", "page.png",
         "clock_motion.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png")
TEST = ("camera.png", "astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg",
        "retina.jpg", "motorcycle_right.png", "text.png")
PER_IMAGE = 10_000
FISHER_K, FISHER_D = 256, 64
VLAD_K = 64
VLAD_FLAGS = VL_VLAD_FLAG_NORMALIZE_COMPONENTS | VL_VLAD_FLAG_SQUARE_ROOT


def _gray(name, max_side=256):
    import skimage
    from skimage.io import imread
    image = np.asarray(imread(Path(skimage.__file__).parent / "data" / name))
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
    if image.dtype != np.uint8:
        image = (255 * (image / max(image.max(), 1))).astype(np.uint8)
    scale = max_side / max(image.shape)
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))


def _descriptors(name, rng, count=None):
    d = dense_sift(_gray(name), step=4, sizes=(4, 6, 8, 10))[1]
    if count is not None:
        if len(d) < count:   # a narrow photo: a larger version gives enough frames
            d = dense_sift(_gray(name, 320), step=4, sizes=(4, 6, 8, 10))[1]
        d = d[np.sort(rng.choice(len(d), count, replace=False))]
    return d


def build_setting(n_images, rng):
    train = np.concatenate([_descriptors(name, rng) for name in TRAIN])
    sample = train[rng.choice(len(train), min(60_000, len(train)), replace=False)]
    sample = sample.astype(np.float32)
    mean, components = pca_fit(sample, FISHER_D)
    project = lambda d: ((d - mean) @ components.T).astype(np.float32)  # noqa: E731
    t0 = time.perf_counter()
    gmm = gmm_from_kmeans(project(sample), FISHER_K)
    centers = kmeans(sample, VLAD_K, seed=1, iters=10)
    fit = time.perf_counter() - t0
    raw = [_descriptors(TEST[i % len(TEST)], rng, PER_IMAGE) for i in range(n_images)]
    raw = [d.astype(np.float32) for d in raw]
    words = [nearest_centers(x, centers) for x in raw]
    onehot = []
    for w in words:
        m = np.zeros((len(w), VLAD_K), np.float32)
        m[np.arange(len(w)), w] = 1
        onehot.append(m)
    return {"projected": [project(d) for d in raw], "raw": raw, "gmm": gmm,
            "centers": centers, "words": [w.astype(np.int32) for w in words],
            "onehot": onehot,
            "info": {"train_descriptors": int(len(train)), "model_sample": int(len(sample)),
                     "models_seconds": round(fit, 1), "test_images": n_images,
                     "descriptors_per_image": PER_IMAGE,
                     "photos": [TEST[i % len(TEST)] for i in range(n_images)]}}


def fisher_blas_only(x, means, covariances, priors):
    """The all-BLAS alternative to our kernel, for the record: every log-likelihood and
    posterior (float32 product, NumPy softmax), then the gradients as products of the
    posteriors with x and x**2 (float64, the 1e-6 cut applied)."""
    inv = 1.0 / covariances.astype(np.float64)
    w = np.vstack([-0.5 * inv.T, (means * inv).T]).astype(np.float32)
    c = (np.log(priors) - 0.5 * np.log(covariances.astype(np.float64)).sum(1)
         - 0.5 * (means.astype(np.float64) ** 2 * inv).sum(1)).astype(np.float32)
    z = np.hstack([x * x, x])
    h = z @ w + c
    h -= h.max(axis=1, keepdims=True)
    np.exp(h, out=h)
    h /= h.sum(axis=1, keepdims=True)
    h[h < 1e-6] = 0
    q = h.astype(np.float64)
    n = len(x)
    mass = q.sum(0)
    s1 = q.T @ x.astype(np.float64)
    s2 = q.T @ (x.astype(np.float64) ** 2)
    mu = means.astype(np.float64)
    u = (s1 - mass[:, None] * mu) * np.sqrt(inv) / (n * np.sqrt(priors[:, None]))
    v = ((s2 - 2 * mu * s1 + mass[:, None] * mu ** 2) * inv - mass[:, None]) \
        / (n * np.sqrt(2 * priors[:, None]))
    enc = np.concatenate([u.ravel(), v.ravel()])
    enc = np.sign(enc) * np.sqrt(np.abs(enc))
    return (enc / max(np.linalg.norm(enc), 1e-12)).astype(np.float32)


@dataclass
class Case:
    group: str
    name: str
    make: Callable       # setting -> (image index -> encoding)
    slow: bool = False   # run in the first `--slow-rounds` rounds only


def _fisher_cases(vl):
    g = f"Fisher vector, K={FISHER_K}, D={FISHER_D}, improved"

    def peer(s):
        return lambda i: vl.fisher(s["projected"][i], *s["gmm"], VL_FISHER_FLAG_IMPROVED)

    def ours(s):
        return lambda i: fisher_vector(s["projected"][i], *s["gmm"])

    def blas(s):
        return lambda i: fisher_blas_only(s["projected"][i], *s["gmm"])

    def ref(s):
        return lambda i: fisher_reference(s["projected"][i], *s["gmm"])

    gf = f"Fisher vector, K={FISHER_K}, D={FISHER_D}, improved + fast (hard posteriors)"

    def peer_fast(s):
        return lambda i: vl.fisher(s["projected"][i], *s["gmm"],
                                   VL_FISHER_FLAG_IMPROVED | VL_FISHER_FLAG_FAST)

    def ours_fast(s):
        return lambda i: fisher_vector(s["projected"][i], *s["gmm"], fast=True)

    return [Case(g, "VLFeat vl_fisher_encode (1 thread)", peer),
            Case(g, "features.fisher_vector", ours),
            Case(g, "all-BLAS variant (NumPy, no kernel)", blas),
            Case(g, "plain NumPy reference (float64)", ref, slow=True),
            Case(gf, "VLFeat vl_fisher_encode FAST (1 thread)", peer_fast),
            Case(gf, "features.fisher_vector(fast=True)", ours_fast)]


def _vlad_cases(vl):
    g = f"VLAD, K={VLAD_K}, D=128, hard assignment given (excluded)"
    gi = f"VLAD, K={VLAD_K}, D=128, hard assignment included"

    def peer(s):
        return lambda i: vl.vlad(s["raw"][i], s["centers"], s["onehot"][i], VLAD_FLAGS)

    def ours_words(s):
        return lambda i: vlad(s["raw"][i], s["centers"], s["words"][i])

    def ours_onehot(s):
        return lambda i: vlad(s["raw"][i], s["centers"], s["onehot"][i])

    def ref(s):
        return lambda i: vlad_reference(s["raw"][i], s["centers"], s["words"][i])

    def peer_incl(s):
        quantize = vl.kmeans_quantizer(s["centers"])

        def run(i):
            x = s["raw"][i]
            words = quantize(x)
            onehot = np.zeros((len(x), VLAD_K), np.float32)
            onehot[np.arange(len(x)), words] = 1
            return vl.vlad(x, s["centers"], onehot, VLAD_FLAGS)
        return run

    def ours_incl(s):
        return lambda i: vlad(s["raw"][i], s["centers"])

    def ref_incl(s):
        return lambda i: vlad_reference(s["raw"][i], s["centers"])

    return [Case(g, "VLFeat vl_vlad_encode (1 thread, dense N x K assignments)", peer),
            Case(g, "features.vlad, indices (N,)", ours_words),
            Case(g, "features.vlad, the same dense N x K matrix", ours_onehot),
            Case(g, "plain NumPy reference (float64)", ref, slow=True),
            Case(gi, "VLFeat vl_kmeans_quantize + vl_vlad_encode (1 thread)", peer_incl),
            Case(gi, "features.vlad(x, centers)", ours_incl),
            Case(gi, "plain NumPy reference (float64)", ref_incl, slow=True)]


CASES = []   # filled in main() (VLFeat must be loaded first); others may append


def _cosine(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))


def run(cases, setting, rounds, slow_rounds):
    n = setting["info"]["test_images"]
    fns = [case.make(setting) for case in cases]
    # agreement of every case with the group's peer, per image
    agreement = []
    peers = {}
    for case, fn in zip(cases, fns):
        outs = [np.array(fn(i), copy=True) for i in range(n)]
        peers.setdefault(case.group, outs)
        agreement.append(min(_cosine(o, p) for o, p in zip(outs, peers[case.group])))
    times = [[] for _ in cases]
    for r in range(rounds):
        for c, (case, fn) in enumerate(zip(cases, fns)):
            if case.slow and r >= slow_rounds:
                continue
            t0 = time.perf_counter()
            for i in range(n):
                fn(i)
            times[c].append((time.perf_counter() - t0) / n)
    rows, base = [], {}
    for case, t, cos in zip(cases, times, agreement):
        ms = 1e3 * float(np.median(t))
        base.setdefault(case.group, ms)
        rows.append({"group": case.group, "case": case.name, "ms_per_image": round(ms, 3),
                     "rounds": len(t), "speedup_vs_peer": round(base[case.group] / ms, 2),
                     "min_cosine_with_peer": round(cos, 9)})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--slow-rounds", type=int, default=2,
                        help="rounds of the plain NumPy references (slow)")
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--out", default=str(HERE / "results" / "encode"))
    args = parser.parse_args()
    lib = load_libvl()
    if lib is None:
        sys.exit("bench_encode: VLFeat (libvl.so) not found; apt-get install libvlfeat-dev")
    vl = VLFeat(lib)
    vl.set_num_threads(1)
    CASES[:0] = _fisher_cases(vl) + _vlad_cases(vl)
    rng = np.random.default_rng(0)
    setting = build_setting(args.images, rng)
    rows = run(CASES, setting, args.rounds, args.slow_rounds)
    for row in rows:
        print(f"{row['group'][:44]:44s} {row['case'][:50]:50s} {row['ms_per_image']:9.2f} ms"
              f"  x{row['speedup_vs_peer']:6.2f}  cos {row['min_cosine_with_peer']:.7f}",
              flush=True)
    report = {"machine": {"cpu": platform.processor() or platform.machine(),
                          "cores": os.cpu_count(), "python": platform.python_version(),
                          "numpy": np.__version__, "vlfeat": vl.version},
              "threads": 1, "rounds": args.rounds, "slow_rounds": args.slow_rounds,
              "setting": setting["info"], "results": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


def markdown(report):
    s = report["setting"]
    lines = ["# Encoders: features vs VLFeat 0.9.21 and the plain NumPy references", "",
             f"`python benchmarks/bench_encode.py`. One process, one thread (BLAS, VLFeat, "
             f"our kernels); one call per image; {s['test_images']} images of "
             f"{s['descriptors_per_image']:,} dense SIFT descriptors (step 4, bin sizes "
             f"4-10, photos at max side 256: {', '.join(s['photos'])}); median of "
             f"{report['rounds']} interleaved rounds ({report['slow_rounds']} for the plain "
             f"NumPy references). Models learned from {s['model_sample']:,} descriptors "
             f"of other photos. Speed-up and cosine (the minimum over the images) are "
             f"against the first row of each table, measured in the same run. "
             f"VLFeat {report['machine']['vlfeat']}, numpy {report['machine']['numpy']}.",
             ""]
    group = None
    for row in report["results"]:
        if row["group"] != group:
            group = row["group"]
            lines += ["", f"## {group}", "",
                      "| implementation | ms / image | speed-up vs peer | min cosine with peer |",
                      "|---|---:|---:|---:|"]
        lines.append(f"| {row['case']} | {row['ms_per_image']:.2f} | "
                     f"{row['speedup_vs_peer']:.2f} | {row['min_cosine_with_peer']:.7f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
