"""Dense SIFT kernel: an independent slow NumPy reference, invariances, bad input.

The reference below is written from the description of vl_phow / vl_dsift (fast
mode), not from the kernel: it builds the 8 full orientation planes with
np.arctan2, filters them with scipy's correlate1d (mode="nearest" is VLFeat's
continuity padding) and samples the bin centres.
"""
import math

import numpy as np
import pytest
import skimage.data
from scipy.ndimage import correlate1d

from features.extract.dense import dense_sift, dense_sift_pyramid


# --------------------------------------------------------------------------
# reference
# --------------------------------------------------------------------------

def _ref_smooth(image, sigma):
    radius = math.ceil(3 * sigma) if sigma > 0 else 0
    if radius == 0:
        return image.copy()
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    out = correlate1d(image, kernel, axis=0, mode="nearest")
    return correlate1d(out, kernel, axis=1, mode="nearest")


def _ref_orientation_planes(image):
    gy, gx = np.gradient(image)          # central inside, one-sided at the border
    magnitude = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), 2 * np.pi) * (8 / (2 * np.pi))
    low = np.floor(angle).astype(int)
    frac = angle - low
    planes = np.zeros((8,) + image.shape)
    rows, cols = np.indices(image.shape)
    np.add.at(planes, (low % 8, rows, cols), (1 - frac) * magnitude)
    np.add.at(planes, ((low + 1) % 8, rows, cols), frac * magnitude)
    return planes


def reference_dense_sift(image, *, step=4, sizes=(4, 6, 8, 10), magnif=6.0,
                         contrast_threshold=0.005, window_size=1.5, bounds=None):
    """Slow dense SIFT; returns frames (x, y, size, contrast), uint8 and float
    descriptors (the float ones before quantisation)."""
    image = np.asarray(image, np.float64)
    height, width = image.shape
    x_min, y_min, x_max, y_max = bounds or (0, 0, width - 1, height - 1)
    frames, descr_u8, descr_f = [], [], []
    for s in sizes:
        sigma = math.sqrt(max((s / magnif) ** 2 - 0.25, 0))
        planes = _ref_orientation_planes(_ref_smooth(image, sigma))
        tri = 1 - np.abs(np.arange(-s + 1, s)) / s
        planes = correlate1d(planes, tri, axis=1, mode="nearest")
        planes = correlate1d(planes, tri, axis=2, mode="nearest")
        x = np.arange(-s + 1, s)
        window = [np.exp(-0.5 * ((x - s * (b - 1.5)) / (s * window_size)) ** 2).mean()
                  for b in range(4)]
        off = math.floor(1.5 * (max(sizes) - s))
        for fy in range(y_min + off, y_max - 3 * s + 1, step):
            for fx in range(x_min + off, x_max - 3 * s + 1, step):
                d = np.empty((4, 4, 8))
                for by in range(4):
                    for bx in range(4):
                        d[by, bx] = (planes[:, fy + by * s, fx + bx * s]
                                     * window[by] * window[bx])
                d = d.ravel()
                contrast = d.sum() / (3 * s + 1) ** 2
                d = d / (np.linalg.norm(d) + np.finfo(np.float32).eps)
                d = np.minimum(d, 0.2)
                d = d / (np.linalg.norm(d) + np.finfo(np.float32).eps)
                q = np.minimum(512 * d, 255).astype(np.uint8)
                if contrast < contrast_threshold:
                    q[:] = 0
                frames.append((fx + 1.5 * s, fy + 1.5 * s, s, contrast))
                descr_u8.append(q)
                descr_f.append(d)
    if not frames:
        return np.zeros((0, 4)), np.zeros((0, 128), np.uint8), np.zeros((0, 128))
    return np.array(frames), np.array(descr_u8), np.array(descr_f)


# --------------------------------------------------------------------------
# test images
# --------------------------------------------------------------------------

def _photo(height, width, name="camera"):
    import cv2
    image = getattr(skimage.data, name)()
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(
        cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))


def _noise(height, width, seed=0):
    from scipy.ndimage import gaussian_filter
    rng = np.random.default_rng(seed)
    image = gaussian_filter(rng.random((height, width)), 1.5)
    image = (image - image.min()) / (image.max() - image.min())
    return (image * 255).astype(np.uint8)


