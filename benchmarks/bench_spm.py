"""Spatial pyramids and the homogeneous kernel map, side by side with their peers.

    python benchmarks/bench_spm.py [--images 1000] [--runs 7]

1. Spatial pyramid (1x1, 2x2, 4x4; 1000 words; sbow-like images of 780 descriptors) of a
   shard of images: ``features.encodings.spm.spatial_pyramid`` (the whole shard at once)
   against the NumPy a user would write (per image, one ``np.bincount`` per grid, then the
   non-zeros), same values checked.
2. Homogeneous kernel map (chi2, order 1) of the non-zeros of those pyramids:
   ``HomogeneousKernelMap.transform`` (compiled, closed form) against the same map in NumPy
   (VLFeat 0.9.21 exports ``vl_homogeneouskernelmap_evaluate_f`` for one value at a time
   only, so through ctypes its time would be that of the calls: it is the agreement peer
   here, not the speed one).

One thread, medians of interleaved runs; results in benchmarks/results/spm.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _vlfeat import homkermap as vl_homkermap, load_libvl  # noqa: E402

from features.encodings.kernel_map import HomogeneousKernelMap  # noqa: E402
from features.encodings.spm import spatial_pyramid  # noqa: E402

GRIDS = ((1, 1), (2, 2), (4, 4))


def make_shard(n_images, per_image, n_words, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.integers(per_image // 2, per_image * 3 // 2, n_images)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    m = int(offsets[-1])
    widths = np.full(n_images, 500)
    heights = np.full(n_images, 375)
    image = np.repeat(np.arange(n_images), counts)
    frames = np.zeros((m, 4), np.float32)
    frames[:, 0] = rng.random(m) * widths[image]
    frames[:, 1] = rng.random(m) * heights[image]
    # words with a Zipf-like frequency, as visual words have
    words = np.minimum(rng.zipf(1.3, m) - 1, n_words - 1).astype(np.int16)
    return words, frames, offsets, widths, heights


def peer_spm(words, frames, offsets, widths, heights, n_words):
    """Per image: one bincount per grid, Lazebnik weights, L1, then the non-zeros."""
    weights = (0.25, 0.25, 0.5)
    rows = []
    for i in range(len(offsets) - 1):
        a, b = offsets[i], offsets[i + 1]
        w, x, y = words[a:b].astype(np.int64), frames[a:b, 0], frames[a:b, 1]
        parts = []
        for (r, c), weight in zip(GRIDS, weights):
            ri = np.clip((y / heights[i] * r).astype(np.int64), 0, r - 1)
            ci = np.clip((x / widths[i] * c).astype(np.int64), 0, c - 1)
            h = np.bincount((ri * c + ci) * n_words + w, minlength=r * c * n_words)
            parts.append(h * (weight / max(b - a, 1)))
        v = np.concatenate(parts)
        v /= max(v.sum(), 1e-12)
        nz = np.flatnonzero(v)
        rows.append((nz.astype(np.int32), v[nz].astype(np.float32)))
    return rows


def numpy_homkermap(m, x):
    return m.reference(x.reshape(-1, 1))


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--per-image", type=int, default=780)
    p.add_argument("--words", type=int, default=1000)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--vl-values", type=int, default=200_000,
                   help="values compared with VLFeat (one ctypes call each)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except ImportError:
        pass

    shard = make_shard(args.images, args.per_image, args.words)
    csr = spatial_pyramid(*shard, args.words, GRIDS)
    peer = peer_spm(*shard, args.words)
    for i in range(0, args.images, max(1, args.images // 20)):
        idx, val = peer[i]
        a, b = csr.indptr[i], csr.indptr[i + 1]
        assert np.array_equal(csr.indices[a:b], idx)
        np.testing.assert_allclose(csr.data[a:b], val, rtol=1e-5, atol=1e-8)

    m = HomogeneousKernelMap("chi2", 1)
    values = csr.data
    lib = load_libvl()
    vl_x = values[:args.vl_values]
    if lib is not None:
        theirs = vl_homkermap(lib, vl_x[None, :], kernel="chi2", order=1)
        ours = m.transform(vl_x[None, :])
        err = np.abs(ours - theirs).reshape(-1, 3)
        rel = np.linalg.norm(err, axis=1) / np.linalg.norm(theirs.reshape(-1, 3), axis=1)
        agreement = {"max_relative": float(rel.max()), "median_relative": float(np.median(rel))}
    else:
        agreement = None

    times = {k: [] for k in ("spm", "spm_peer", "map", "map_numpy")}
    for _ in range(args.runs):
        times["spm"].append(timed(lambda: spatial_pyramid(*shard, args.words, GRIDS))[0])
        times["spm_peer"].append(timed(lambda: peer_spm(*shard, args.words))[0])
        times["map"].append(timed(lambda: m.transform(values))[0])
        times["map_numpy"].append(timed(lambda: numpy_homkermap(m, values))[0])
    med = {k: statistics.median(v) for k, v in times.items() if v}
    n_vals = len(values)
    res = {
        "machine": platform.machine(), "python": platform.python_version(),
        "images": args.images, "descriptors": int(shard[2][-1]), "words": args.words,
        "grids": "1x1,2x2,4x4", "nonzeros": int(n_vals), "runs": args.runs,
        "spm_ms_per_image": 1e3 * med["spm"] / args.images,
        "spm_peer_ms_per_image": 1e3 * med["spm_peer"] / args.images,
        "spm_speedup": med["spm_peer"] / med["spm"],
        "map_ns_per_value": 1e9 * med["map"] / n_vals,
        "map_numpy_ns_per_value": 1e9 * med["map_numpy"] / n_vals,
        "map_speedup_vs_numpy": med["map_numpy"] / med["map"],
        "vlfeat_agreement": agreement,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spm.json").write_text(json.dumps(res, indent=1) + "\n")
    lines = [
        "# Spatial pyramid and homogeneous kernel map",
        "",
        f"`python benchmarks/bench_spm.py`: one thread, median of {args.runs} interleaved runs; "
        f"{args.images} images of {args.per_image // 2}-{args.per_image * 3 // 2} descriptors "
        f"({res['descriptors']} in all), {args.words} words, grids 1x1, 2x2, 4x4.",
        "",
        "| step | implementation | time | ratio |",
        "|---|---|---:|---:|",
        f"| spatial pyramid | `spatial_pyramid` (whole shard) | {res['spm_ms_per_image']:.3f} "
        f"ms / image | {res['spm_speedup']:.1f}x faster |",
        f"| spatial pyramid | NumPy per image (bincount per grid) | "
        f"{res['spm_peer_ms_per_image']:.3f} ms / image | 1 |",
        f"| chi2 map, order 1 ({n_vals} non-zeros) | `HomogeneousKernelMap.transform` | "
        f"{res['map_ns_per_value']:.1f} ns / value | {res['map_speedup_vs_numpy']:.1f}x faster |",
        f"| chi2 map, order 1 | NumPy closed form | {res['map_numpy_ns_per_value']:.1f} ns / value "
        f"| 1 |",
    ]
    if agreement is not None:
        lines += ["", f"Agreement with VLFeat on {len(vl_x)} values (norm of the difference of "
                  f"each value's expansion over its norm): max {agreement['max_relative']:.2e}, "
                  f"median {agreement['median_relative']:.2e} (VLFeat interpolates a table; "
                  f"ours is the closed form)."]
    (out / "spm.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
