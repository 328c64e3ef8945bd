"""The store the quality tests score: labelled images as a ``split-tree`` through the CLI.

``build`` writes each split's images, upscaled (dense SIFT needs room for its 4 to 10-pixel
bins), as ``train/CLASS/`` and ``val/CLASS/`` so that every model (the codebook, PCA, GMM)
is learned from ``train/`` only and `features baseline` scores exactly ``val/``.  It runs the
real pipeline (``phow`` dense SIFT, BoVW), a spatial pyramid (chi2 kernel map, as VLFeat's
PHOW baseline), improved Fisher vectors on a pyramid and the raw pixels, and trains a linear
SVM on each with one `features baseline --json` (the regularization chosen on held-out
training images; the exact McNemar test of the best encoding against each other comes from
the product).  ``summary`` prints the figures (``pytest -s``) and returns them.
"""
import json

import cv2
import h5py
import numpy as np

from conftest import package_env, run_cli

from features.store.write import create_dense


def first_of_each_class(y, start, count):
    """Indices of images ``start`` to ``start + count`` of each class, in file order."""
    return np.concatenate([np.flatnonzero(y == c)[start:start + count] for c in np.unique(y)])




def build(tmp, splits, side, words, fisher, spm_grids, epochs):
    """`features baseline --json` (parsed) on the store of a split-tree of ``splits``
    ({split: (images, labels, indices)}) with bovw, spm, fisher and pixels encodings."""
    env = package_env()
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
    run_cli("aggregate", store, "--method", "spm", "--grids", spm_grids,
            "--kernel-map", "chi2", "-q", env=env, check=True)
    run_cli("aggregate", store, "--method", "fisher", *fisher, "--source", root,
            "--jobs", "2", "-q", env=env, check=True)
    with h5py.File(store / "store.h5", "a") as f:
        keys = f["images/key"].asstr()[:]
        X = np.stack([pixels[k] for k in keys]).astype(np.float32) / 255
        create_dense(f["encodings"], "pixels", len(X), X.shape[1], np.float32,
                     chunk_rows=1024)[:] = X
    proc = run_cli("baseline", store, "--classifier", "svm", "--epochs", epochs, "--json",
                   env=env, check=True)
    return json.loads(proc.stdout)


def summary(name, r):
    """(top-1 error by encoding, the best's record, McNemar p of each against the best)."""
    errors = {x["encoding"]: x["top1_error"] for x in r["results"]}
    best = r["best"]
    p = {c["encoding"]: c["p_value"] for c in best["compared"]}
    lo, hi = best["top1_error_ci"]
    print(f"\n{name}, {r['val_images']} scored, linear SVM top-1 error: "
          + ", ".join(f"{k} {v:.4f}" for k, v in sorted(errors.items()))
          + f"; best {best['encoding']} [{lo:.4f}, {hi:.4f}], McNemar p against it: "
          + ", ".join(f"{k} {v:.3g}" for k, v in p.items()))
    return errors, best, p