def _assert_matches_reference(image, **kwargs):
    frames, descr = dense_sift(image, **kwargs)
    ref_frames, ref_u8, ref_f = reference_dense_sift(np.asarray(image) / 255.0, **kwargs)
    assert frames.dtype == np.float32 and descr.dtype == np.uint8
    assert frames.shape == ref_frames.shape and descr.shape == ref_u8.shape
    np.testing.assert_array_equal(frames[:, :3], ref_frames[:, :3])
    np.testing.assert_allclose(frames[:, 3], ref_frames[:, 3], rtol=1e-4, atol=1e-7)
    # uint8 truncation may flip by one where 512 v sits on an integer
    diff = np.abs(descr.astype(int) - ref_u8.astype(int))
    assert diff.max() <= 1, diff.max()
    assert (diff == 0).mean() > 0.99
    # and the float values behind them agree to float tolerance
    kept = descr.any(axis=1)
    np.testing.assert_allclose(descr[kept] / 512.0, np.minimum(ref_f[kept], 255 / 512),
                               atol=1.01 / 512)
    return frames, descr


# --------------------------------------------------------------------------
# agreement with the reference
# --------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {},
    {"step": 3},
    {"step": 2, "sizes": (4,)},
    {"step": 5, "sizes": (5, 7), "magnif": 3.0},
    {"step": 1, "sizes": (3,)},
    {"step": 6, "sizes": (2, 4), "contrast_threshold": 0.0},
    {"step": 4, "sizes": (6, 10), "window_size": 2.0},
    {"step": 4, "bounds": (5, 3, 60, 50)},
])
def test_matches_reference_on_photo(kwargs):
    frames, _ = _assert_matches_reference(_photo(61, 83), **kwargs)
    assert len(frames) > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_reference_on_noise(seed):
    _assert_matches_reference(_noise(47, 58, seed), step=3, sizes=(4, 6, 8))


def test_frames_geometry():
    image = _photo(80, 100)
    frames, descr = dense_sift(image, step=4, sizes=(4, 6, 8, 10))
    # frames are grouped by size, in the order given, row-major inside a size
    assert list(dict.fromkeys(frames[:, 2].tolist())) == [4, 6, 8, 10]
    # vl_phow alignment: every size starts at the same centre (1.5 * max size)
    for s in (4, 6, 8, 10):
        f = frames[frames[:, 2] == s]
        assert f[0, 0] == f[0, 1] == 15.0
        assert np.all(np.diff(np.unique(f[:, 0])) == 4)
        # the 4 x 4 bins of s pixels stay inside the image
        assert f[:, 0].min() - 1.5 * s >= 0 and f[:, 0].max() + 1.5 * s <= 99
        assert f[:, 1].max() + 1.5 * s <= 79
    assert descr.shape == (len(frames), 128)


def test_contrast_threshold_zeroes_flat_regions():
    image = _photo(64, 64)
    image[:, :32] = 128                       # a flat half has no contrast
    frames, descr = dense_sift(image, sizes=(4,), step=4)
    # frames whose footprint (bins, triangle, smoothing, gradient) is all flat
    flat = frames[:, 0] + 2.5 * 4 - 1 + 2 + 1 < 32
    assert flat.any() and (~flat).any()
    assert np.all(frames[flat, 3] == 0)
    assert not descr[flat].any()
    # a descriptor is zero exactly when its contrast is below the threshold
    np.testing.assert_array_equal(descr.any(axis=1), frames[:, 3] >= 0.005)
    assert descr[~flat].any(axis=1).mean() > 0.5
    # the threshold zeroes exactly the descriptors below it; frames are kept
    thr = float(np.median(frames[~flat, 3]))
    frames2, descr2 = dense_sift(image, sizes=(4,), step=4, contrast_threshold=thr)
    np.testing.assert_array_equal(frames2, frames)
    low = frames[:, 3] < thr
    assert not descr2[low].any()
    np.testing.assert_array_equal(descr2[~low], descr[~low])


def test_descriptors_are_normalised():
    _, descr = dense_sift(_photo(64, 64), sizes=(4, 8), step=4)
    kept = descr[descr.any(axis=1)].astype(np.float64) / 512
    norms = np.linalg.norm(kept, axis=1)
    # unit L2 norm before quantisation; truncation loses at most 1/512 per value
    assert np.all(norms <= 1.0 + 1e-6) and np.all(norms > 0.85)


