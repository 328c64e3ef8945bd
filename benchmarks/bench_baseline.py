"""One SGD epoch of `features baseline` over encodings streamed from a store on disk.

Data: 100,000 synthetic encodings of 4,096 dimensions (float16, row-chunked, as dense
encodings are stored), 1,000 classes (100 images each), written to
``benchmarks/_work/baseline/store.h5`` by ``features.baseline.synthetic`` (about 0.8 GB; kept
for reruns).

Ours: ``features.baseline.linear.train_sgd``: one-vs-rest hinge (linear SVM), mini-batches of
256 rows, all classes in one GEMM; with the 4 regularization candidates `features baseline`
trains side by side (its real workload) and with one.  Peer: scikit-learn's
``SGDClassifier(loss="hinge").partial_fit`` on the same blocks of the same stream, same
threads; scikit-learn trains the 1000 one-vs-rest problems one after the other, so it runs
on the first ``--peer-rows`` rows only and its time is scaled to the epoch (stated as such);
``--rows-4`` does the same for the 4-lambda run when the machine is too busy for a full one.

Each measurement runs in its own process (peak RSS of that process, ru_maxrss), methods
interleaved, median of ``--rounds`` rounds; threads: all cores (BLAS) for both.

    python benchmarks/bench_baseline.py [--rounds 3] [--rows 100000] [--peer-rows 5000]
                                        [--rows-4 N]
"""
import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
WORK = HERE / "_work" / "baseline"
ILSVRC_TRAIN = 1_281_167


def make_store(rows, dims, classes):
    from features.baseline.synthetic import write_synthetic_store
    path = WORK / f"store-{rows}x{dims}x{classes}"
    if not (path / "store.h5").exists():
        t = time.perf_counter()
        labels = np.repeat(np.arange(classes), -(-rows // classes))[:rows]
        labels = np.random.default_rng(0).permutation(labels)
        write_synthetic_store(path, labels, dense={"enc": (dims, "float16")}, separation=1.0)
        print(f"wrote {path} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return path


def child(args):
    """One measurement in this process: prints a JSON line."""
    import resource
    import h5py
    import scipy.sparse  # noqa: F401  (imported before the clock starts, as in a real run)
    from features.baseline.linear import feature_stats, train_sgd, train_sklearn
    from features.store.encodings import EncodingRows
    with h5py.File(Path(args.store) / "store.h5", "r") as f:
        reader = EncodingRows(f, "enc")
        y = f["images/label"][:].astype(np.int64)
        classes = int(y.max()) + 1
        idx = np.arange(args.n)
        stats = (np.zeros(reader.dim, np.float32), 1.0)  # measured separately below
        t = time.perf_counter()
        if args.method == "stats":
            feature_stats(reader, idx)
        elif args.method.startswith("ours"):
            lambdas = (1e-6, 1e-5, 1e-4, 1e-3) if args.method == "ours-4" else (1e-5,)
            train_sgd(reader, idx, y[idx], classes, loss="svm", lambdas=lambdas, epochs=1,
                      batch=256, stats=stats, average=False)
        else:
            train_sklearn(reader, idx, y[idx], classes, loss="svm", lam=1e-5, epochs=1,
                          stats=stats)
        dt = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"method": args.method, "rows": args.n, "seconds": dt, "peak_rss_mb": rss}))


