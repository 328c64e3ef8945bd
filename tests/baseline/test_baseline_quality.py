"""The quality bar on a real labelled image set: Fashion-MNIST as Debian ships it.

Debian's ``dataset-fashion-mnist`` (Zalando's Fashion-MNIST: 28 x 28 gray photos of 10 kinds
of clothing; ``.ci/run`` installs it).  The test takes the first ``PER_CLASS`` images of each
class of the training file, writes them as PNGs upscaled to 64 x 64 (dense SIFT needs room
for its 4 to 10-pixel bins) in a class-folder tree, runs the real pipeline (``phow`` dense
SIFT, 1024 words), adds a spatial pyramid with `features aggregate` (1x1, 2x2, 4x4, with the
chi2 homogeneous kernel map, as VLFeat's PHOW baseline) and the raw 28 x 28 pixels as
encodings, and compares a linear SVM on each with `features baseline` (same seeded split:
a fifth of each class scores; same solver, 30 epochs).

Then Fisher vectors on the same images and split (`features aggregate --method fisher`): the
same dense SIFT (extracted again from the images: ``phow`` stores keep no descriptors), PCA
to 32 dimensions, a 64-component diagonal GMM, improved Fisher vectors on a 1x1 + 3x1 pyramid
(the whole image and three horizontal bands, as Perronnin et al. 2010 and Sanchez et al.
2013 use), 4 x 2 x 64 x 32 = 16,384 dimensions.  These sizes were chosen on *other*
Fashion-MNIST images (the next 300 of each class, same protocol), never on these: there PCA
to 32 dimensions beat 64 (10.2% against 10.8% error at 64 components), 64 components beat
128 (at 64 dimensions, 256 did 0.3 points better than 64 at four times the size), whitening
changed little, and the 1x1 + 3x1 pyramid (9.5%) beat 1x1 + 2x2 (9.8%) and no pyramid
(10.2%), against 10.8% for the BoVW pyramid.  The SVM's regularization is chosen on held-out training images, as for the others.

    python -m pytest tests/test_baseline_quality.py -s     # prints the numbers
"""
import gzip
import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from conftest import package_env, run_cli

from features.store.write import create_dense

DATA = Path("/usr/share/datasets/fashion-mnist")
NAMES = ["tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
         "bag", "ankle_boot"]
PER_CLASS = 300
SIDE = 64
FISHER = ["--pca-dims", "32", "--components", "64", "--grids", "1x1,3x1"]


def _load():
    with gzip.open(DATA / "train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    with gzip.open(DATA / "train-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    return x, y


def _add_pixels(store, pixels):
    """The raw 28 x 28 pixels (scaled to [0, 1]) as a dense encoding of the store."""
    with h5py.File(store / "store.h5", "a") as f:
        keys = f["images/key"].asstr()[:]
        X = np.stack([pixels[k] for k in keys]).astype(np.float32) / 255
        create_dense(f["encodings"], "pixels", len(X), X.shape[1], np.float32,
                     chunk_rows=1024)[:] = X


_ERRORS = {}


def _error(store, encoding, env):
    """(top-1 error, images scored) of the linear SVM on one encoding (each run once)."""
    if (store, encoding) not in _ERRORS:
        _ERRORS[store, encoding] = _svm_error(store, encoding, env)
    return _ERRORS[store, encoding]


def _svm_error(store, encoding, env):
    proc = run_cli("baseline", store, "--encoding", encoding, "--classifier", "svm",
                   "--epochs", "30", "--json", env=env, check=True)
    r = json.loads(proc.stdout)
    return r["results"][0]["top1_error"], r["val_images"]


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """(source folder, store) of the Fashion-MNIST images, with spm and pixels encodings."""
    if not DATA.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    env = package_env()
    x, y = _load()
    tmp = tmp_path_factory.mktemp("fashion")
    root = tmp / "images"
    pixels = {}
    for c, name in enumerate(NAMES):
        (root / name).mkdir(parents=True)
        for i in np.flatnonzero(y == c)[:PER_CLASS]:
            key = f"{name}/{i:05d}.png"
            cv2.imwrite(str(root / key), cv2.resize(x[i], (SIDE, SIDE),
                                                    interpolation=cv2.INTER_CUBIC))
            pixels[key] = x[i].ravel()
    store = tmp / "store"
    # k-means on 50,000 sampled descriptors: enough for 1024 words, and quick
    run_cli("run", root, "-o", store, "--preset", "phow", "--words", "1024", "--jobs", "2",
            "--sample-images", "500", "--sample-per-image", "100", "-q", env=env,
            check=True)
    run_cli("aggregate", store, "--method", "spm", "--grids", "1x1,2x2,4x4",
            "--kernel-map", "chi2", "-q", env=env, check=True)
    run_cli("aggregate", store, "--method", "fisher", *FISHER, "--source", root,
            "--jobs", "2", "-q", env=env, check=True)
    _add_pixels(store, pixels)
    return root, store, env


def test_bovw_spm_svm_beats_raw_pixels(fashion):
    _, store, env = fashion
    spm, n_val = _error(store, "spm", env)
    pixels, _ = _error(store, "pixels", env)
    print(f"\nFashion-MNIST, {PER_CLASS} images per class, {n_val} scored, linear SVM top-1 "
          f"error: dense-SIFT BoVW + spatial pyramid {spm:.4f}, raw pixels {pixels:.4f}")
    # measured 0.1533 against 0.1767 (600 scored): 2.3 points, 13% of the pixels' error;
    # at least 1.5 points is asked, well outside the noise of a seeded, deterministic run
    assert spm <= pixels - 0.015



def test_fisher_vectors_beat_bovw(fashion):
    _, store, env = fashion
    fisher, n_val = _error(store, "fisher", env)
    spm, _ = _error(store, "spm", env)
    print(f"\nFashion-MNIST, {PER_CLASS} images per class, {n_val} scored, linear SVM top-1 "
          f"error: Fisher vectors ({' '.join(FISHER)}) {fisher:.4f}, dense-SIFT BoVW + "
          f"spatial pyramid {spm:.4f}")
    # measured 0.1483 against 0.1533: 89 against 92 of the 600 scored images misclassified.
    # The margin asked (3 images, 0.5 points) was fixed before these images were scored (the
    # development images gave 1.3 points); it is a small one, within the sampling noise of
    # 600 images, so this says "not worse, slightly better", not "clearly better".
    assert round(fisher * n_val) <= round(spm * n_val) - 3
