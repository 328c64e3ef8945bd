"""Large vocabularies: assignment by descending a vocabulary tree against flat assignment.

The vocabulary: ``features.codebook.hikmeans`` (branching 10, depth 5: 100,000 words) on
dense SIFT (sbow: bin 5, step 10, scales 1, 1/2, 1/4) of random 640 x 480 crops of the
photos scikit-image ships, ``--per-word`` descriptors per word. Timed on crops of OTHER
photos, one call per 300 x 225 image (~780 descriptors) as the pipeline makes it:

- tree: ``VocabularyTree.assign`` (ext/_tree.pyx), 50 distances per descriptor;
- flat, the same 100,000 words: ``Assigner`` (exact, pruned) and FAISS
  ``IndexFlatL2.search`` (exact), on the first ``--flat-images`` images (they take about a
  second each);
- VLFeat 0.9.21 ``vl_hikm_train`` / ``vl_hikm_push`` (libvl through ctypes, Lloyd, the
  same branching, depth, data and 25 iterations per node), when libvl is installed: its
  learning time and its descent speed.

One process, one thread (BLAS, FAISS, VLFeat); methods interleaved in every round, medians
of the rounds. Also reported: how often the tree's word is the nearest of all words
(the descent is greedy, not exact), and the held-out quantization error of both.

Learning: wall and CPU time of ``hikmeans``, the process's resident memory before it (the
sample held) and its peak during it (the high-water mark reset just before, where Linux
allows it: ``/proc/self/clear_refs``), so the codebook step's memory is seen apart from
building the sample.

    python benchmarks/bench_tree.py [--rounds 5] [--images 40] [--per-word 10]

1,000,000 words (about 15 minutes; exact search of a million words takes 5 to 60 ms per
descriptor, seconds per image: ``--flat-per-image`` times it, and checks the tree's words
against it, on the first descriptors of each image only):

    python benchmarks/bench_tree.py --words 1000000 --per-word 4 --rounds 5 --no-vlfeat \
        --flat-images 4 --flat-per-image 200 --out benchmarks/results/tree_1m
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from bench_assign import TEST, TRAIN, _crop, _dsift, _gray  # noqa: E402
from _vlfeat import load_libvl  # noqa: E402
from features.codebook import Assigner, hikmeans  # noqa: E402

VL_IKM_LLOYD = 0


class VLHikm:
    """``vl_hikm_*`` through ctypes: VLFeat's hierarchical integer k-means."""

    def __init__(self, lib):
        self.lib = lib
        vp, sz = ctypes.c_void_p, ctypes.c_size_t
        lib.vl_hikm_new.restype = vp
        lib.vl_hikm_new.argtypes = [ctypes.c_int]
        lib.vl_hikm_delete.argtypes = [vp]
        lib.vl_hikm_init.argtypes = [vp, sz, sz, sz]
        lib.vl_hikm_set_max_niters.argtypes = [vp, ctypes.c_int]
        lib.vl_hikm_train.argtypes = [vp, vp, sz]
        lib.vl_hikm_push.argtypes = [vp, vp, vp, sz]
        self.f = None

    def train(self, x, branching, depth, iters):
        self.f = self.lib.vl_hikm_new(VL_IKM_LLOYD)
        self.depth = depth
        self.lib.vl_hikm_init(self.f, x.shape[1], branching, depth)
        self.lib.vl_hikm_set_max_niters(self.f, iters)
        x = np.ascontiguousarray(x, np.uint8)
        self.lib.vl_hikm_train(self.f, x.ctypes.data, len(x))

    def push(self, x):
        x = np.ascontiguousarray(x, np.uint8)
        out = np.empty((len(x), self.depth), np.uint32)
        self.lib.vl_hikm_push(self.f, out.ctypes.data, x.ctypes.data, len(x))
        return out

    def close(self):
        if self.f:
            self.lib.vl_hikm_delete(self.f)
            self.f = None


def build(args, rng):
    need = args.words * args.per_word
    # filled in place: a list of crops concatenated would hold the sample twice
    pool = np.empty((need, 128), np.uint8)
    n = crops = 0
    while n < need:
        x = _dsift(_crop(_gray(TRAIN[crops % len(TRAIN)]), rng, (480, 640)))
        take = min(len(x), need - n)
        pool[n:n + take] = x[:take]
        n, crops = n + take, crops + 1
    photos = [_gray(name) for name in TEST]
    images = [_dsift(_crop(photos[i % len(photos)], rng, (225, 300)))
              for i in range(args.images)]
    return pool, images


