"""Agreement with VLFeat 0.9.21 (Debian's libvlfeat1), called through ctypes.

The VLFeat side is exactly vl_phow's gray path (vl_imsmooth_f, then vl_dsift in
fast mode with vl_phow's bounds, window size 1.5, contrast thresholding and the
uint8 conversion of the MATLAB vl_dsift), run on real photos. The loader lives
in benchmarks/_vlfeat.py and is shared with the benchmark.
"""
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _vlfeat import VLFeat, load_libvl  # noqa: E402

from features.extract.dense import dense_sift, dense_sift_pyramid, smoothing_sigma  # noqa: E402

_LIB = load_libvl()
pytestmark = pytest.mark.skipif(
    _LIB is None,
    reason="VLFeat (libvl.so) not installed: `apt-get install libvlfeat-dev` "
           "(or set FEATURES_LIBVL) to run the agreement tests")

PHOTOS = ("camera", "astronaut", "coffee", "chelsea", "rocket", "brick")


@pytest.fixture(scope="module")
def vl():
    return VLFeat(_LIB)


def _photo(name, max_side):
    import cv2
    image = getattr(skimage.data, name)()
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    height, width = image.shape
    scale = max_side / max(height, width)
    size = (round(width * scale), round(height * scale))
    return np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))


def _cosines(a, b):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    both = (na > 0) & (nb > 0)
    return (a[both] * b[both]).sum(1) / (na[both] * nb[both]), both


def _compare(ours, theirs):
    (frames, descr), (vl_frames, vl_descr) = ours, theirs
    # same frames: positions and sizes exactly, contrast to float precision
    # (VLFeat filters with float running sums over whole columns, whose
    # round-off is of the order of 1e-6 absolute)
    assert frames.shape == vl_frames.shape
    np.testing.assert_array_equal(frames[:, :3], vl_frames[:, :3])
    np.testing.assert_allclose(frames[:, 3], vl_frames[:, 3], rtol=1e-3, atol=5e-6)
    cos, both = _cosines(descr, vl_descr)
    # the same descriptors are zeroed by the contrast threshold, but for a few
    # whose contrast is within float error of it
    zero, vl_zero = ~descr.any(axis=1), ~vl_descr.any(axis=1)
    assert (zero != vl_zero).mean() < 0.002
    assert both.sum() > 0.3 * len(frames)
    return cos


@pytest.mark.parametrize("name", PHOTOS)
def test_phow_agreement_on_photos(vl, name):
    image = _photo(name, 256)
    ours = dense_sift(image, step=4, sizes=(4, 6, 8, 10))
    theirs = vl.phow(image.astype(np.float32) / 255, step=4, sizes=(4, 6, 8, 10),
                     sigma=smoothing_sigma)
    cos = _compare(ours, theirs)
    assert cos.mean() >= 0.95, cos.mean()
    # VLFeat differs only by its approximate atan2: in practice far closer
    assert cos.mean() >= 0.999 and np.percentile(cos, 1) > 0.99


@pytest.mark.parametrize("kwargs", [
    {"step": 3, "sizes": (5, 7)},
    {"step": 2, "sizes": (4, 8), "magnif": 3.0},
    {"step": 5, "sizes": (3,), "contrast_threshold": 0.0},
])
def test_agreement_other_geometries(vl, kwargs):
    image = _photo("astronaut", 128)
    ours = dense_sift(image, **kwargs)
    magnif = kwargs.get("magnif", 6.0)
    theirs = vl.phow(image.astype(np.float32) / 255, step=kwargs["step"],
                     sizes=kwargs["sizes"],
                     contrast_threshold=kwargs.get("contrast_threshold", 0.005),
                     sigma=lambda s: smoothing_sigma(s, magnif))
    assert _compare(ours, theirs).mean() >= 0.95


def test_pyramid_full_scale_agrees(vl):
    image = _photo("chelsea", 300)
    frames, descr, index = dense_sift_pyramid(image)
    full = index == 0
    theirs = vl.phow(image.astype(np.float32) / 255, step=10, sizes=(5,),
                     sigma=smoothing_sigma)
    assert _compare((frames[full], descr[full]), theirs).mean() >= 0.95


def test_float_descriptors_before_quantisation(vl):
    # compare the raw vl_dsift output as well, bypassing the uint8 conversion
    image = _photo("coffee", 160).astype(np.float32) / 255
    smoothed = vl.imsmooth(image, smoothing_sigma(6))
    off = 3
    vl_frames, vl_descr = vl.dsift(smoothed, bin_size=6, step=4,
                                   bounds=(off, off, image.shape[1] - 1,
                                           image.shape[0] - 1))
    # with a single size, dense_sift adds no alignment offset to the bounds
    frames, descr = dense_sift(image, sizes=(6,), step=4,
                               bounds=(off, off, image.shape[1] - 1, image.shape[0] - 1),
                               contrast_threshold=0.0)
    np.testing.assert_array_equal(frames[:, :2], vl_frames[:, :2])
    np.testing.assert_allclose(frames[:, 3], vl_frames[:, 2], rtol=1e-3, atol=5e-6)
    cos, _ = _cosines(descr, vl_descr)
    assert cos.mean() > 0.999
