"""Agreement of features.fisher_vector and features.vlad with VLFeat 0.9.21 (Debian's
libvlfeat1) called through ctypes (loader and bindings: benchmarks/_vlfeat.py), on real
SIFT descriptors: OpenCV SIFT on photos that scikit-image ships.

Models, the same for both sides: PCA to 64 dimensions and a 64-component diagonal GMM
(k-means, then one maximization step) for Fisher vectors; 64 k-means centers of the
raw descriptors for VLAD; learned on one set of photos, encodings of other photos.
The bar: cosine similarity >= 0.9999 per image (``-s`` prints the minimum).
"""
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage
from skimage.io import imread

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _vlfeat import (VL_FISHER_FLAG_FAST, VL_FISHER_FLAG_IMPROVED,  # noqa: E402
                     VL_FISHER_FLAG_NORMALIZED, VL_FISHER_FLAG_SQUARE_ROOT, VLFeat,
                     load_libvl)

from encoding_reference import gmm_from_kmeans, nearest_centers, pca_fit  # noqa: E402
from features import fisher_vector, vlad  # noqa: E402
from features.codebook import kmeans  # noqa: E402
from features.extract import sift  # noqa: E402

_LIB = load_libvl()
pytestmark = pytest.mark.skipif(
    _LIB is None,
    reason="VLFeat (libvl.so) not installed: `apt-get install libvlfeat-dev` "
           "(or set FEATURES_LIBVL) to run the agreement tests")

TRAIN = ("brick.png", "grass.png", "gravel.png", "coins.png", "moon.png", "page.png",
         "clock_motion.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png")
TEST = ("camera.png", "astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg",
        "retina.jpg", "motorcycle_right.png", "text.png")
BAR = 0.9999


def _gray(name, max_side=512):
    image = np.asarray(imread(Path(skimage.__file__).parent / "data" / name))
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
    scale = max_side / max(image.shape)
    if scale < 1:
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def _cosine(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def vl():
    lib = VLFeat(_LIB)
    lib.set_num_threads(1)
    return lib


@pytest.fixture(scope="module")
def setting():
    train = np.concatenate([sift(_gray(name))[1] for name in TRAIN]).astype(np.float32)
    test = {name: sift(_gray(name))[1].astype(np.float32) for name in TEST}
    mean, components = pca_fit(train, 64)
    project = lambda d: ((d - mean) @ components.T).astype(np.float32)  # noqa: E731
    gmm = gmm_from_kmeans(project(train), 64)
    centers = kmeans(train, 64, seed=1, iters=10)
    return dict(projected={n: project(d) for n, d in test.items()}, raw=test, gmm=gmm,
                centers=centers, n_train=len(train),
                words={n: nearest_centers(d, centers) for n, d in test.items()})


FISHER_FLAGS = {
    "improved": (dict(), VL_FISHER_FLAG_IMPROVED),
    "plain": (dict(improved=False), 0),
    "square_root": (dict(improved=False, square_root=True), VL_FISHER_FLAG_SQUARE_ROOT),
    "normalized": (dict(improved=False, normalized=True), VL_FISHER_FLAG_NORMALIZED),
    "improved_fast": (dict(fast=True), VL_FISHER_FLAG_IMPROVED | VL_FISHER_FLAG_FAST),
}


@pytest.mark.parametrize("flags", list(FISHER_FLAGS))
def test_fisher_agrees_with_vl_fisher(vl, setting, flags):
    kw, vl_flags = FISHER_FLAGS[flags]
    means, covariances, priors = setting["gmm"]
    cosines = []
    for name, x in setting["projected"].items():
        assert len(x) > 100, name
        ours = fisher_vector(x, means, covariances, priors, **kw)
        theirs = vl.fisher(x, means, covariances, priors, vl_flags)
        assert ours.shape == theirs.shape == (2 * 64 * 64,)
        cosines.append(_cosine(ours, theirs))
        # same values, not only the same direction (before the square root, which
        # magnifies the differences of values near 0: a posterior near the 1e-6 cut)
        if vl_flags & VL_FISHER_FLAG_SQUARE_ROOT:
            ours, theirs = ours * np.abs(ours), theirs * np.abs(theirs)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4 * np.abs(theirs).max())
    print(f"\nfisher {flags}: {len(cosines)} images, min cosine with vl_fisher "
          f"{min(cosines):.9f}")
    assert min(cosines) >= BAR


def test_fisher_agrees_with_vl_fisher_on_an_em_gmm(vl, setting):
    """The same bar with a GMM trained by EM (features.encodings.fit_gmm, here on the
    encoded descriptors themselves): softer posteriors than the one-step model above."""
    from features.encodings import fit_gmm
    train = np.concatenate(list(setting["projected"].values()))
    gmm = fit_gmm(train, 32, iters=20, seed=0)
    model = (gmm.means, gmm.covariances, gmm.priors)
    cosines = [_cosine(fisher_vector(x, *model), vl.fisher(x, *model))
               for x in setting["projected"].values()]
    print(f"\nfisher improved, EM GMM: min cosine with vl_fisher {min(cosines):.9f}")
    assert min(cosines) >= BAR


def test_fisher_empty_image_as_vlfeat(vl, setting):
    means, covariances, priors = setting["gmm"]
    x = np.zeros((0, 64), np.float32)
    np.testing.assert_array_equal(fisher_vector(x, means, covariances, priors),
                                  vl.fisher(x, means, covariances, priors))


def _vlad_kwargs(flags):
    return dict(normalize_components=bool(flags & 1), square_root=bool(flags & 2),
                normalized=not flags & 4, normalize_mass=bool(flags & 8))


@pytest.mark.parametrize("flags", range(16))
def test_vlad_agrees_with_vl_vlad(vl, setting, flags):
    centers = setting["centers"]
    k = len(centers)
    cosines = []
    for name, x in setting["raw"].items():
        # the nearest centers (features.assign) once, the given assignment otherwise
        words = setting["words"][name]
        ours = vlad(x, centers, None if flags == 3 else words, **_vlad_kwargs(flags))
        # VLFeat takes only the dense (N, K) matrix; the same hard assignment
        onehot = np.zeros((len(x), k), np.float32)
        onehot[np.arange(len(x)), words] = 1
        theirs = vl.vlad(x, centers, onehot, flags)
        cosines.append(_cosine(ours, theirs))
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4 * np.abs(theirs).max())
    print(f"\nvlad flags {flags}: min cosine with vl_vlad {min(cosines):.9f}")
    assert min(cosines) >= BAR


def test_vlad_soft_agrees_with_vl_vlad(vl, setting):
    centers = setting["centers"]
    for name, x in setting["raw"].items():
        dist = ((x[:, None, :] - centers[None]) ** 2).sum(-1)
        soft = np.exp(-(dist - dist.min(1, keepdims=True)) / dist.mean() * 20)
        soft /= soft.sum(1, keepdims=True)
        ours = vlad(x, centers, soft.astype(np.float32))
        theirs = vl.vlad(x, centers, soft, 3)
        assert _cosine(ours, theirs) >= BAR, name


def test_hard_assignment_is_vlfeats(vl, setting):
    """Our nearest centers (exact) are those of vl_kmeans_quantize but for near-ties."""
    centers = setting["centers"]
    quantize = vl.kmeans_quantizer(centers)
    try:
        for name, x in setting["raw"].items():
            ours = nearest_centers(x, centers)
            assert np.mean(quantize(x) == ours) >= 0.999, name
    finally:
        quantize.close()
