"""Dask LocalCluster against local workers: the sbow batch job's two passes on the same corpus.

Both run the same tasks (``jobs.sample_batch``, ``jobs.process_shard``) with two
single-threaded worker processes (``--jobs 2``: forked workers, see features.isolate; joblib's
before crash isolation), on a 5,000-image ImageNet-like corpus (benchmarks/corpus.py),
alternating (and which goes first), median of ``--repeats`` runs, with the CPU seconds of
the process tree per image and the load average of each run (on a shared machine the rates
move with the load; the ratios and the CPU per image much less). The cluster's start-up is
timed apart. The scheduler's overhead per shard is measured with tasks that carry a real
shard's inputs (a shard's items and the codebook) and do nothing. Writes
results/cluster.{json,md}.

    python benchmarks/bench_cluster.py [--images 5000] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from corpus import corpus_stats, make_corpus  # noqa: E402

from features.pipeline.cluster import Cluster  # noqa: E402
from features.pipeline.runner import batched, run_tasks  # noqa: E402
from features.pipeline import encode_images, sample_descriptors, train_codebook  # noqa: E402
from features.presets import get_preset  # noqa: E402
from features.sources import open_source  # noqa: E402

ILSVRC_TRAIN = 1_281_167


def _tree_cpu():
    """CPU seconds (user + system) of this process and all its descendants: the driver, the
    in-process scheduler, the local and the Dask worker processes. Those that have exited
    (the local side forks workers per job) count in their parent's children times."""
    import psutil

    def cpu(process):
        t = process.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    me = psutil.Process()
    total = cpu(me)
    for child in me.children(recursive=True):
        try:
            total += cpu(child)
        except psutil.Error:
            pass
    return total


