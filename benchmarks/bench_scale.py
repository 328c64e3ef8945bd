"""The whole sbow job at growing sizes: is every step linear in the images, and memory flat?

For each size, a corpus of ImageNet-like JPEGs (`corpus.py`, ILSVRC train layout, grown
from the previous size's images), then, as a user runs them, in subprocesses:

    features run CORPUS -o STORE --preset sbow --jobs 2 -q     (sample, codebook, encode,
                                                                merge, index)
    features index STORE --force --jobs 2 -q                    (the index rebuilt alone)
    features verify STORE

Each command is a child of this process, made a subreaper, so that the workers orphaned
when their job ends are reaped here and their CPU counted. Measured per command: wall time,
CPU time of the whole process tree (user + system, exact: the children's rusage once all
are reaped) and peak RSS of the tree, sampled from /proc every 0.1 s as the sum of the RSS
of every process of the tree (pages shared by a fork server and its workers are counted in
each: an upper bound). The steps of `features run` are told apart by the files they write
last (sample.npy, codebook.npy, the last shard, failures.tsv after the merge); each step's
CPU is the sampled tree CPU between those times.

The fit: per step, CPU seconds against images, a least-squares line (seconds per 1,000
images and a fixed part) and the exponent b of a log-log fit (time ~ N^b: 1 is linear;
a fixed cost gives less); both projected to ILSVRC-2012 train (1,281,167 images).

    python benchmarks/bench_scale.py [--sizes 10000 30000 100000] [--jobs 2] [--add]
        [--quality 92 99 --name scale_ilsvrc_bytes] [--cold]

``--cold`` drops the page cache (as root) before each ``features run``, so that the JPEGs
are read from the disk, as those of a collection larger than the memory are (ILSVRC-2012
train is 138 GB); without it, whatever the corpus's generation left in the cache is read
from memory. ``--add`` keeps the sizes of results/scale.json that this run does not measure. The
corpus and the stores are written under ``benchmarks/_work/scale`` and deleted at the end
(``--keep`` keeps them).
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import ctypes
import json
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from corpus import (add_quality_argument, corpus_stats, make_corpus, quality_option,  # noqa: E402
                    quality_tag)

ILSVRC_TRAIN = 1_281_167
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
# the steps of `features run`, each ended by the file it writes last
RUN_STEPS = ("sample", "codebook", "encode", "merge", "index")
STANDALONE = ("index --force", "verify")


def _stat(pid):
    """(ppid, CPU seconds of the process and its reaped children, RSS bytes) of a pid."""
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    # fields after the name: state ppid ... utime(12) stime(13) cutime(14) cstime(15) rss(22)
    return int(f[1]), sum(int(x) for x in f[11:15]) / TICK, int(f[21]) * PAGE


def tree_sample(root, skip=()):
    """CPU seconds and summed RSS of the live (and zombie) descendants of ``root``."""
    info = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                info[int(d)] = _stat(d)
            except (OSError, ValueError, IndexError):
                pass
    children = {}
    for pid, (ppid, _, _) in info.items():
        children.setdefault(ppid, []).append(pid)
    cpu = rss = 0
    todo = [pid for pid in children.get(root, []) if pid not in skip]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        cpu += info[pid][1]
        rss += info[pid][2]
    return cpu, rss


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def my_children():
    me = os.getpid()
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if _stat(d)[0] == me:
                    out.add(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def reap(keep):
    """Wait for every child left but those of ``keep`` (this process's own helpers, such as
    the resource trackers of the corpus's worker pool): the workers a job's pool orphaned
    to this subreaper."""
    while True:
        left = my_children() - keep
        if not left:
            return
        for pid in left:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def measure(cmd, env, interval=0.1):
    """Run ``cmd``; wall seconds, exact tree CPU, peak summed RSS, and the samples
    (wall time, tree CPU so far, summed RSS)."""
    me = os.getpid()
    keep = my_children()
    base = children_cpu()
    samples = []
    start = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    done = threading.Event()

    def watch():
        while not done.is_set():
            cpu, rss = tree_sample(me, keep)
            samples.append((time.time(), children_cpu() - base + cpu, rss))
            done.wait(interval)

    t = threading.Thread(target=watch)
    t.start()
    out, err = proc.communicate()
    end = time.time()
    reap(keep)
    done.set()
    t.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}: {err[-2000:]}")
    cpu = children_cpu() - base
    samples.append((end, cpu, 0))
    return {"start": start, "end": end, "wall": end - start, "cpu": cpu,
            "peak_rss": max(s[2] for s in samples), "samples": samples, "stdout": out}


def cpu_at(samples, t):
    """The tree CPU at time ``t``, interpolated between samples (monotone by construction)."""
    ts = np.array([s[0] for s in samples])
    cs = np.maximum.accumulate(np.array([s[1] for s in samples]))
    return float(np.interp(t, ts, cs))


def split_steps(m, store):
    """The steps of a `features run`: wall, CPU and peak RSS of each, from the times the
    step's last file was written."""
    shards = sorted((store / "shards").glob("*.h5"))
    ends = [(store / "sample.npy").stat().st_mtime, (store / "codebook.npy").stat().st_mtime,
            max(p.stat().st_mtime for p in shards), (store / "failures.tsv").stat().st_mtime,
            m["end"]]
    steps, t0 = {}, m["start"]
    for name, t1 in zip(RUN_STEPS, ends):
        rss = [s[2] for s in m["samples"] if t0 <= s[0] <= t1] or [0]
        cpu1 = m["cpu"] if name == RUN_STEPS[-1] else cpu_at(m["samples"], t1)
        steps[name] = {"wall": t1 - t0, "cpu": cpu1 - cpu_at(m["samples"], t0),
                       "peak_rss": max(rss)}
        t0 = t1
    return steps


def store_size(store):
    parts = {"store.h5": 0, "shards": 0, "index": 0, "other": 0}
    for p in store.rglob("*"):
        if p.is_file():
            rel = p.relative_to(store).parts
            key = ("store.h5" if rel == ("store.h5",) else "shards" if rel[0] == "shards"
                   else "index" if rel[0].startswith("index") else "other")
            parts[key] += p.stat().st_size
    parts["total"] = sum(parts.values())
    return parts


def run_size(n, args, env):
    work = args.work
    load = os.getloadavg()
    t = time.time()
    folder = work / f"corpus{quality_tag(args.quality)}"
    root = make_corpus(folder, n, grow=True, jobs=args.jobs, quality=args.quality)
    corpus_s = time.time() - t
    stats = corpus_stats(folder)
    print(f"{n}: corpus {stats['images']} JPEGs, mean {stats['mean_kb']:.0f} KB "
          f"({stats['total_mb']:.0f} MB) in {corpus_s:.0f} s", flush=True)
    store = work / f"store-{n}"
    shutil.rmtree(store, ignore_errors=True)
    py = [sys.executable, "-m", "features"]
    jobs = ["--jobs", str(args.jobs)]
    if args.cold:
        drop_page_cache()
    run = measure(py + ["run", str(root), "-o", str(store), "--preset", "sbow", "-q"] + jobs,
                  env)
    steps = split_steps(run, store)
    size = store_size(store)
    print(f"{n}: run {run['wall']:.0f} s wall, {run['cpu']:.0f} s CPU, peak "
          f"{run['peak_rss'] / 2**20:.0f} MB; " + ", ".join(
              f"{k} {v['cpu']:.1f}" for k, v in steps.items()) + f" s CPU; load "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    alone = {}
    for name, cmd in (("index --force", ["index", str(store), "--force", "-q"] + jobs),
                      ("verify", ["verify", str(store)])):
        m = measure(py + cmd, env)
        alone[name] = {"wall": m["wall"], "cpu": m["cpu"], "peak_rss": m["peak_rss"]}
        print(f"{n}: {name} {m['wall']:.1f} s wall, {m['cpu']:.1f} s CPU, peak "
              f"{m['peak_rss'] / 2**20:.0f} MB", flush=True)
        if name == "verify" and "sound" not in m["stdout"]:
            raise RuntimeError(f"verify: {m['stdout']}")
    if not args.keep:
        shutil.rmtree(store, ignore_errors=True)
    return {"images": n, "corpus": stats, "corpus_seconds": corpus_s,
            "load_avg_start": load, "load_avg_end": os.getloadavg(),
            "run": {"wall": run["wall"], "cpu": run["cpu"], "peak_rss": run["peak_rss"]},
            "steps": steps, "alone": alone, "store_bytes": size,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}


def drop_page_cache():
    """Write the dirty pages and drop the page cache (root only)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as e:
        sys.exit(f"--cold needs to drop the page cache, as root: {e}")


def fit(ns, ys):
    """Least-squares line (per image, fixed) and log-log exponent of ``ys`` against ``ns``."""
    ns, ys = np.asarray(ns, float), np.asarray(ys, float)
    slope, fixed = np.polyfit(ns, ys, 1)
    ok = ys > 0
    b, log_a = np.polyfit(np.log(ns[ok]), np.log(ys[ok]), 1) if ok.sum() >= 2 else (np.nan, 0)
    return {"per_1k": slope * 1000, "fixed": fixed, "exponent": b,
            "projected_linear": fixed + slope * ILSVRC_TRAIN,
            "projected_power": float(np.exp(log_a) * ILSVRC_TRAIN ** b)}


def fits(runs):
    ns = [r["images"] for r in runs]
    out = {}
    for step in RUN_STEPS:
        out[step] = {"cpu": fit(ns, [r["steps"][step]["cpu"] for r in runs]),
                     "wall": fit(ns, [r["steps"][step]["wall"] for r in runs]),
                     "rss": fit(ns, [r["steps"][step]["peak_rss"] for r in runs])}
    out["whole run"] = {"cpu": fit(ns, [r["run"]["cpu"] for r in runs]),
                        "wall": fit(ns, [r["run"]["wall"] for r in runs]),
                        "rss": fit(ns, [r["run"]["peak_rss"] for r in runs])}
    for name in STANDALONE:
        out[name] = {k: fit(ns, [r["alone"][name][m] for r in runs])
                     for k, m in (("cpu", "cpu"), ("wall", "wall"), ("rss", "peak_rss"))}
    out["store size"] = {"bytes": fit(ns, [r["store_bytes"]["total"] for r in runs])}
    return out


def report(result):
    runs, f = result["runs"], result.get("fit")
    mb = 2**20
    lines = [
        "# The whole sbow job at growing sizes",
        "",
        f"`python benchmarks/bench_scale.py --sizes {' '.join(str(r['images']) for r in runs)}"
        f"{quality_option(result.get('quality'))}"
        f"{' --name ' + result['name'] if result.get('name', 'scale') != 'scale' else ''}"
        f"{' --cold' if result.get('cold') else ''}`"
        f": `features run CORPUS -o STORE --preset sbow --jobs {result['jobs']}` on generated "
        "ImageNet-like JPEGs (`benchmarks/corpus.py`, ILSVRC train layout, 100 classes), then "
        "`features index STORE --force` and `features verify STORE`, each in a subprocess. "
        f"{result['machine']['cores']} cores shared with other jobs: wall times are "
        "inflated by them (the load average is given per size); CPU time, user + system of "
        "the whole process tree (the job, its fork server and workers), is what the fit "
        "uses. Peak RSS: the sum of the RSS of every process of the tree, sampled every "
        "0.1 s (pages shared between a fork server and its workers counted in each: an "
        "upper bound). The steps of `features run` are told apart by the time of the file "
        "each writes last (sample: interpreter start and the source listed included)." + (
            " The page cache was dropped before each `features run` (`--cold`): the JPEGs "
            "were read from the disk, as those of a collection larger than the memory are."
            if result.get("cold") else ""),
        "",
        "| images | corpus MB (mean KB) | load avg start/end | step | wall s | CPU s | "
        "CPU ms/image | peak RSS MB |",
        "|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in runs:
        c = r["corpus"]
        head = (f"| {r['images']:,} | {c['total_mb']:.0f} ({c['mean_kb']:.0f}) | "
                f"{r['load_avg_start'][0]:.1f} / {r['load_avg_end'][0]:.1f} |")
        rows = [(k, v) for k, v in r["steps"].items()] + [("**whole run**", r["run"])] + [
            (f"`{k}` alone", v) for k, v in r["alone"].items()]
        for i, (k, v) in enumerate(rows):
            lines.append((head if i == 0 else "| | | |")
                         + f" {k} | {v['wall']:.1f} | {v['cpu']:.1f} | "
                         f"{1000 * v['cpu'] / r['images']:.2f} | {v['peak_rss'] / mb:.0f} |")
    lines += ["", "Store size (MB):", "",
              "| images | store.h5 | shards | index | other | total | KB/image |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        s = r["store_bytes"]
        lines.append(f"| {r['images']:,} | {s['store.h5'] / mb:.1f} | {s['shards'] / mb:.1f} | "
                     f"{s['index'] / mb:.1f} | {s['other'] / mb:.1f} | {s['total'] / mb:.1f} | "
                     f"{s['total'] / 1024 / r['images']:.1f} |")
    if f:
        lines += ["", f"Fit over {len(runs)} sizes, CPU seconds against images: a line "
                  "(ms per image, fixed seconds) and the exponent b of a log-log fit "
                  "(1: linear; below 1: a fixed part; above 1: worse than linear); "
                  "projected to ILSVRC-2012 train (1,281,167 images) by the line and by the "
                  "power law. Peak RSS: exponent of its fit (0: flat).", "",
                  "| step | CPU ms/image | fixed CPU s | exponent (CPU) | exponent (wall) | "
                  "1.28M CPU h, line | 1.28M CPU h, power law | exponent (peak RSS) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for k, v in f.items():
            if "cpu" not in v:
                continue
            c = v["cpu"]
            lines.append(f"| {k} | {c['per_1k']:.2f} | {c['fixed']:.1f} | {c['exponent']:.2f} | "
                         f"{v['wall']['exponent']:.2f} | {c['projected_linear'] / 3600:.2f} | "
                         f"{c['projected_power'] / 3600:.2f} | {v['rss']['exponent']:.2f} |")
        s = f["store size"]["bytes"]
        lines += ["", f"Store size: {s['per_1k'] / 2**20:.1f} MB per 1,000 images (exponent "
                  f"{s['exponent']:.2f}); projected {s['projected_linear'] / 2**30:.1f} GB at "
                  "1.28M images."]
        lines += ["", result.get("verdict", "")]
    return "\n".join(lines) + "\n"


def verdict(f, runs):
    steps = {k: v for k, v in f.items() if k in RUN_STEPS or k in STANDALONE}
    # the step that grows worst: the largest exponent among steps that cost something
    big = {k: v for k, v in steps.items()
           if max(r["steps"].get(k, r["alone"].get(k, {})).get("cpu", 0) for r in runs) > 1.0}
    worst = max(big, key=lambda k: big[k]["cpu"]["exponent"])
    longest = max(steps, key=lambda k: steps[k]["cpu"]["projected_power"])
    whole = f["whole run"]["cpu"]
    wall = f["whole run"]["wall"]
    return (f"Grows worst: **{worst}** (CPU exponent {big[worst]['cpu']['exponent']:.2f}). "
            f"Costs most at 1.28M: **{longest}** "
            f"({steps[longest]['cpu']['projected_power'] / 3600:.1f} CPU h by the power law). "
            f"The whole run projected to 1.28M: {whole['projected_linear'] / 3600:.1f} CPU h "
            f"by the line ({whole['projected_power'] / 3600:.1f} by the power law, exponent "
            f"{whole['exponent']:.2f}); wall on this shared machine "
            f"{wall['projected_linear'] / 3600:.1f} h with --jobs {runs[0].get('jobs', 2)}.")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 30000, 100000])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "scale")
    ap.add_argument("--add", action="store_true",
                    help="keep the sizes of results/scale.json this run does not measure")
    ap.add_argument("--keep", action="store_true", help="keep the corpus and the stores")
    ap.add_argument("--name", default="scale", help="results/NAME.md and NAME.json")
    ap.add_argument("--cold", action="store_true",
                    help="drop the page cache before each run (root): the JPEGs read from "
                         "the disk")
    add_quality_argument(ap)
    args = ap.parse_args()
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)        # PR_SET_CHILD_SUBREAPER
    args.work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"))
    out_json = HERE / "results" / f"{args.name}.json"
    earlier = json.loads(out_json.read_text())["runs"] if args.add and out_json.exists() else []
    import faiss
    import h5py
    import cv2
    result = {"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0],
                          "opencv": cv2.__version__, "faiss": faiss.__version__,
                          "h5py": h5py.__version__},
              "jobs": args.jobs, "quality": list(args.quality), "cold": args.cold,
              "name": args.name,
              "runs": [r for r in earlier if r["images"] not in args.sizes]}
    try:
        for n in sorted(args.sizes):
            r = run_size(n, args, env)
            r["jobs"] = args.jobs
            result["runs"] = sorted(result["runs"] + [r], key=lambda r: r["images"])
            if len(result["runs"]) >= 2:
                result["fit"] = fits(result["runs"])
                result["verdict"] = verdict(result["fit"], result["runs"])
            out_json.write_text(json.dumps(result, indent=1))
            (HERE / "results" / f"{args.name}.md").write_text(report(result))
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    print(report(result))


if __name__ == "__main__":
    main()