def measure(store, method, n):
    out = subprocess.run([sys.executable, __file__, "--child", "--store", str(store),
                          "--method", method, "--n", str(n)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--dims", type=int, default=4096)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--peer-rows", type=int, default=5000)
    p.add_argument("--rows-4", type=int, help="rows timed with 4 lambdas (default: all)")
    p.add_argument("--child", action="store_true")
    p.add_argument("--store")
    p.add_argument("--method")
    p.add_argument("--n", type=int)
    args = p.parse_args()
    if args.child:
        return child(args)
    store = make_store(args.rows, args.dims, args.classes)
    rows4 = args.rows_4 or args.rows
    plan = [("ours-1", args.rows), ("stats", args.rows), ("sklearn", args.peer_rows),
            ("ours-4", rows4), ("ours-1", args.rows // 4)]
    runs = {}
    for r in range(args.rounds):
        for method, n in plan:
            m = measure(store, method, n)
            runs.setdefault((method, n), []).append(m)
            print(f"round {r + 1}: {method} {n} rows: {m['seconds']:.1f} s, "
                  f"peak RSS {m['peak_rss_mb']:.0f} MB", file=sys.stderr)
    rows = []
    for (method, n), ms in runs.items():
        sec = float(np.median([m["seconds"] for m in ms]))
        rows.append({"method": method, "rows": n, "seconds": sec,
                     "us_per_row": 1e6 * sec / n,
                     "epoch_seconds": sec * args.rows / n,
                     "peak_rss_mb": float(max(m["peak_rss_mb"] for m in ms))})
    by = {(r["method"], r["rows"]): r for r in rows}
    ours1 = by[("ours-1", args.rows)]
    ours4 = by[("ours-4", rows4)]
    peer = by[("sklearn", args.peer_rows)]
    result = {
        "setting": dict(rows=args.rows, dims=args.dims, classes=args.classes, dtype="float16",
                        rounds=args.rounds, peer_rows=args.peer_rows, batch=256),
        "machine": dict(python=platform.python_version(), numpy=np.__version__,
                        processor=platform.processor(), cores=__import__("os").cpu_count()),
        "runs": rows,
        "speedup_vs_sklearn_1_lambda": peer["us_per_row"] / ours1["us_per_row"],
        "ilsvrc_epoch_hours_4_lambdas": ours4["us_per_row"] * ILSVRC_TRAIN / 3.6e9,
        "ilsvrc_epoch_hours_1_lambda": ours1["us_per_row"] * ILSVRC_TRAIN / 3.6e9,
        "ilsvrc_epoch_hours_sklearn": peer["us_per_row"] * ILSVRC_TRAIN / 3.6e9,
    }
    import sklearn
    result["machine"]["sklearn"] = sklearn.__version__
    out = HERE / "results"
    (out / "baseline.json").write_text(json.dumps(result, indent=1))
    names = {"ours-4": "features `train_sgd`, 4 lambdas together",
             "ours-1": "features `train_sgd`, 1 lambda",
             "stats": "features: mean and scale pass (once per encoding)",
             "sklearn": "scikit-learn `SGDClassifier.partial_fit` (hinge), 1 lambda"}
    md = ["# One SGD epoch streamed from the store: features vs scikit-learn", "",
          f"{args.rows:,} synthetic encodings x {args.dims:,} dimensions (float16 on disk, "
          f"row-chunked), {args.classes:,} classes, one-vs-rest hinge, mini-batches of 256; "
          f"each measurement in its own process, median of {args.rounds} interleaved rounds; "
          f"scikit-learn on the first {args.peer_rows:,} rows and 4 lambdas on the first "
          f"{rows4:,}, scaled to the epoch. "
          f"numpy {np.__version__}, scikit-learn {sklearn.__version__}, "
          f"{result['machine']['cores']} cores shared with other jobs.", "",
          f"| method | rows timed | s | us / row | s / epoch of {args.rows:,} | peak RSS MB |",
          "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {names[r['method']]} | {r['rows']:,} | {r['seconds']:.1f} | "
                  f"{r['us_per_row']:.0f} | {r['epoch_seconds']:.0f} | {r['peak_rss_mb']:.0f} |")
    md += ["", f"Speed-up over scikit-learn at one lambda: "
               f"**{result['speedup_vs_sklearn_1_lambda']:.0f}x**.", "",
           f"Projected epoch over ILSVRC-2012 train ({ILSVRC_TRAIN:,} images, 4,096 dims, "
           f"1,000 classes) on this machine: {result['ilsvrc_epoch_hours_4_lambdas']:.2f} h "
           f"with the 4 lambdas `features baseline` trains together, "
           f"{result['ilsvrc_epoch_hours_1_lambda']:.2f} h with one; scikit-learn "
           f"{result['ilsvrc_epoch_hours_sklearn']:.1f} h."]
    (out / "baseline.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