def _encode(config, source, codebook, out, jobs):
    """(seconds, CPU seconds of the process tree, 1-minute load average at the end)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shutil.copy(codebook.parent / "manifest.json", out / "manifest.json")
    shutil.copy(codebook, out / codebook.name)
    cpu = _tree_cpu()
    start = time.perf_counter()
    encode_images(config, source, out / codebook.name, out, jobs=jobs, progress=False)
    return time.perf_counter() - start, _tree_cpu() - cpu, os.getloadavg()[0]


def _sample(config, source, out, jobs):
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    sample_descriptors(config, source, out, jobs=jobs, progress=False)
    return time.perf_counter() - start


def _noop_shard(config, centroids, items, path, first, parallel=False):
    return {"first": first, "count": len(items)}


def _counted_shard(config, centroids, items, path, first, parallel=False):
    """process_shard, with the minor page faults and CPU seconds of the task's thread."""
    import resource
    from features.pipeline.tasks import process_shard
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    cpu = time.thread_time()
    process_shard(config, centroids, items, path, first, parallel=parallel)
    return {"count": len(items), "thread_cpu_s": time.thread_time() - cpu,
            "minor_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults}


def task_costs(cluster, config, source, centroids, out, n_shards=4):
    """Per image, inside shard tasks: minor page faults and thread CPU ms, on the cluster's
    workers or (``cluster`` None) in this process, whose environment the local workers
    (forked, see features.isolate) share. Both depend little on the machine's load."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    tasks = [(config, centroids, items, out / f"{i}.h5", i)
             for i, items in enumerate(batched(source, config.shard_size)) if i < n_shards]
    if cluster is None:
        got = [_counted_shard(*task, parallel=True) for task in tasks]
    else:
        got = list(run_tasks(_counted_shard, tasks, cluster))
    images = sum(g["count"] for g in got)
    return {"minor_faults_per_image": sum(g["minor_faults"] for g in got) / images,
            "thread_cpu_ms_per_image": sum(g["thread_cpu_s"] for g in got) / images * 1e3}


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
    ap.add_argument("--repeats", type=int, default=5)
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
    # the local side's fork server is warm from the codebook sample above; warm Dask's workers
    _sample(config, source, work / "s-warm", cluster)
    times = {"local": {"sample": [], "encode": []}, "dask": {"sample": [], "encode": []}}
    cpu = {"local": [], "dask": []}
    loads = []
    try:
        costs = {name: task_costs(on, config, source, centroids, work / f"c-{name}")
                 for name, on in (("local", None), ("dask", cluster))}
        for r in range(args.repeats):
            # Alternate which side goes first, so that a load change favours neither.
            order = (("local", 2), ("dask", cluster))
            for name, jobs in (order if r % 2 == 0 else order[::-1]):
                times[name]["sample"].append(_sample(config, source, work / f"s-{name}", jobs))
                seconds, cpu_seconds, load = _encode(config, source, codebook,
                                                     work / f"e-{name}", jobs)
                times[name]["encode"].append(seconds)
                cpu[name].append(cpu_seconds)
                loads.append(load)
            print(f"run {r + 1}: " + ", ".join(
                f"{name} encode {args.images / t['encode'][-1]:.1f} images/s "
                f"({cpu[name][-1] / args.images * 1e3:.2f} CPU ms/image), sample "
                f"{t['sample'][-1]:.1f} s" for name, t in times.items())
                + f"; load {loads[-1]:.1f}", flush=True)
        n_tasks = 40
        overhead = scheduler_overhead(cluster, config, source, centroids, n_tasks)
    finally:
        cluster.close()

    med = {name: {step: float(np.median(v)) for step, v in t.items()} for name, t in times.items()}
    rate = {name: args.images / m["encode"] for name, m in med.items()}
    ratio = rate["dask"] / rate["local"]
    # Per run, Dask's rate over the local one in the same run: less sensitive to load drifts.
    paired = float(np.median([j / d for j, d in zip(times["local"]["encode"],
                                                     times["dask"]["encode"])]))
    cpu_ms = {name: float(np.median(v)) / args.images * 1e3 for name, v in cpu.items()}
    task_cpu = {name: c["thread_cpu_ms_per_image"] for name, c in costs.items()}
    sample_ratio = med["local"]["sample"] / med["dask"]["sample"]
    per_worker = rate["dask"] / 2
    # A worker with a core to itself: the cluster run's CPU (workers, scheduler and driver)
    # per image. On a loaded machine the wall-clock rate measures the other work as well.
    per_core = 1e3 / cpu_ms["dask"]
    projection = {n: ILSVRC_TRAIN / (n * per_core) / 3600 for n in (8, 32, 128)}
    result = {
        "machine": f"{platform.machine()}, 2 cores", "images": args.images, "corpus": stats,
        "recipe": "sbow", "shard_size": args.shard_size, "workers": 2, "repeats": args.repeats,
        "seconds": times, "median_seconds": med, "encode_images_per_s": rate,
        "dask_over_local_encode": ratio, "dask_over_local_encode_paired_median": paired,
        "dask_over_local_sample": sample_ratio,
        "encode_cpu_ms_per_image_process_tree": cpu_ms, "shard_task_costs": costs,
        "encode_cpu_seconds": cpu,
        "load_average_1min": {"min": min(loads), "median": float(np.median(loads)),
                              "max": max(loads)},
        "cluster_startup_s": startup, "scheduler_overhead_ms_per_shard": overhead * 1e3,
        "per_worker_images_per_s": per_worker, "per_core_images_per_cpu_s": per_core,
        "ilsvrc2012_train_hours_by_workers": projection,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "cluster.json").write_text(json.dumps(result, indent=1))
    lines = [
        "# Dask LocalCluster against local workers (sbow recipe)", "",
        f"`python benchmarks/bench_cluster.py`: {args.images} ImageNet-like JPEGs (mean "
        f"{stats['mean_kb']:.0f} KB), shards of {args.shard_size}, 2 single-threaded workers "
        f"each way, same codebook, median of {args.repeats} alternating runs.", "",
        "| step | local, `--jobs 2` | Dask LocalCluster, 2 workers | Dask / local |",
        "|---|---:|---:|---:|",
        f"| pass 2 (extract, quantize, encode, write shards, merge) | {rate['local']:.1f} "
        f"images/s | {rate['dask']:.1f} images/s | {ratio:.2f} |",
        f"| pass 2, CPU of the whole process tree per image | {cpu_ms['local']:.2f} ms | "
        f"{cpu_ms['dask']:.2f} ms | {cpu_ms['dask'] / cpu_ms['local']:.2f} |",
        f"| pass 2, inside the shard tasks: minor page faults per image | "
        f"{costs['local']['minor_faults_per_image']:.0f} | "
        f"{costs['dask']['minor_faults_per_image']:.0f} | |",
        f"| pass 2, inside the shard tasks: thread CPU per image | "
        f"{costs['local']['thread_cpu_ms_per_image']:.2f} ms | "
        f"{costs['dask']['thread_cpu_ms_per_image']:.2f} ms | "
        f"{task_cpu['dask'] / task_cpu['local']:.2f} |",
        f"| pass 1 (codebook sample of {config.images_to_sample} images) | "
        f"{med['local']['sample']:.1f} s | {med['dask']['sample']:.1f} s | {sample_ratio:.2f} |",
        "",
        f"Pass 2 ratio of the medians {ratio:.2f}; median of the per-run ratios {paired:.2f}. "
        f"1-minute load average at the end of each pass 2: {min(loads):.1f} to "
        f"{max(loads):.1f} (median {np.median(loads):.1f}) on 2 cores shared with other "
        f"work, so the rates are below a quiet machine's; the ratios and the CPU per image "
        f"are the figures to compare.", "",
        f"Scheduler overhead: {overhead * 1e3:.1f} ms per shard task carrying a real shard's "
        f"inputs ({args.shard_size} items and the codebook, scattered once), measured over "
        f"{n_tasks} tasks that do nothing; cluster start-up (scheduler, 2 worker processes, "
        f"version and write checks) {startup:.1f} s, once per job.", "",
        f"Per-worker rate: {per_worker:.1f} images/s of wall clock here (2 workers on "
        f"2 busy cores); {per_core:.0f} images per CPU second of the cluster run, the rate "
        f"of a worker with a core to itself. At that rate ILSVRC-2012 train "
        f"({ILSVRC_TRAIN:,} images) would take " + ", ".join(
            f"{h:.2f} h on {n}" for n, h in projection.items())
        + " such workers, if the shared filesystem keeps up.",
    ]
    (HERE / "results" / "cluster.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