# --------------------------------------------------------------------------
# invariances
# --------------------------------------------------------------------------

def test_affine_intensity_change_leaves_descriptors_unchanged():
    image = _photo(64, 80).astype(np.float64) / 255
    frames, descr = dense_sift(image, contrast_threshold=0)
    gain, bias = 0.37, 0.41
    frames2, descr2 = dense_sift(gain * image + bias, contrast_threshold=0)
    np.testing.assert_array_equal(frames2[:, :3], frames[:, :3])
    np.testing.assert_allclose(frames2[:, 3], gain * frames[:, 3], rtol=1e-4)
    diff = np.abs(descr2.astype(int) - descr.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_rotation_by_90_degrees_permutes_the_layout():
    # W - 1 - 2 * 6 and H - 1 - 2 * 6 are multiples of the step, so the grid of
    # centres maps onto itself under the rotation.
    image = _photo(49, 65)
    frames, descr = dense_sift(image, sizes=(4,), step=4, contrast_threshold=0)
    rotated = np.rot90(image)                 # rotated[i, j] = image[j, W - 1 - i]
    frames_r, descr_r = dense_sift(rotated, sizes=(4,), step=4, contrast_threshold=0)
    width = image.shape[1]
    index = {(x, y): k for k, (x, y) in enumerate(frames_r[:, :2].tolist())}
    # spatial bin (bx, by) -> (by, 3 - bx); orientation t -> t - 2 (90 degrees)
    by, bx, t = np.meshgrid(np.arange(4), np.arange(4), np.arange(8), indexing="ij")
    target = ((3 - bx) * 4 + by) * 8 + (t - 2) % 8
    matched = 0
    for k, (x, y) in enumerate(frames[:, :2].tolist()):
        j = index[(y, width - 1 - x)]
        permuted = np.empty(128, np.uint8)
        permuted[target.ravel()] = descr[k]
        assert np.abs(permuted.astype(int) - descr_r[j].astype(int)).max() <= 1
        np.testing.assert_allclose(frames_r[j, 3], frames[k, 3], rtol=1e-4)
        matched += 1
    assert matched == len(frames_r) == len(frames) > 100


def test_mirror_flips_orientations():
    image = _photo(49, 65)
    frames, descr = dense_sift(image, sizes=(4,), step=4, contrast_threshold=0)
    frames_m, descr_m = dense_sift(image[:, ::-1], sizes=(4,), step=4,
                                   contrast_threshold=0)
    width = image.shape[1]
    index = {(x, y): k for k, (x, y) in enumerate(frames_m[:, :2].tolist())}
    by, bx, t = np.meshgrid(np.arange(4), np.arange(4), np.arange(8), indexing="ij")
    # x -> -x: bin bx -> 3 - bx, angle theta -> pi - theta, t -> 4 - t
    target = (by * 4 + (3 - bx)) * 8 + (4 - t) % 8
    for k, (x, y) in enumerate(frames[:, :2].tolist()):
        permuted = np.empty(128, np.uint8)
        permuted[target.ravel()] = descr[k]
        other = descr_m[index[(width - 1 - x, y)]]
        assert np.abs(permuted.astype(int) - other.astype(int)).max() <= 1


# --------------------------------------------------------------------------
# dtypes, layouts and bad input
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,scale", [
    (np.uint8, 1), (np.uint16, 257), (np.float32, 1 / 255), (np.float64, 1 / 255),
])
def test_dtypes_give_the_same_result(dtype, scale):
    image = _photo(40, 50)
    frames, descr = dense_sift(image, sizes=(4, 6), step=3)
    converted = (image.astype(np.float64) * scale).astype(dtype)
    frames2, descr2 = dense_sift(converted, sizes=(4, 6), step=3)
    np.testing.assert_array_equal(frames2[:, :3], frames[:, :3])
    np.testing.assert_allclose(frames2[:, 3], frames[:, 3], rtol=1e-4)
    assert np.abs(descr2.astype(int) - descr.astype(int)).max() <= 1


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (16, 16), (225, 300), (1, 1000)])
def test_uint8_images_become_the_kernel_input_in_one_pass(shape):
    # every grey level, each the float32 product NumPy's cast gives, for contiguous
    # images (the kernel's loop) and for views (NumPy)
    from features.extract.dense import _as_float_image
    image = (np.arange(np.prod(shape)) * 37 % 256).astype(np.uint8).reshape(shape)
    for view in (image, image[::-1], np.asfortranarray(image)):
        out = _as_float_image(view)
        expected = np.multiply(view, np.float32(1 / 255), dtype=np.float32)
        assert out.dtype == np.float32 and out.flags.c_contiguous
        assert out.tobytes() == np.ascontiguousarray(expected).tobytes()
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert (_as_float_image(levels).tobytes()
            == np.multiply(levels, np.float32(1 / 255), dtype=np.float32).tobytes())


