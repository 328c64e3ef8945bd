"""The area-averaging downscale of the dense SIFT pyramid and of decoding: bit-identical to
cv2.resize, both of OpenCV's paths (fractional and integer factors), uint8 and float32."""
import cv2
import numpy as np
import pytest
from skimage import data as skdata

from features._ext._area import (FLOAT_BLOCK_LANES, HAVE_AVX2, HAVE_AVX512, area_resize,
                                 area_resize_by, row_path)
from features._ext._dsift import cpu_has_avx2
from features.extract.dense import _block_mean_is_opencvs, _integer_factors, _resize

# the fastest loops the CPU has (the AVX-512 row path where it applies), the AVX2 ones and
# the portable ones
SIMD = pytest.mark.parametrize("simd", [{}, {"avx512": False}, {"simd": False}],
                               ids=["fastest", "avx2", "portable"])
SIZES = list(range(1, 40)) + [56, 75, 111, 112, 149, 150, 151, 225, 299, 300, 301]


def _cv2(image, size):
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


@SIMD
@pytest.mark.parametrize("height", [1, 2, 3, 7, 17, 56, 111, 225, 301])
def test_kernel_is_bit_identical_to_opencv(height, simd):
    rng = np.random.default_rng(height)
    tested = 0
    for width in SIZES:
        image = rng.random((height, width), dtype=np.float32)
        for factor in (0.5, 0.25, 0.3, 0.77, 0.999):
            size = (max(round(width * factor), 1), max(round(height * factor), 1))
            if size == (width, height):
                continue
            out = np.empty(size[::-1], np.float32)
            area_resize(image, out, **simd)
            np.testing.assert_array_equal(out, _cv2(image, size), err_msg=f"{image.shape} -> {size}")
            tested += 1
    assert tested > 100


def test_avx2_loops_run_where_the_cpu_has_them():
    # the simd cases above test the AVX2 loops only where they run
    assert HAVE_AVX2 == cpu_has_avx2()


def test_row_path_runs_where_the_cpu_has_it():
    # the fastest cases above test the row path only where it runs
    from features._ext._dsift import cpu_has_avx512
    assert HAVE_AVX512 == (HAVE_AVX2 and cpu_has_avx512())


@pytest.mark.parametrize("width, out_width, block", [
    (500, 300, 16), (375, 225, 16), (300, 150, 16), (300, 75, 8), (301, 150, 8),
    (225, 112, 8), (225, 56, 0), (333, 200, 16), (1000, 300, 8), (1000, 200, 0), (7, 3, 16)])
def test_row_path_takes_the_pyramid_and_decoding_sizes(width, out_width, block):
    # 16 output columns a block when their entries fit 32 pixels, 8 when only those do
    # (a factor up to 4), else the AVX2 loops (225 -> 56 is a factor of 4.02)
    assert row_path(width, out_width) == block


@SIMD
def test_signed_zeros_and_negative_values_are_opencvs(simd):
    # the row path pads columns with zero products: -0.0, which adds nothing, not even to
    # a sum of -0.0 (compared as bytes: assert_array_equal takes -0.0 for 0.0)
    rng = np.random.default_rng(11)
    for shape, size in [((9, 10), (6, 4)), ((31, 50), (17, 30)), ((8, 300), (75, 3)),
                        ((20, 500), (300, 7))]:
        image = rng.choice(np.float32([-0.0, 0.0, -1.5, 2.0, -3e-39]), shape)
        out = np.empty(size[::-1], np.float32)
        area_resize(image, out, **simd)
        assert out.tobytes() == _cv2(image, size).tobytes(), (shape, size)


def test_integer_factors_are_the_block_mean_path():
    assert _integer_factors(300, 224, (150, 112))
    assert _integer_factors(300, 224, (75, 56))
    assert not _integer_factors(300, 225, (150, 112))
    assert not _integer_factors(301, 224, (150, 112))


@pytest.mark.parametrize("shape", [(225, 300), (224, 300), (300, 225), (97, 131), (5, 3)])
@pytest.mark.parametrize("scale", [0.5, 0.25])
def test_pyramid_resize_equals_opencv(shape, scale):
    image = np.random.default_rng(1).random(shape, dtype=np.float32)
    size = (max(round(shape[1] * scale), 1), max(round(shape[0] * scale), 1))
    expected = np.clip(_cv2(image, size), 0, 1)
    np.testing.assert_array_equal(_resize(image, scale), expected)


def test_kernel_refuses_an_enlargement():
    image = np.zeros((10, 10), np.float32)
    with pytest.raises(ValueError, match="10x10 to 11x5"):
        area_resize(image, np.empty((11, 5), np.float32))