def _status_mb(field):
    """A memory figure of /proc/self/status in MB (None off Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return None


def _reset_peak_rss():
    """Reset the resident high-water mark (VmHWM); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def timed(fn, x):
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--flat-images", type=int, default=4)
    parser.add_argument("--flat-per-image", type=int, default=0,
                        help="time the flat searches on the first N descriptors of each "
                             "image only (0: all)")
    parser.add_argument("--words", type=int, default=100_000)
    parser.add_argument("--branching", type=int, default=10)
    parser.add_argument("--per-word", type=int, default=10)
    parser.add_argument("--no-vlfeat", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results" / "tree"))
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    pool, images = build(args, rng)
    setting = {"train_descriptors": int(len(pool)), "test_images": len(images),
               "descriptors_per_image": round(float(np.mean([len(x) for x in images])), 1),
               "words": args.words, "branching": args.branching}

    before_mb = _status_mb("VmRSS")
    reset = _reset_peak_rss()
    step = max(1, args.words // 20)

    def progress(done, total):
        if done % step == 0 or done == total:
            print(f"  {done}/{total} words, {time.perf_counter() - t0:.0f} s", flush=True)

    t0, c0 = time.perf_counter(), time.process_time()
    tree = hikmeans(pool, args.words, args.branching, seed=0, progress=progress)
    learn, learn_cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _status_mb("VmHWM") if reset else None
    setting.update(depth=tree.depth, features_learn_s=round(learn, 1),
                   features_learn_cpu_s=round(learn_cpu, 1),
                   sample_mb=round(pool.nbytes / 2 ** 20),
                   rss_before_learn_mb=before_mb,
                   features_learn_peak_rss_mb=peak if peak is not None else round(
                       resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                   peak_rss_is=("peak during hikmeans" if peak is not None
                                else "process peak"))
    print(f"features hikmeans: {tree.k} words, depth {tree.depth}, {learn:.1f} s "
          f"({learn_cpu:.1f} s CPU), RSS {before_mb} MB before, peak "
          f"{setting['features_learn_peak_rss_mb']} MB", flush=True)

    vl = None
    lib = None if args.no_vlfeat else load_libvl()
    if lib is not None:
        vl = VLHikm(lib)
        t0 = time.perf_counter()
        vl.train(pool, args.branching, tree.depth, 25)
        setting["vlfeat_learn_s"] = round(time.perf_counter() - t0, 1)
        print(f"VLFeat vl_hikm_train: {setting['vlfeat_learn_s']} s", flush=True)

    flat_imgs = [x[:args.flat_per_image] if args.flat_per_image else x
                 for x in images[:args.flat_images]]
    flat = Assigner(tree.centroids)
    index = faiss.IndexFlatL2(tree.d)
    index.add(tree.centroids)
    methods = {"features tree descent": (tree.assign, images),
               "features flat exact (pruned)": (flat.assign, flat_imgs),
               "faiss IndexFlatL2 (exact)": (
                   lambda x: index.search(np.ascontiguousarray(x, np.float32), 1),
                   flat_imgs)}
    if vl is not None:
        methods["vlfeat vl_hikm_push"] = (vl.push, images)
    totals = {name: [] for name in methods}
    for r in range(args.rounds):
        for name, (fn, imgs) in methods.items():
            totals[name].append(sum(timed(fn, x) for x in imgs))
        print(f"round {r + 1}/{args.rounds}", flush=True)

    held = np.concatenate(flat_imgs)
    tree_words = tree.assign(held)
    flat_words = flat.assign(held)
    err = {}
    for name, w in (("tree", tree_words), ("flat", flat_words)):
        diff = held.astype(np.float64) - tree.centroids[w]
        err[name] = float(np.einsum("ij,ij->i", diff, diff).mean())
    setting.update(nearest_checked_on=int(len(held)),
                   tree_word_is_nearest=round(float(np.mean(tree_words == flat_words)), 4),
                   held_out_error_tree=round(err["tree"]), held_out_error_flat=round(err["flat"]))

    rows, base = [], None
    for name, (_, imgs) in methods.items():
        n = sum(len(x) for x in imgs)
        us = 1e6 * float(np.median(totals[name])) / n
        base = base or us
        rows.append({"method": name, "us_per_descriptor": round(us, 3),
                     "ms_per_780": round(us * 780 / 1e3, 3), "descriptors_timed": n,
                     "vs_tree": round(us / base, 1)})
    if vl is not None:
        vl.close()
    report = {"machine": {"cpu": platform.processor() or platform.machine(),
                          "cores": os.cpu_count(), "python": platform.python_version(),
                          "numpy": np.__version__, "faiss": faiss.__version__,
                          "load_average": os.getloadavg()},
              "setting": setting, "results": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    lines = ["# Vocabulary tree against flat assignment", "",
             f"`python benchmarks/bench_tree.py {' '.join(sys.argv[1:])}`".replace(" `", "`"),
             "", f"({args.rounds} rounds, medians; one thread)",
             "", "```", json.dumps(setting, indent=1), "```", "",
             "| method | us / descriptor | ms / 780-descriptor image | x tree |",
             "|---|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['us_per_descriptor']} | {r['ms_per_780']} | "
              f"{r['vs_tree']} |" for r in rows]
    lines += ["", f"load average at the end: {os.getloadavg()}"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
