"""Dask LocalCluster against joblib: the sbow batch job's two passes on the same corpus.

Both run the same tasks (``jobs.sample_batch``, ``jobs.process_shard``) with two
single-threaded workers, on a 5,000-image ImageNet-like corpus (benchmarks/corpus.py),
alternating, median of ``--repeats`` runs. The cluster's start-up is timed apart. The
scheduler's overhead per shard is measured with tasks that carry a real shard's inputs
(1,000 items and the codebook) and do nothing. Writes results/cluster.{json,md}.

    python benchmarks/bench_cluster.py [--images 5000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from corpus import corpus_stats, make_corpus  # noqa: E402

from features.cluster import Cluster  # noqa: E402
from features.jobs import batched, run_tasks  # noqa: E402
from features.pipeline import encode_images, sample_descriptors, train_codebook  # noqa: E402
from features.presets import get_preset  # noqa: E402
from features.sources import open_source  # noqa: E402

ILSVRC_TRAIN = 1_281_167


def _encode(config, source, codebook, out, jobs):
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shutil.copy(codebook.parent / "manifest.json", out / "manifest.json")
    shutil.copy(codebook, out / codebook.name)
    start = time.perf_counter()
    encode_images(config, source, out / codebook.name, out, jobs=jobs, progress=False)
    return time.perf_counter() - start


def _sample(config, source, out, jobs):
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    sample_descriptors(config, source, out, jobs=jobs, progress=False)
    return time.perf_counter() - start


def _noop_shard(config, centroids, items, path, first, parallel=False):
    return {"first": first, "count": len(items)}


def scheduler_overhead(cluster, config, source, centroids, n_tasks):
    """Seconds per shard task that does nothing but receive a real shard's inputs."""
    items = list(next(batched(source, config.shard_size)))
    tasks = [(config, centroids, items, None, i) for i in range(n_tasks)]
    list(run_tasks(_noop_shard, tasks[:4], cluster))         # warm up: functions, scatter
    start = time.perf_counter()
    list(run_tasks(_noop_shard, tasks, cluster))
    return (time.perf_counter() - start) / n_tasks


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shard-size", type=int, default=250,
                    help="images per shard (20 shards for 5,000 images, so that the last "
                         "round of shards does not leave a worker idle for long)")
    ap.add_argument("--work", type=Path, default=HERE / "_work")
    args = ap.parse_args()
    work = args.work / "cluster"
    work.mkdir(parents=True, exist_ok=True)

    root = make_corpus(args.work / f"corpus-{args.images}", args.images)
    stats = corpus_stats(args.work / f"corpus-{args.images}")
    print(f"corpus: {stats['images']} JPEGs, mean {stats['mean_kb']:.0f} KB", flush=True)
    config = get_preset("sbow", shard_size=args.shard_size)
    source = open_source(str(root))
    cb_dir = work / "codebook"
    shutil.rmtree(cb_dir, ignore_errors=True)
    codebook = train_codebook(config, sample_descriptors(config, source, cb_dir, jobs=2,
                                                         progress=False), cb_dir)
    centroids = np.load(codebook)

    start = time.perf_counter()
    cluster = Cluster("local:2", timeout=60)
    startup = time.perf_counter() - start
    # joblib's worker processes are warm from the codebook sample above; warm Dask's the same
    _sample(config, source, work / "s-warm", cluster)
    times = {"joblib": {"sample": [], "encode": []}, "dask": {"sample": [], "encode": []}}
    try:
        for r in range(args.repeats):
            for name, jobs in (("joblib", 2), ("dask", cluster)):
                times[name]["sample"].append(_sample(config, source, work / f"s-{name}", jobs))
                times[name]["encode"].append(_encode(config, source, codebook,
                                                     work / f"e-{name}", jobs))
            print(f"run {r + 1}: " + ", ".join(
                f"{name} encode {args.images / t['encode'][-1]:.1f} images/s, sample "
                f"{t['sample'][-1]:.1f} s" for name, t in times.items()), flush=True)
        n_tasks = 40
        overhead = scheduler_overhead(cluster, config, source, centroids, n_tasks)
    finally:
        cluster.close()

    med = {name: {step: float(np.median(v)) for step, v in t.items()} for name, t in times.items()}
    rate = {name: args.images / m["encode"] for name, m in med.items()}
    ratio = rate["dask"] / rate["joblib"]
    sample_ratio = med["joblib"]["sample"] / med["dask"]["sample"]
    per_worker = rate["dask"] / 2
    projection = {n: ILSVRC_TRAIN / (n * per_worker) / 3600 for n in (2, 8, 32, 128)}
    result = {
        "machine": f"{platform.machine()}, 2 cores", "images": args.images, "corpus": stats,
        "recipe": "sbow", "shard_size": args.shard_size, "workers": 2, "repeats": args.repeats,
        "seconds": times, "median_seconds": med, "encode_images_per_s": rate,
        "dask_over_joblib_encode": ratio, "dask_over_joblib_sample": sample_ratio,
        "cluster_startup_s": startup, "scheduler_overhead_ms_per_shard": overhead * 1e3,
        "per_worker_images_per_s": per_worker, "ilsvrc2012_train_hours_by_workers": projection,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "cluster.json").write_text(json.dumps(result, indent=1))
    lines = [
        "# Dask LocalCluster against joblib (sbow recipe)", "",
        f"`python benchmarks/bench_cluster.py`: {args.images} ImageNet-like JPEGs (mean "
        f"{stats['mean_kb']:.0f} KB), shards of {args.shard_size}, 2 single-threaded workers "
        f"each way, same codebook, median of {args.repeats} alternating runs.", "",
        "| step | joblib, 2 processes | Dask LocalCluster, 2 workers | Dask / joblib |",
        "|---|---:|---:|---:|",
        f"| pass 2 (extract, quantize, encode, write shards, merge) | {rate['joblib']:.1f} "
        f"images/s | {rate['dask']:.1f} images/s | {ratio:.2f} |",
        f"| pass 1 (codebook sample of {config.images_to_sample} images) | "
        f"{med['joblib']['sample']:.1f} s | {med['dask']['sample']:.1f} s | {sample_ratio:.2f} |",
        "",
        f"Scheduler overhead: {overhead * 1e3:.1f} ms per shard task carrying a real shard's "
        f"inputs ({args.shard_size} items and the codebook, scattered once), measured over "
        f"{n_tasks} tasks that do nothing; cluster start-up (scheduler, 2 worker processes, "
        f"version and write checks) {startup:.1f} s, once per job.", "",
        f"Per-worker rate {per_worker:.1f} images/s: ILSVRC-2012 train "
        f"({ILSVRC_TRAIN:,} images) would take " + ", ".join(
            f"{h:.2f} h on {n} workers" for n, h in projection.items())
        + " of this machine's cores, if the shared filesystem keeps up.",
    ]
    (HERE / "results" / "cluster.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
