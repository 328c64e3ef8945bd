"""The quality bar on real labelled images: Fashion-MNIST and handwritten digits.

Fashion-MNIST as Debian's ``dataset-fashion-mnist`` ships it (Zalando's 28 x 28 gray photos
of 10 kinds of clothing; ``.ci/run`` installs it) and scikit-learn's handwritten digits (UCI's
optical digits, 1,797 8 x 8 images of 43 writers, shipped with scikit-learn: nothing is
downloaded).  Each test writes the images upscaled (dense SIFT needs room for its 4 to
10-pixel bins) as a ``split-tree`` source, ``train/`` and ``val/``, so that every model (the
codebook, PCA, GMM) is learned from ``train/`` only and `features baseline` scores exactly
``val/``; it runs the real pipeline (``phow`` dense SIFT, BoVW), a spatial pyramid (1x1, 2x2,
4x4, chi2 kernel map, as VLFeat's PHOW baseline), improved Fisher vectors on a pyramid, and
the raw pixels, and compares a linear SVM on each with one `features baseline --json` (its
regularization chosen on held-out training images; the exact McNemar test of the best
encoding against each other comes from the product).

- Fashion-MNIST: the first ``FASHION_TRAIN`` images of each class of the training file
  train, the first ``FASHION_VAL`` of each class of the *test* file score.
- Digits: ``tests/baseline/test_baseline_digits.py``.

Every setting (image side, pyramid, PCA dimensions, GMM components) was chosen by
``benchmarks/bench_baseline_quality.py`` on other images, never on these: the last images of
each class of Fashion-MNIST's training file, and the last of each class of the digits
(``benchmarks/results/baseline_quality.md`` records what was tried).

Measured: Fisher vectors (PCA 64, 256 components, 1x1 + 3x1) 9.8% error [8.1%, 11.8%] of
1,000, BoVW pyramid 11.9% (McNemar p = 0.014), BoVW 12.1%, pixels 15.8%; about 7 minutes
on 2 shared cores, most of it the 131,072-dimension encoding and its SVM.

    python -m pytest tests/baseline/test_baseline_quality.py -s     # prints the numbers
"""
import gzip
import json
import os
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from conftest import run_cli

from features.store.write import create_dense

FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_TRAIN, FASHION_VAL, FASHION_SIDE = 500, 100, 64
FASHION_FISHER = ["--pca-dims", "64", "--components", "256", "--grids", "1x1,3x1"]


def _idx(path, offset):
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def _first(y, count):
    return np.concatenate([np.flatnonzero(y == c)[:count] for c in np.unique(y)])


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + \
        env.get("PYTHONPATH", "")
    return env


def _build(tmp, splits, side, fisher, words, env):
    """The store of a split-tree of ``splits`` ({split: (images, labels, indices)}) with
    spm, fisher and pixels encodings; returns the parsed `features baseline --json`."""
    root = tmp / "images"
    pixels = {}
    for split, (x, y, idx) in splits.items():
        for i in idx:
            key = f"{split}/c{y[i]}/{i:05d}.png"
            (root / split / f"c{y[i]}").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / key), cv2.resize(x[i], (side, side),
                                                    interpolation=cv2.INTER_CUBIC))
            pixels[key] = x[i].ravel()
    store = tmp / "store"
    run_cli("run", root, "-o", store, "--preset", "phow", "--words", words, "--jobs", "2",
            "--sample-images", "500", "--sample-per-image", "100", "-q", env=env,
            check=True)
    run_cli("aggregate", store, "--method", "spm", "--grids", "1x1,2x2,4x4",
            "--kernel-map", "chi2", "-q", env=env, check=True)
    run_cli("aggregate", store, "--method", "fisher", *fisher, "--source", root,
            "--jobs", "2", "-q", env=env, check=True)
    with h5py.File(store / "store.h5", "a") as f:
        keys = f["images/key"].asstr()[:]
        X = np.stack([pixels[k] for k in keys]).astype(np.float32) / 255
        create_dense(f["encodings"], "pixels", len(X), X.shape[1], np.float32,
                     chunk_rows=1024)[:] = X
    proc = run_cli("baseline", store, "--classifier", "svm", "--epochs", "30", "--json",
                   env=env, check=True)
    return json.loads(proc.stdout)


def _summary(name, r):
    errors = {x["encoding"]: x["top1_error"] for x in r["results"]}
    best = r["best"]
    p = {c["encoding"]: c["p_value"] for c in best["compared"]}
    lo, hi = best["top1_error_ci"]
    print(f"\n{name}, {r['val_images']} scored, linear SVM top-1 error: "
          + ", ".join(f"{k} {v:.4f}" for k, v in sorted(errors.items()))
          + f"; best {best['encoding']} [{lo:.4f}, {hi:.4f}], McNemar p against it: "
          + ", ".join(f"{k} {v:.3g}" for k, v in p.items()))
    return errors, best, p


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    if not FASHION.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    y = _idx(FASHION / "train-labels-idx1-ubyte.gz", 8)
    x = _idx(FASHION / "train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    yt = _idx(FASHION / "t10k-labels-idx1-ubyte.gz", 8)
    xt = _idx(FASHION / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    splits = {"train": (x, y, _first(y, FASHION_TRAIN)),
              "val": (xt, yt, _first(yt, FASHION_VAL))}
    r = _build(tmp_path_factory.mktemp("fashion"), splits, FASHION_SIDE, FASHION_FISHER,
               1024, _env())
    return _summary(f"Fashion-MNIST, {FASHION_TRAIN} training images per class", r)


def test_fashion_bovw_spm_beats_raw_pixels(fashion):
    errors, _, _ = fashion
    assert errors["spm"] <= errors["pixels"] - 0.015


def test_fashion_fisher_vectors_beat_bovw_significantly(fashion):
    errors, best, p = fashion
    assert best["encoding"] == "fisher"
    assert p["spm"] < 0.05 and p["bovw"] < 0.05


def test_fashion_best_top1_accuracy(fashion):
    _, best, _ = fashion
    assert best["top1_error"] <= 0.12