def test_bool_image_is_refused():
    # the same contract as features.sift (issue #10): bool has no intensity scale
    with pytest.raises(ValueError, match="dtype"):
        dense_sift(_photo(40, 40) > 100, sizes=(4,), step=4)


@pytest.mark.parametrize("view", [
    lambda a: a[::2, ::3], lambda a: a.T, lambda a: a[5:-7, 3:], lambda a: a[::-1],
    lambda a: np.asfortranarray(a),
])
def test_non_contiguous_input(view):
    image = _photo(90, 100)
    v = view(image)
    frames, descr = dense_sift(v, step=3)
    frames2, descr2 = dense_sift(np.ascontiguousarray(v), step=3)
    np.testing.assert_array_equal(frames, frames2)
    np.testing.assert_array_equal(descr, descr2)


@pytest.mark.parametrize("shape", [(0, 0), (0, 10), (10, 0), (1, 1), (1, 50), (50, 1),
                                   (2, 2), (12, 12), (30, 12), (12, 300)])
def test_too_small_images_give_empty_results(shape):
    image = np.full(shape, 100, np.uint8)
    image[::2] = 30
    frames, descr = dense_sift(image, sizes=(4,), step=4)
    assert frames.shape == (0, 4) and frames.dtype == np.float32
    assert descr.shape == (0, 128) and descr.dtype == np.uint8
    frames, descr, index = dense_sift_pyramid(image)
    assert frames.shape == (0, 4) and descr.shape == (0, 128) and index.shape == (0,)


def test_smallest_image_with_one_descriptor():
    image = _noise(13, 13)
    frames, descr = dense_sift(image, sizes=(4,), step=4)
    assert frames.shape == (1, 4)
    np.testing.assert_array_equal(frames[0, :3], [6, 6, 4])
    _assert_matches_reference(image, sizes=(4,), step=4)


def test_sizes_larger_than_the_image_are_skipped():
    image = _photo(40, 40)
    frames, _ = dense_sift(image, sizes=(4, 20), step=4)
    assert set(frames[:, 2].tolist()) == {4}


@pytest.mark.parametrize("image,match", [
    (np.zeros((20, 20, 3), np.uint8), r"\(20, 20, 3\)"),
    (np.zeros((20, 20, 4), np.float32), "2-D"),
    (np.zeros(20, np.uint8), "2-D"),
    (np.zeros((2, 20, 20, 1), np.uint8), "2-D"),
    (np.zeros((20, 20), np.int32), "dtype"),
    (np.zeros((20, 20), np.complex64), "dtype"),
    (np.zeros((20, 20), object), "dtype"),
    (np.full((20, 20), np.nan), "NaN"),
    (np.full((20, 20), np.inf, np.float32), "NaN"),
])
def test_bad_images_raise(image, match):
    with pytest.raises(ValueError, match=match):
        dense_sift(image)


@pytest.mark.parametrize("kwargs,match", [
    ({"step": 0}, "step"), ({"step": -2}, "step"), ({"step": 1.5}, "step"),
    ({"step": "4"}, "step"), ({"step": True}, "step"),
    ({"sizes": ()}, "sizes"), ({"sizes": (0, 4)}, "sizes"), ({"sizes": (4.5,)}, "sizes"),
    ({"sizes": None}, "sizes"), ({"sizes": (-4,)}, "sizes"),
    ({"magnif": 0}, "magnif"), ({"magnif": -1.0}, "magnif"),
    ({"magnif": float("nan")}, "magnif"), ({"magnif": "6"}, "magnif"),
    ({"contrast_threshold": -0.1}, "contrast_threshold"),
    ({"contrast_threshold": float("inf")}, "contrast_threshold"),
    ({"window": "gaussian"}, "window"), ({"window_size": 0}, "window_size"),
    ({"bounds": (0, 0, 10)}, "bounds"), ({"bounds": (10, 0, 5, 20)}, "bounds"),
    ({"bounds": (0, 0, 10.5, 10)}, "bounds"), ({"bounds": 5}, "bounds"),
    ({"n_threads": 0}, "n_threads"), ({"n_threads": 1.0}, "n_threads"),
])
def test_bad_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dense_sift(_photo(32, 32), **kwargs)


