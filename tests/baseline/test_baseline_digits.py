"""The quality bar on real handwritten digits: scikit-learn's UCI optical digits.

scikit-learn ships them (1,797 gray 8 x 8 images of the digits 0 to 9 written by 43 people,
UCI's optical recognition test set): nothing is downloaded.  The test writes the first
``DIGITS_TRAIN + DIGITS_VAL`` images of each class, upscaled to ``DIGITS_SIDE`` pixels (dense
SIFT needs room for its 4 to 10-pixel bins), as a ``split-tree`` source, ``train/`` and
``val/``, so that every model (codebook, PCA, GMM) is learned from ``train/`` only and
`features baseline` scores exactly ``val/`` (250 images).  It runs the real pipeline (``phow``
dense SIFT, 256 words), a spatial pyramid (1x1, 2x2, 4x4, chi2 kernel map), improved Fisher
vectors (PCA to 32 dimensions, 64 components, 1x1 + 2x2 pyramid) and the raw 8 x 8 pixels,
and compares a linear SVM on each with one `features baseline --json`.

The settings were chosen by ``benchmarks/bench_baseline_quality.py`` on the *last* 85 images
of each class, never on these (``benchmarks/results/baseline_quality.md``): there the best
encoding erred on 3.6 to 4.0% of 250 images (pixels 5.2%), at 32 or 64 pixels a side.  98%
top-1 is not within reach of these encodings on 8 x 8 images with 60 training images a class:
an upscaled 8 x 8 image holds a few strokes that one SIFT descriptor already spans.  The bar
asked is the development figure with the noise of 250 images (Wilson interval) added.

    python -m pytest tests/baseline/test_baseline_digits.py -s     # prints the numbers
"""
import json
import os
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from conftest import run_cli

from features.store.write import create_dense

DIGITS_TRAIN, DIGITS_VAL, DIGITS_SIDE = 60, 25, 32
DIGITS_FISHER = ["--pca-dims", "32", "--components", "64", "--grids", "1x1,2x2"]


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
def digits(tmp_path_factory):
    load_digits = pytest.importorskip("sklearn.datasets").load_digits
    d = load_digits()
    # 0..16 ink levels to 0..255 gray, ink dark on white as written
    x = 255 - np.round(d.images * (255 / 16)).astype(np.uint8)
    y = d.target.astype(np.uint8)
    first = [np.flatnonzero(y == c)[:DIGITS_TRAIN + DIGITS_VAL] for c in range(10)]
    splits = {"train": (x, y, np.concatenate([f[:DIGITS_TRAIN] for f in first])),
              "val": (x, y, np.concatenate([f[DIGITS_TRAIN:] for f in first]))}
    r = _build(tmp_path_factory.mktemp("digits"), splits, DIGITS_SIDE, DIGITS_FISHER, 256,
               _env())
    return _summary(f"Handwritten digits, {DIGITS_TRAIN} training images per class", r)


def test_digits_best_top1_accuracy(digits):
    _, best, _ = digits
    # development images: 3.6 to 4.0% (pixels 5.2%); asked: at most 7% (93% top-1), the
    # development figure plus the sampling noise of 250 images; the 98% is not reached
    assert best["top1_error"] <= 0.07