def _random(shape, dtype, rng):
    if dtype == np.uint8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.random(shape, dtype=np.float32)


def _photos():
    """Gray photos of skimage.data, as uint8 and in [0, 1] float32."""
    for name in ("camera", "astronaut", "coffee", "chelsea", "rocket"):
        image = getattr(skdata, name)()
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        yield name, image


@SIMD
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_random_size_pairs_are_bit_identical(dtype, simd):
    """Random sizes in and out: fractional factors, integer ones (whole image multiples,
    2 x 2 and others) and factors near 1 and huge."""
    rng = np.random.default_rng(7 if dtype == np.uint8 else 8)
    paths = {"fractional": 0, "integer": 0}
    for _ in range(1500):
        height, width = (int(v) for v in rng.integers(1, 160, 2))
        kind = rng.integers(4)
        if kind == 0:       # integer factors
            kx, ky = (int(v) for v in rng.integers(1, 6, 2))
            height, width = height // ky * ky or ky, width // kx * kx or kx
            size = (width // kx, height // ky)
        elif kind == 1:     # near 1
            size = (max(width - int(rng.integers(0, 2)), 1), max(height - int(rng.integers(0, 2)), 1))
        elif kind == 2:     # huge
            size = (min(int(rng.integers(1, 3)), width), min(int(rng.integers(1, 3)), height))
        else:
            size = (int(rng.integers(1, width + 1)), int(rng.integers(1, height + 1)))
        image = _random((height, width), dtype, rng)
        out = np.empty(size[::-1], dtype)
        area_resize(image, out, **simd)
        np.testing.assert_array_equal(out, _cv2(image, size), err_msg=f"{image.shape} -> {size}")
        paths["integer" if _integer_factors(width, height, size) else "fractional"] += 1
    assert min(paths.values()) > 300, paths


@SIMD
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_photos_are_bit_identical(dtype, simd):
    for name, photo in _photos():
        image = photo if dtype == np.uint8 else photo.astype(np.float32) / 255
        height, width = image.shape
        for side in (300, 256, 225, 150, 99, 64, 7, 1):
            scale = side / max(width, height)
            size = (max(round(width * scale), 1), max(round(height * scale), 1))
            out = np.empty(size[::-1], dtype)
            area_resize(image, out, **simd)
            np.testing.assert_array_equal(out, _cv2(image, size), err_msg=f"{name} -> {size}")


@SIMD
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_one_pixel_sides(dtype, simd):
    rng = np.random.default_rng(3)
    for shape, size in [((1, 1), (1, 1)), ((1, 97), (13, 1)), ((97, 1), (1, 13)), ((1, 2), (1, 1)),
                        ((2, 1), (1, 1)), ((5, 300), (1, 1)), ((1, 300), (150, 1)),
                        ((300, 1), (1, 75)), ((2, 2), (1, 1)), ((3, 7), (2, 1))]:
        image = _random(shape, dtype, rng)
        out = np.empty(size[::-1], dtype)
        area_resize(image, out, **simd)
        np.testing.assert_array_equal(out, _cv2(image, size), err_msg=f"{shape} -> {size}")


@SIMD
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_uniform_images_keep_their_value(dtype, simd):
    """Ties: a sum that lands on .5 is rounded to even in uint8, as OpenCV does, and a
    uniform image stays uniform whatever the roundings of the weights."""
    for value in (0, 1, 127, 128, 254, 255):
        image = np.full((375, 500), value if dtype == np.uint8 else value / 255, dtype)
        for size in ((300, 225), (250, 187), (1, 1)):
            out = np.empty(size[::-1], dtype)
            area_resize(image, out, **simd)
            np.testing.assert_array_equal(out, _cv2(image, size))
    stripes = np.tile(np.array([[10, 11]], np.uint8), (4, 8))     # block sums of x.5
    for size in ((8, 2), (8, 4), (5, 3)):
        out = np.empty(size[::-1], np.uint8)
        area_resize(stripes, out, **simd)
        np.testing.assert_array_equal(out, _cv2(stripes, size))


@SIMD
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_factor_form_is_bit_identical(dtype, simd):
    """cv2.resize(image, None, fx, fy): its size rounded from the factors, its factors
    1 / fx, 1 / fy (not the ratio of the sizes), blocks cut by the border when an integer
    factor does not divide the image; any top-left part of it."""
    rng = np.random.default_rng(11 if dtype == np.uint8 else 12)
    tested = 0
    for _ in range(1500):
        height, width = (int(v) for v in rng.integers(1, 200, 2))
        fx, fy = (float(rng.choice([rng.uniform(0.01, 1), 0.5, 0.25, 1 / 3, rng.uniform(0.9, 1)]))
                  for _ in range(2))
        full_w, full_h = round(width * fx), round(height * fy)
        if full_w < 1 or full_h < 1:
            continue
        image = _random((height, width), dtype, rng)
        expected = cv2.resize(image, None, fx=fx, fy=fy, interpolation=cv2.INTER_AREA)
        assert expected.shape == (full_h, full_w)
        h, w = max(full_h - int(rng.integers(0, 2)), 1), max(full_w - int(rng.integers(0, 2)), 1)
        out = np.empty((h, w), dtype)
        area_resize_by(image, out, fx, fy, **simd)
        np.testing.assert_array_equal(out, expected[:h, :w],
                                      err_msg=f"{image.shape} by {fx!r}, {fy!r}")
        tested += 1
    assert tested > 1000


@SIMD
@pytest.mark.parametrize("shape", [(301, 301), (303, 302), (7, 9), (450, 601)])
@pytest.mark.parametrize("factor", [0.5, 0.25, 1 / 3])
def test_factor_form_cut_blocks(shape, factor, simd):
    """Integer factors that do not divide the image: the last row and column of blocks
    stand for fewer pixels, averaged over what they cover."""
    rng = np.random.default_rng(5)
    for dtype in (np.uint8, np.float32):
        image = _random(shape, dtype, rng)
        expected = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        out = np.empty(expected.shape, dtype)
        area_resize_by(image, out, factor, factor, **simd)
        np.testing.assert_array_equal(out, expected)


def test_float_block_mean_lanes_are_opencvs():
    """The 2 x 2 float block mean adds pairs first in OpenCV's vector columns: the width
    of its loop is the kernel's constant on this build, and the probe that guards the
    pyramid agrees."""
    assert FLOAT_BLOCK_LANES == 4
    assert _block_mean_is_opencvs()
    rng = np.random.default_rng(2)
    for width in range(1, 70):
        image = rng.random((6, 2 * width), dtype=np.float32)
        out = np.empty((3, width), np.float32)
        area_resize(image, out)
        np.testing.assert_array_equal(out, _cv2(image, (width, 3)), err_msg=f"width {width}")


def test_pyramid_without_the_block_kernel_uses_opencv(monkeypatch):
    import features.extract.dense as dense

    monkeypatch.setattr(dense, "_block_mean_is_opencvs", lambda: False)
    image = np.random.default_rng(4).random((224, 300), dtype=np.float32)
    np.testing.assert_array_equal(dense._resize(image, 0.5), np.clip(_cv2(image, (150, 112)), 0, 1))


def test_same_size_is_a_copy():
    image = np.random.default_rng(0).integers(0, 256, (5, 7), dtype=np.uint8)
    out = np.empty((5, 7), np.uint8)
    area_resize(image, out)
    np.testing.assert_array_equal(out, image)
    out = np.empty((4, 7), np.uint8)
    area_resize_by(image, out, 1.0, 0.99)     # rounds back to 5 x 7: OpenCV copies
    np.testing.assert_array_equal(out, image[:4])


def test_kernel_refuses_what_it_does_not_compute():
    image = np.zeros((10, 10), np.uint8)
    with pytest.raises(ValueError, match="10x10 to 5x11"):
        area_resize(image, np.empty((5, 11), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        area_resize(image, np.empty((0, 5), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        area_resize(np.zeros((0, 10), np.uint8), np.empty((1, 1), np.uint8))
    with pytest.raises(ValueError, match="contiguous"):
        area_resize(np.zeros((10, 20), np.uint8)[:, ::2], np.empty((5, 5), np.uint8))
    with pytest.raises(ValueError, match="contiguous"):
        area_resize(image, np.empty((10, 10), np.uint8)[::2, ::2])
    with pytest.raises(ValueError, match="dtype mismatch"):
        area_resize(image, np.empty((5, 5), np.float32))
    with pytest.raises(TypeError, match="No matching signature"):
        area_resize(image.astype(np.uint16), np.empty((5, 5), np.uint16))
    with pytest.raises(ValueError, match="fx and fy"):
        area_resize_by(image, np.empty((5, 5), np.uint8), 1.5, 0.5)
    with pytest.raises(ValueError, match="fx and fy"):
        area_resize_by(image, np.empty((5, 5), np.uint8), 0.5, 0.0)
    with pytest.raises(ValueError, match="is 5x5, smaller than the 6x5 output"):
        area_resize_by(image, np.empty((6, 5), np.uint8), 0.5, 0.5)
    with pytest.raises(ValueError, match="empty image"):
        area_resize_by(image, np.empty((1, 1), np.uint8), 0.01, 0.5)
