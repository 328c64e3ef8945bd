"""Where each millisecond of the `sbow` pass 2 goes, one job, against its physical floor.

Pass 2 (`features encode`, the second half of `features run --preset sbow`) reads every
image, hashes it, decodes it to gray at max side 300, runs dense SIFT at full, half and
quarter size, assigns each descriptor to its nearest of 1000 words, counts the words,
writes a shard, and finally merges the shards into store.h5. This script times each of
those stages per image, in this process, with the package's own functions, on the first
``--images`` JPEGs of a corpus of `benchmarks/corpus.py`; then the whole step
(`encode_images`, ``jobs=1``: one worker process) against the same work done in this
process, which is what crash isolation costs (worker starts, messages, transfers).

Each stage is given with its floor on this machine, measured in the same run:
- bytes moved at the memory bandwidth (a large ``np.copyto``) for reading from the page
  cache, resizing and writing;
- hashing at ``hashlib.sha256``'s rate on a large buffer;
- JPEG decoding: libjpeg-turbo alone (``cv2.imdecode``), the fastest decoder here;
- the assignment's products: their FLOPs at the single-thread SGEMM rate of a large
  product (OpenBLAS);
- dense SIFT: a FLOP model of the kernel (smoothing, gradients, orientation planes,
  triangle filtering) at that same rate.

Times are CPU seconds of this thread (``time.thread_time``), medians over ``--repeats``
passes, so that other jobs on a shared machine inflate them less than wall time; wall
times are reported next to them.

    python benchmarks/bench_pass2_costs.py [--images 300] [--repeats 3]
        [--quality 92 99 --name pass2_costs_ilsvrc_bytes]

Writes benchmarks/results/pass2_costs.{json,md} (NAME.{json,md} with ``--name``);
``--quality 92 99`` generates JPEGs of about 100 KB, near ILSVRC-2012's 110 KB per image,
instead of the corpus's default 55 KB.
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import hashlib
import json
import pickle
import resource
import sys
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from corpus import (add_quality_argument, corpus_stats, make_corpus, quality_option,  # noqa: E402
                    quality_tag)
from encode_store import store_with_codebook  # noqa: E402

from features._shared.threads import single_threaded_libraries  # noqa: E402
from features.codebook import Assigner  # noqa: E402
from features.decode import _shrink, decode_gray  # noqa: E402
from features.encodings.bovw import word_counts_csr  # noqa: E402
from features.extract import Extraction, dense_sift, extract_image  # noqa: E402
from features._ext import _area  # noqa: E402
from features.extract.dense import (_as_float_image, _block_mean_is_opencvs,  # noqa: E402
                                    _integer_factors)
from features.pipeline import encode_images, sample_descriptors, train_codebook  # noqa: E402
from features.pipeline import steps as pipeline_steps  # noqa: E402
from features.pipeline.runner import batched  # noqa: E402
from features.pipeline.tasks import STAGE_BATCH  # noqa: E402
from features.presets import get_preset  # noqa: E402
from features.sources import open_source  # noqa: E402
from features.sources.base import items_digest  # noqa: E402
from features.store import ImageResult, write_shard  # noqa: E402
from features.store.layout import word_dtype  # noqa: E402

CPU, WALL = time.thread_time, time.perf_counter
DIGESTS = "items' digests of the shard record (stat per item, twice)"
SHARD = "shard write (count the words, build the HDF5 image, write, sha256 of it)"
COUNTS = "  of which word counts (word_counts_csr, the shard's images at once)"


class Clock:
    """Per-stage CPU and wall seconds, summed over a pass."""

    def __init__(self):
        self.cpu, self.wall = {}, {}

    def add(self, stage, c0, w0):
        c, w = CPU(), WALL()
        self.cpu[stage] = self.cpu.get(stage, 0.0) + c - c0
        self.wall[stage] = self.wall.get(stage, 0.0) + w - w0
        return c, w


def area_resize(image, factor):
    """The pyramid's resize of one scale, as features.extract.dense._resize does it (the
    area kernel; OpenCV for integer factors if its float 2 x 2 loop is not the kernel's),
    without its clipping."""
    h, w = image.shape
    size = (max(int(round(w * factor)), 1), max(int(round(h * factor)), 1))
    if size == (w, h):
        return image
    if _integer_factors(w, h, size) and not _block_mean_is_opencvs():
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    out = np.empty((size[1], size[0]), np.float32)
    _area.area_resize(image, out)
    return out


def stage_pass(config, items, quantizer, clock, info):
    """One pass over the items, stage by stage, as `process_shard` does them: each stage over
    a batch of ``STAGE_BATCH`` images before the next stage."""
    ex = Extraction.of(config)
    results = []
    for batch in batched(items, STAGE_BATCH):
        decoded_part = []
        for item in batch:
            c, w = CPU(), WALL()
            data = item.read()
            c, w = clock.add("read (open + read from the page cache)", c, w)
            digest = hashlib.sha256(data).hexdigest()
            c, w = clock.add("sha256 of the file bytes", c, w)
            # decode_gray, and its two native parts alone on the same bytes
            decoded = decode_gray(data, config.max_side)
            c, w = clock.add("decode_gray (all)", c, w)
            full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
            c, w = clock.add("  of which libjpeg decode (cv2.imdecode, gray)", c, w)
            th, tw = decoded.gray.shape
            if full.shape != (th, tw):
                _shrink(full, tw, th)       # as decode_gray does it (the area kernel)
            c, w = clock.add("  of which resize to max side 300 (uint8, area)", c, w)
            info["pixels_full"] += full.size
            info["pixels"] += decoded.gray.size
            info["bytes"] += len(data)
            decoded_part.append((item, digest, decoded))
        extracted = []
        for item, digest, decoded in decoded_part:
            # the extraction as a whole, then its parts alone
            c, w = CPU(), WALL()
            frames, descriptors, scale = extract_image(ex, decoded)
            c, w = clock.add("dense SIFT pyramid (all, extract_image)", c, w)
            image = _as_float_image(decoded.gray)
            c, w = clock.add("  of which uint8 -> float32", c, w)
            for i, factor in enumerate(config.scales):
                resized = area_resize(image, factor)
                c, w = clock.add(f"  of which area resize, scale {factor:g}", c, w)
                if resized is not image and resized.max() > 1:     # as _resize does
                    np.minimum(resized, np.float32(1), out=resized)
                c, w = clock.add("  of which clip to [0, 1] (the clipping fix)", c, w)
                dense_sift(resized, step=config.step, sizes=config.sizes[:1],
                           contrast_threshold=config.dense_contrast_threshold)
                c, w = clock.add(f"  of which dense_sift, scale {factor:g}", c, w)
                info[f"pixels_scale_{i}"] += resized.size
            extracted.append((item, digest, decoded, frames, descriptors, scale))
        for item, digest, decoded, frames, descriptors, scale in extracted:
            c, w = CPU(), WALL()
            words = quantizer.assign(descriptors)
            clock.add("assignment (Assigner.assign, exact)", c, w)
            # the corpus' figures, outside every stage (the zero count alone is about 0.04 ms)
            info["descriptors"] += len(descriptors)
            info["zero_descriptors"] += int((descriptors.max(axis=1) == 0).sum())
            results.append(ImageResult(key=item.key, label=item.label, width=decoded.width,
                                       height=decoded.height, frames=frames, words=words,
                                       scale=scale, sha256=digest))
    return results


def gemm_rate(m=2000):
    """Single-thread SGEMM GFLOP/s on a large square product (the FLOP floor's rate)."""
    a = np.random.default_rng(0).random((m, m), np.float32)
    o = np.empty_like(a)
    np.matmul(a, a, out=o)
    best = float("inf")
    for _ in range(3):
        c = CPU()
        np.matmul(a, a, out=o)
        best = min(best, CPU() - c)
    return 2 * m ** 3 / best / 1e9


def gemm_time(m, k, n, reps=50):
    a = np.random.default_rng(0).random((m, k), np.float32)
    b = np.random.default_rng(1).random((k, n), np.float32)
    o = np.empty((m, n), np.float32)
    np.matmul(a, b, out=o)
    c = CPU()
    for _ in range(reps):
        np.matmul(a, b, out=o)
    return (CPU() - c) / reps


def memory_bandwidth(mb=256):
    """GB/s of a large copy (read + write counted once: bytes copied per second)."""
    a = np.ones(mb << 18, np.float32)
    b = np.empty_like(a)
    np.copyto(b, a)
    best = float("inf")
    for _ in range(3):
        c = CPU()
        np.copyto(b, a)
        best = min(best, CPU() - c)
    return a.nbytes / best / 1e9


def sha256_rate(mb=64):
    data = np.random.default_rng(0).integers(0, 256, mb << 20, np.uint8).tobytes()
    best = float("inf")
    for _ in range(3):
        c = CPU()
        hashlib.sha256(data).digest()
        best = min(best, CPU() - c)
    return len(data) / best / 1e9


def dsift_flops(pixels, radius):
    """A FLOP model of the dense SIFT kernel per image: separable Gaussian smoothing
    (2 passes of 2 radius + 1 multiply-adds), central-difference gradients, magnitude and
    orientation split between two of 8 planes (about 20), and the 8 planes filtered by a
    separable triangle (2 running-sum passes of about 4 operations each)."""
    per_pixel = 2 * 2 * (2 * radius + 1) + 20 + 8 * 2 * 4
    return pixels * per_pixel


def encode_in_process(config, source, codebook, out, limit, timings):
    """encode_images with its shard tasks and its merge run in this process (what it was
    before crash isolation), timing the two."""
    saved = pipeline_steps.run_tasks, pipeline_steps.call_isolated

    def run_tasks(func, tasks, jobs):
        for task in tasks:
            c, w = CPU(), WALL()
            result = func(*task)
            timings["shards_cpu"] += CPU() - c
            timings["shards_wall"] += WALL() - w
            yield result

    def call_isolated(func, *args, what=None):
        c, w = CPU(), WALL()
        result = func(*args)
        timings["merge_cpu"] += CPU() - c
        timings["merge_wall"] += WALL() - w
        return result

    pipeline_steps.run_tasks, pipeline_steps.call_isolated = run_tasks, call_isolated
    try:
        return fresh_encode(config, source, codebook, out, 1, limit)
    finally:
        pipeline_steps.run_tasks, pipeline_steps.call_isolated = saved


def fresh_encode(config, source, codebook, out, jobs, limit):
    """Seconds of one encode step into a fresh store that has the codebook's steps."""
    in_store = store_with_codebook(codebook, out)
    w = WALL()
    encode_images(config, source, in_store, Path(out), jobs=jobs, limit=limit,
                  progress=False)
    return WALL() - w


def codebook_of(config, root, work, suffix=""):
    cb_dir = work / f"codebook-pass2-costs{suffix}"
    sample = sample_descriptors(config, open_source(str(root)), cb_dir, progress=False)
    return train_codebook(config, sample, cb_dir, progress=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus-images", type=int, default=2000)
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=HERE / "_work")
    add_quality_argument(ap)
    ap.add_argument("--name", default="pass2_costs", help="results/NAME.md and NAME.json")
    ap.add_argument("--report-only", action="store_true",
                    help="write NAME.md again from NAME.json")
    args = ap.parse_args()
    if args.report_only:
        r = json.loads((HERE / "results" / f"{args.name}.json").read_text())
        lines = report(r, *(float(np.median(r[k])) for k in (
            "encode_isolated_s", "encode_in_process_s", "encode_one_image_s")))
        (HERE / "results" / f"{args.name}.md").write_text("\n".join(lines) + "\n")
        return
    single_threaded_libraries()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    suffix = quality_tag(args.quality)
    folder = work / f"corpus2k{suffix}"
    root = make_corpus(folder, args.corpus_images, quality=args.quality)
    stats = corpus_stats(folder)
    config = get_preset("sbow", shard_size=1000)
    codebook = codebook_of(config, root, work, suffix)
    centroids = np.load(codebook)
    source = open_source(str(root))
    items = [it for _, it in zip(range(args.images), source)]
    n = len(items)
    load = [os.getloadavg()[0]]

    # --- stages, in this process ---------------------------------------------------------
    quantizer = Assigner(centroids)
    stage_pass(config, items[:20], quantizer, Clock(), _info())      # warm caches
    passes, info = [], None
    for _ in range(args.repeats):
        clock, info = Clock(), _info()
        results = stage_pass(config, items, quantizer, clock, info)
        c, w = CPU(), WALL()
        write_shard(work / "pass2-costs-shard.h5", results, n_words=quantizer.k, first=0,
                    keep_descriptors=False, geometry=False)
        clock.add(SHARD, c, w)
        # the word counts alone, on the words as the shard writer has them
        words = np.concatenate([r.words for r in results]).astype(word_dtype(quantizer.k))
        offsets = np.concatenate([[0], np.cumsum([len(r.words) for r in results])])
        c, w = CPU(), WALL()
        word_counts_csr(words, offsets, quantizer.k)
        clock.add(COUNTS, c, w)
        c, w = CPU(), WALL()
        items_digest(items)
        items_digest(items, labels=False)
        clock.add(DIGESTS, c, w)
        passes.append(clock)
    stages = list(passes[0].cpu)
    cpu = {s: float(np.median([p.cpu[s] for p in passes])) / n * 1e3 for s in stages}
    wall = {s: float(np.median([p.wall[s] for p in passes])) / n * 1e3 for s in stages}
    per = {k: v / n for k, v in info.items()}

    # whole step: isolated (the real one) against the same work in this process
    timings = {"shards_cpu": 0.0, "shards_wall": 0.0, "merge_cpu": 0.0, "merge_wall": 0.0}
    fresh_encode(config, source, codebook, work / "pass2-costs-iso", 1, 20)   # warm
    iso, inproc, fixed, job_cpu = [], [], [], []
    for r in range(args.repeats):
        for k in timings:
            timings[k] = 0.0
        inproc.append(encode_in_process(config, source, codebook, work / "pass2-costs-in", n,
                                        timings))
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        iso.append(fresh_encode(config, source, codebook, work / "pass2-costs-iso", 1, n))
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        job_cpu.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
        fixed.append(fresh_encode(config, source, codebook, work / "pass2-costs-one", 1, 1))
        load.append(os.getloadavg()[0])
    iso_s, inproc_s, fixed_s = map(lambda v: float(np.median(v)), (iso, inproc, fixed))
    task_bytes = len(pickle.dumps((config, centroids, items, Path("x"), 0)))

    # --- floors --------------------------------------------------------------------------
    bw = memory_bandwidth()
    sha = sha256_rate()
    gflops = gemm_rate()
    rank = quantizer.rank
    nz = per["descriptors"] - per["zero_descriptors"]
    proj_s = gemm_time(int(nz), 128, rank, 100)
    bound_s = gemm_time(int(nz), rank + 2, quantizer.k, 50)
    radius = int(np.ceil(3 * np.sqrt((config.sizes[0] / 6.0) ** 2 - 0.25)))
    sift_px = sum(per[f"pixels_scale_{i}"] for i in range(len(config.scales)))
    floors = {
        "read (open + read from the page cache)": per["bytes"] / bw / 1e6,
        "sha256 of the file bytes": per["bytes"] / sha / 1e6,
        "  of which resize to max side 300 (uint8, area)":
            (per["pixels_full"] + per["pixels"]) / bw / 1e6,
        "  of which uint8 -> float32": per["pixels"] * 5 / bw / 1e6,
        "dense SIFT pyramid (all, extract_image)": dsift_flops(sift_px, radius) / gflops / 1e6,
        "assignment (Assigner.assign, exact)":
            2 * nz * (128 * rank + (rank + 2) * quantizer.k + 5 * 128) / gflops / 1e6,
        COUNTS: per["descriptors"] * 8 / bw / 1e6,
    }
    result = {
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0],
                    "opencv": cv2.__version__, "load_avg": load},
        "corpus": stats, "images": n, "repeats": args.repeats, "stage_batch": STAGE_BATCH,
        "quality": list(args.quality), "name": args.name,
        "per_image": per, "cpu_ms": cpu, "wall_ms": wall, "floor_ms": floors,
        "memory_gb_s": bw, "sha256_gb_s": sha, "sgemm_gflop_s": gflops, "rank": rank,
        "projection_product_ms": proj_s * 1e3, "bound_product_ms": bound_s * 1e3,
        "encode_isolated_s": iso, "encode_in_process_s": inproc, "encode_one_image_s": fixed,
        "in_process_shards_cpu_s": timings["shards_cpu"],
        "in_process_merge_cpu_s": timings["merge_cpu"],
        "in_process_merge_wall_s": timings["merge_wall"],
        "task_pickle_bytes": task_bytes,
        "job_process_cpu_s": job_cpu,
    }
    out_dir = HERE / "results"
    (out_dir / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    lines = report(result, iso_s, inproc_s, fixed_s)
    (out_dir / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _options(r):
    """The command's options beyond the default corpus and results name."""
    out = quality_option(r.get("quality"))
    name = r.get("name", "pass2_costs")
    return out + ("" if name == "pass2_costs" else f" --name {name}")


def _info():
    return {"bytes": 0, "pixels_full": 0, "pixels": 0, "descriptors": 0,
            "zero_descriptors": 0, "pixels_scale_0": 0, "pixels_scale_1": 0,
            "pixels_scale_2": 0}


def report(r, iso_s, inproc_s, fixed_s):
    n, per = r["images"], r["per_image"]
    cpu, wall, floor = r["cpu_ms"], r["wall_ms"], r["floor_ms"]
    top = [s for s in cpu if not s.startswith("  ")]
    total = sum(cpu[s] for s in top)
    lines = [
        "# sbow pass 2, per image, stage by stage, against the floor of each stage",
        "",
        "`python benchmarks/bench_pass2_costs.py --images "
        f"{n} --repeats {r['repeats']}{_options(r)}`: the first {n} of {r['corpus']['images']} "
        f"ImageNet-like JPEGs of `benchmarks/corpus.py` (mean {per['bytes'] / 1024:.1f} KB, "
        f"{per['pixels_full'] / 1e3:.0f} k pixels decoded, {per['pixels'] / 1e3:.1f} k at "
        f"max side 300, {per['descriptors']:.0f} descriptors of which "
        f"{per['zero_descriptors']:.0f} all zero), one thread, each stage over "
        f"{r.get('stage_batch', 1)} images before the next (as the shard task). CPU ms of this "
        f"thread, median of {r['repeats']} passes; wall ms beside them. The machine is shared (2 cores, "
        f"load average {min(r['machine']['load_avg']):.1f}-{max(r['machine']['load_avg']):.1f} "
        "during the run): every figure is inflated by the other jobs, CPU time less than "
        "wall time; the shares and the ratios to the floors are what to read.",
        "",
        "| stage | CPU ms | wall ms | share | floor ms | floor from | x floor |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    why = {
        "read (open + read from the page cache)": "bytes at memory bandwidth",
        "sha256 of the file bytes": "bytes at hashlib's large-buffer rate",
        "  of which libjpeg decode (cv2.imdecode, gray)": "libjpeg-turbo alone (it is the floor)",
        "  of which resize to max side 300 (uint8, area)": "pixels in + out at memory bandwidth",
        "  of which uint8 -> float32": "5 bytes per pixel at memory bandwidth",
        "dense SIFT pyramid (all, extract_image)": "FLOP model at the SGEMM rate",
        "assignment (Assigner.assign, exact)": "products' FLOPs at the SGEMM rate",
        COUNTS: "8 bytes per word at memory bandwidth",
    }
    for s in cpu:
        f = floor.get(s)
        if s == "  of which libjpeg decode (cv2.imdecode, gray)":
            f = cpu[s]
        share = f"{100 * cpu[s] / total:.1f}%" if s in top else ""
        lines.append(f"| {s} | {cpu[s]:.3f} | {wall[s]:.3f} | {share} | "
                     + (f"{f:.3f} | {why.get(s, '')} | {cpu[s] / f:.1f} |" if f else "| | |"))
    lines += [
        f"| **stages in this process** | **{total:.3f}** | "
        f"**{sum(wall[s] for s in top):.3f}** | 100% | | | |",
        "",
        "Floors measured in the same run: memory bandwidth "
        f"{r['memory_gb_s']:.1f} GB/s (a 256 MB copy), sha256 {r['sha256_gb_s']:.2f} GB/s, "
        f"single-thread SGEMM {r['sgemm_gflop_s']:.1f} GFLOP/s (2000 x 2000). The "
        f"assignment's two products alone, at their real shapes: projection (n x 128 x "
        f"{r['rank']}) {r['projection_product_ms']:.3f} ms, bound (n x {r['rank'] + 2} x 1000) "
        f"{r['bound_product_ms']:.3f} ms, CPU; its floor counts those FLOPs and 5 exact "
        "128-D distances per descriptor.",
        "",
        "The whole step (`encode_images`, wall seconds, medians of "
        f"{r['repeats']} alternating runs of {n} images):",
        "",
        "| run | s | ms / image |",
        "|---|---:|---:|",
        f"| in this process (shard tasks and merge called directly) | {inproc_s:.2f} | "
        f"{inproc_s / n * 1e3:.2f} |",
        f"| one worker process (crash isolation, `--jobs 1`) | {iso_s:.2f} | "
        f"{iso_s / n * 1e3:.2f} |",
        f"| one worker process, 1 image (the fixed cost of the step) | {fixed_s:.2f} | |",
        "",
        f"Isolation costs {(iso_s - inproc_s) / n * 1e3:+.2f} ms per image here (the "
        "difference of the two medians: workers started for the shards and for the merge, "
        f"the task sent, {r['task_pickle_bytes'] / 1024:.0f} KB pickled for {n} images, "
        "mostly the codebook, and the result record back; the runs spread over "
        f"{min(r['encode_in_process_s']) / n * 1e3:.2f}-"
        f"{max(r['encode_in_process_s']) / n * 1e3:.2f} ms per image in this process and "
        f"{min(r['encode_isolated_s']) / n * 1e3:.2f}-"
        f"{max(r['encode_isolated_s']) / n * 1e3:.2f} isolated). The merge in this process took "
        f"{r['in_process_merge_cpu_s'] / n * 1e3:.3f} ms CPU per image "
        f"({r['in_process_merge_wall_s'] / n * 1e3:.3f} wall)."
        + (f" The job's own process used {np.median(r['job_process_cpu_s']) / n * 1e3:.3f} "
           "ms CPU per image while its worker ran (the source, the wait for the worker)."
           if r.get("job_process_cpu_s") else ""),
        "",
        "## Which change costs what",
        "",
        "Of the changes that landed since the release that ran pass 2 at 3.38x the peer, per "
        "image of this run (CPU ms):",
        "",
        f"- sha256 of every image: {cpu['sha256 of the file bytes']:.3f} "
        f"({100 * cpu['sha256 of the file bytes'] / total:.1f}%), "
        f"{cpu['sha256 of the file bytes'] / floor['sha256 of the file bytes']:.1f}x its floor: hashing "
        "while reading or in another thread could hide at most this;",
        f"- the clipping fix of the pyramid: "
        f"{cpu['  of which clip to [0, 1] (the clipping fix)']:.3f} "
        f"({100 * cpu['  of which clip to [0, 1] (the clipping fix)'] / total:.1f}%);",
        "- per-item lists in shards (the items' digests, a stat per item twice, and the "
        "sha256 column): "
        f"{cpu[DIGESTS]:.3f} for the "
        "digests; the column is part of the shard write;",
        "- one-BLAS-thread limits: one call when a worker starts (about 30 ms), nothing per "
        "image; the assignment's products run single-threaded as they did in the benchmark "
        "before (OPENBLAS_NUM_THREADS=1);",
        "- the low-contrast thresholds: the DoG (`sift`) recipe only, not on this path;",
        "- crash isolation: each image was one message from the worker, waking the job: "
        "0.38 ms of the job's CPU per image (323 context switches for 300 images), now a "
        "word of shared memory (0.09 ms, 24); and each worker of each step ran the calling "
        "script again (0.36 s CPU per step for a benchmark script), no longer. Measured "
        "with the whole process tree's CPU (job, fork server, workers) of the encode step "
        "on 300 images, before and after, alternating: 10.91 against 10.52 ms per image, "
        "2.93 against 2.21 s fixed per process of two steps (on the loaded machine).",
    ]
    return lines


if __name__ == "__main__":
    main()
