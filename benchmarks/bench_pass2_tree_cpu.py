"""CPU of the whole process tree of the sbow encode step (the job, its fork server and its
workers), this checkout against another one, alternating: CPU time, unlike wall time,
survives a shared machine's load well enough to compare two versions.

Each side runs as a child of this process, which is made a subreaper so that the fork
server and its workers, orphaned when their job ends, are reaped here and counted.
Per image: (two steps of N images - two steps of 1 image) / (2 (N - 1)); fixed: two
steps of 1 image, interpreter start and imports included. The child's main module imports
what `bench_extract.py` imports (OpenCV, FAISS, h5py, joblib), as a benchmark script does.

    python benchmarks/bench_pass2_tree_cpu.py --before CHECKOUT [--images 300] [--rounds 2]

CHECKOUT: a tree of the other version with its compiled kernels (``git archive`` + the
``.so`` files). Uses the corpus and codebook of `bench_pass2_costs.py` under _work/.
"""
import argparse
import ctypes
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def package_dir(tree):
    """Where a checkout keeps the package: src/ since the move, its root before."""
    return tree / "src" if (tree / "src" / "features").is_dir() else tree


def child(tree, n):
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[v] = "1"
    sys.path[:0] = [str(Path(tree) / "benchmarks"), str(package_dir(Path(tree)))]
    import importlib
    for name in ("cv2", "faiss", "h5py", "corpus"):     # a benchmark script's imports
        importlib.import_module(name)
    from encode_store import store_with_codebook
    from features.pipeline import encode_images
    from features.presets import get_preset
    from features.sources import open_source
    work = HERE / "_work"
    config = get_preset("sbow", shard_size=1000)
    source = open_source(str(work / "corpus2k" / "train"))
    codebook = work / "codebook-pass2-costs" / "codebook.npy"
    out = Path(f"/tmp/pass2-tree-cpu-{os.getpid()}")
    for _ in range(2):
        encode_images(config, source, store_with_codebook(codebook, out), out, jobs=1,
                      limit=n, progress=False)
    shutil.rmtree(out, ignore_errors=True)


def tree_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", type=Path)
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]))
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)        # PR_SET_CHILD_SUBREAPER
    trees = {"before": args.before.resolve(), "after": HERE.parent}
    cpu = {k: {1: [], args.images: []} for k in trees}
    for r in range(args.rounds):
        for side in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
            for n in (1, args.images):
                c = tree_cpu()
                subprocess.run([sys.executable, __file__, "--child", str(trees[side]), str(n)],
                               env=dict(os.environ, PYTHONPATH=str(package_dir(trees[side]))),
                               cwd=trees[side], check=True)
                while True:                      # the orphaned fork servers and workers
                    try:
                        os.waitpid(-1, 0)
                    except ChildProcessError:
                        break
                cpu[side][n].append(tree_cpu() - c)
            print(side, f"round {r + 1}: {cpu[side][args.images][-1]:.2f} s CPU for two steps "
                  f"of {args.images} images, {cpu[side][1][-1]:.2f} s for two of 1, load "
                  f"{os.getloadavg()[0]:.1f}", flush=True)
    for side, v in cpu.items():
        per = sorted((b - s) / (2 * (args.images - 1)) * 1e3
                     for b, s in zip(v[args.images], v[1]))
        print(f"{side}: {per[len(per) // 2]:.2f} ms CPU per image (runs "
              f"{', '.join(f'{p:.2f}' for p in per)}), fixed {sorted(v[1])[len(v[1]) // 2]:.2f} s "
              f"({time.strftime('%H:%M')})")


if __name__ == "__main__":
    main()