@pytest.mark.parametrize("kwargs", [
    {"step": 10**12}, {"sizes": (4, 10**12)}, {"sizes": (10**12,)}, {"magnif": 1e-9},
    {"n_threads": 10**12}, {"bounds": (-10**15, 0, 10**15, 10**15)},
    {"bounds": (10**15, 10**15, 10**16, 10**16)}, {"contrast_threshold": 1e300},
])
def test_extreme_parameters(kwargs):
    image = _photo(40, 48)
    frames, descr = dense_sift(image, **kwargs)
    assert frames.shape[1] == 4 and descr.shape == (len(frames), 128)
    assert np.isfinite(frames).all()


def test_huge_step_keeps_one_frame_per_size():
    image = _photo(40, 48)
    frames, descr = dense_sift(image, step=10**12, sizes=(4, 6))
    ref_frames, ref_u8, _ = reference_dense_sift(image / 255.0, step=10**12, sizes=(4, 6))
    np.testing.assert_array_equal(frames[:, :3], ref_frames[:, :3])
    assert len(frames) == 2
    assert np.abs(descr.astype(int) - ref_u8.astype(int)).max() <= 1


def test_bounds_outside_the_image_are_clipped():
    image = _photo(50, 60)
    frames, descr = dense_sift(image, bounds=(-100, -5, 1000, 1000))
    frames2, descr2 = dense_sift(image)
    np.testing.assert_array_equal(frames, frames2)
    np.testing.assert_array_equal(descr, descr2)


