"""The area-averaging downscale of the dense SIFT pyramid: bit-identical to cv2.resize."""
import cv2
import numpy as np
import pytest

from features._ext._area import area_resize
from features.extract.dense import _integer_factors, _resize

SIZES = list(range(1, 40)) + [56, 75, 111, 112, 149, 150, 151, 225, 299, 300, 301]


def _cv2(image, size):
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("height", [1, 2, 3, 7, 17, 56, 111, 225, 301])
def test_kernel_is_bit_identical_to_opencv(height):
    rng = np.random.default_rng(height)
    tested = 0
    for width in SIZES:
        image = rng.random((height, width), dtype=np.float32)
        for factor in (0.5, 0.25, 0.3, 0.77, 0.999):
            size = (max(round(width * factor), 1), max(round(height * factor), 1))
            if size == (width, height) or _integer_factors(width, height, size):
                continue
            out = np.empty(size[::-1], np.float32)
            area_resize(image, out)
            np.testing.assert_array_equal(out, _cv2(image, size), err_msg=f"{image.shape} -> {size}")
            tested += 1
    assert tested > 100


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