def test_thread_count_does_not_change_the_result():
    image = _photo(70, 90)
    one = dense_sift(image, step=3)
    two = dense_sift(image, step=3, n_threads=2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


def test_kernel_rejects_inconsistent_arguments():
    from features._ext import _dsift
    image = np.zeros((20, 20), np.float32)
    ones = np.ones(1, np.int32)
    taps = np.ones((1, 1), np.float32)
    wm = np.ones((1, 4), np.float32)
    frames = np.empty((1, 4), np.float32)
    descr = np.empty((1, 128), np.uint8)
    args = dict(bmin_x=np.zeros(1, np.int32), bmin_y=np.zeros(1, np.int32), n_x=ones,
                n_y=ones, taps=taps, radius=np.zeros(1, np.int32), window_mean=wm)

    def call(**over):
        a = {**args, **over}
        _dsift.dsift(image, 4, np.array([4], np.int32), a["bmin_x"], a["bmin_y"],
                     a["n_x"], a["n_y"], a["taps"], a["radius"], a["window_mean"],
                     0.0, over.get("frames", frames), over.get("descr", descr), 1)

    call()                                                # consistent: fine
    with pytest.raises(ValueError, match="leave the image"):
        call(n_x=np.array([3], np.int32), frames=np.empty((3, 4), np.float32),
             descr=np.empty((3, 128), np.uint8))
    with pytest.raises(ValueError, match="leave the image"):
        call(bmin_x=np.array([-1], np.int32))
    with pytest.raises(ValueError, match="frames must be"):
        call(frames=np.empty((2, 4), np.float32))
    with pytest.raises(ValueError, match="radius"):
        call(radius=np.array([3], np.int32))
    with pytest.raises(ValueError, match="entries"):
        call(n_y=np.ones(2, np.int32))


# --------------------------------------------------------------------------
# the sbow pyramid preset
# --------------------------------------------------------------------------

def test_pyramid_geometry():
    import cv2
    image = _photo(300, 240)
    frames, descr, index = dense_sift_pyramid(image)
    assert frames.dtype == np.float32 and descr.dtype == np.uint8
    assert index.dtype == np.int8 and set(index.tolist()) == {0, 1, 2}
    assert len(frames) == len(descr) == len(index)
    # each scale is dense SIFT of the resized image, mapped back to the input
    for k, factor in enumerate((1.0, 0.5, 0.25)):
        size = (round(240 * factor), round(300 * factor))
        as_float = image.astype(np.float32) / 255
        resized = as_float if factor == 1 else cv2.resize(as_float, size,
                                                          interpolation=cv2.INTER_AREA)
        f, d = dense_sift(resized, sizes=(5,), step=10)
        sel = index == k
        assert np.abs(descr[sel].astype(int) - d.astype(int)).max() <= 1
        np.testing.assert_allclose(frames[sel, 0], (f[:, 0] + 0.5) / factor - 0.5)
        np.testing.assert_allclose(frames[sel, 1], (f[:, 1] + 0.5) / factor - 0.5)
        np.testing.assert_allclose(frames[sel, 2], 5 / factor)
        np.testing.assert_allclose(frames[sel, 3], f[:, 3], rtol=1e-4)
    # 20 x 20 pixel patches every 10 pixels at full size: centres 7.5, 17.5, ...
    full = frames[index == 0]
    assert full[0, 0] == full[0, 1] == 7.5
    assert np.all(np.diff(np.unique(full[:, 0])) == 10)
    # frames stay inside the input image at every scale
    assert frames[:, 0].min() >= 0 and frames[:, 0].max() <= 239
    assert frames[:, 1].min() >= 0 and frames[:, 1].max() <= 299


@pytest.mark.parametrize("shape", [(224, 300), (225, 300), (300, 300), (200, 300)])
def test_pyramid_with_the_area_kernel_is_the_pyramid_with_opencv(shape, monkeypatch):
    """The sbow pyramid of a photo: the same frames and descriptors, bit for bit, whether
    its half and quarter sizes come from the area kernel (integer factors included, 224 x
    300 and 200 x 300) or from cv2.resize for the integer factors."""
    import features.extract.dense as dense
    image = _photo(*shape)
    with_kernel = dense_sift_pyramid(image)
    monkeypatch.setattr(dense, "_block_mean_is_opencvs", lambda: False)
    with_opencv = dense_sift_pyramid(image)
    for a, b in zip(with_kernel, with_opencv):
        np.testing.assert_array_equal(a, b)



def test_pyramid_small_image_drops_small_scales():
    # a 20 x 20 patch needs 16 x 16 pixels: 40 -> 20 -> 10 keeps two scales
    frames, _, index = dense_sift_pyramid(_photo(40, 40))
    assert len(frames) > 0 and set(index.tolist()) == {0, 1}


@pytest.mark.parametrize("kwargs,match", [
    ({"scales": ()}, "scales"), ({"scales": (1.0, 0.0)}, "scales"),
    ({"scales": (1.5,)}, "scales"), ({"scales": (-0.5,)}, "scales"),
    ({"scales": 0.5}, "scales"), ({"bin_size": 0}, "bin_size"), ({"step": 0}, "step"),
])
def test_pyramid_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dense_sift_pyramid(_photo(40, 40), **kwargs)


def test_pyramid_rejects_colour():
    with pytest.raises(ValueError, match="2-D"):
        dense_sift_pyramid(np.zeros((40, 40, 3), np.uint8))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_pyramid_of_an_image_with_white_areas(dtype):
    """Area averaging of a white 500 x 375 image gives 1.0000001 in float32: the smaller
    scales must still be accepted by dense_sift (the sbow recipe on any photo with a
    saturated sky)."""
    top = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1.0)
    gray = np.full((375, 500), top, dtype)
    gray[100:200, 150:300] = np.asarray(_photo(100, 150), np.float64) * top / 255
    frames, _, index = dense_sift_pyramid(gray)
    assert len(frames) > 0 and set(index.tolist()) == {0, 1, 2}


# --------------------------------------------------------------------------
# the builds of the kernel for wider instruction sets
# --------------------------------------------------------------------------

def _build(level):
    """The baseline build and the one for ``level``, skipped where the platform has no such
    build or the CPU cannot run it."""
    from features.extract import dense
    builds = dense._kernel_builds()
    if level not in builds:
        pytest.skip(f"no {level} build of the kernel here, or the CPU cannot run it")
    return builds["baseline"], builds[level]


def _noisy_photo(shape, seed=3):
    # a photo and noise: every orientation, magnitudes near the bin boundaries
    rng = np.random.default_rng(seed)
    image = np.clip(_photo(*shape) / np.float32(255) + rng.normal(0, 0.05, shape), 0, 1)
    return image.astype(np.float32)


def _pure_noise(shape, seed=4):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


@pytest.mark.parametrize("level", ["avx2", "avx512"])
@pytest.mark.parametrize("make", [_noisy_photo, _pure_noise], ids=["photo", "noise"])
@pytest.mark.parametrize("shape, step, sizes", [((225, 300), 10, (5,)), ((112, 150), 10, (5,)),
                                                ((56, 75), 10, (5,)),
                                                ((97, 131), 4, (4, 6, 8, 10)),
                                                ((83, 61), 3, (2, 3, 7)),
                                                ((31, 29), 3, (3, 7))])
def test_wide_kernels_are_bit_identical(monkeypatch, level, make, shape, step, sizes):
    from features.extract import dense
    base, wide = _build(level)
    image = make(shape)
    out = []
    for module in (base, wide):
        monkeypatch.setattr(dense, "_kernel", lambda module=module: module)
        out.append(dense_sift(image, step=step, sizes=sizes, contrast_threshold=0))
    (f0, d0), (f1, d1) = out
    assert len(f0) > 0 and d0.any()
    # byte for byte: the contrast's float bits as well
    assert f0.tobytes() == f1.tobytes()
    assert d0.tobytes() == d1.tobytes()


@pytest.mark.parametrize("level", ["avx2", "avx512"])
@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "camera"])
def test_wide_kernels_give_the_sbow_pyramid_bit_for_bit(monkeypatch, level, name):
    from features.extract import dense
    base, wide = _build(level)
    height, width = getattr(skimage.data, name)().shape[:2]
    scale = 300 / max(height, width)
    image = _photo(round(height * scale), round(width * scale), name)
    out = []
    for module in (base, wide):
        monkeypatch.setattr(dense, "_kernel", lambda module=module: module)
        out.append(dense_sift_pyramid(image))
    for a, b in zip(*out):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_kernel_choice_follows_the_cpu_and_the_switch(monkeypatch):
    from features.extract import dense
    builds = dense._kernel_builds()
    default = builds.get("avx2", builds["baseline"])
    monkeypatch.delenv("FEATURES_DSIFT_SIMD", raising=False)
    monkeypatch.delenv("FEATURES_DSIFT_AVX2", raising=False)
    dense._kernel.cache_clear()
    try:
        assert dense._kernel() is default
        for level, expected in (("baseline", "baseline"), ("avx2", "avx2"),
                                ("AVX512", "avx512")):
            monkeypatch.setenv("FEATURES_DSIFT_SIMD", level)
            dense._kernel.cache_clear()
            # a level the CPU cannot run falls back to the widest one below it
            fallback = [m for n, m in builds.items()
                        if dense._SIMD_LEVELS.index(n) <= dense._SIMD_LEVELS.index(expected)]
            assert dense._kernel() is fallback[-1]
        monkeypatch.setenv("FEATURES_DSIFT_SIMD", "avx512")
        monkeypatch.setenv("FEATURES_DSIFT_AVX2", "0")
        dense._kernel.cache_clear()
        assert dense._kernel() is builds["baseline"]
        monkeypatch.setenv("FEATURES_DSIFT_SIMD", "sse9")
        dense._kernel.cache_clear()
        with pytest.raises(ValueError, match="sse9"):
            dense._kernel()
    finally:
        dense._kernel.cache_clear()


def test_builds_report_what_they_were_compiled_for():
    from features.extract import dense
    builds = dense._kernel_builds()
    assert not builds["baseline"].AVX512
    if "avx2" in builds:
        assert builds["avx2"].AVX2 and not builds["avx2"].AVX512
    if "avx512" in builds:
        assert builds["avx512"].AVX512 and builds["avx512"].cpu_has_avx512()


def test_cached_layout_is_read_only_and_reused():
    from features.extract.dense import _layout
    image = _photo(60, 80)
    first = dense_sift(image, step=5, sizes=(4, 8))
    args = (60, 80, 5, (4, 8), 6.0, 1.5, (0, 0, 79, 59))
    layout = _layout(*args)
    assert _layout(*args) is layout
    assert all(not a.flags.writeable for a in layout[2])
    again = dense_sift(image, step=5, sizes=(4, 8))
    np.testing.assert_array_equal(first[1], again[1])
    np.testing.assert_array_equal(first[0], again[0])
