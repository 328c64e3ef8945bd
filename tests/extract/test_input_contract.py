"""features.sift and features.dense_sift accept and refuse the same images, with the same
message."""
import numpy as np
import pytest

import features

RNG = np.random.default_rng(0)
U8 = (RNG.random((48, 64)) * 255).astype(np.uint8)


@pytest.mark.parametrize("image", [U8, U8.astype(np.uint16) * 257, U8 / 255.0,
                                   (U8 / 255.0).astype(np.float32), U8[:, ::2],
                                   np.zeros((0, 0), np.uint8)], ids=["uint8", "uint16",
                                   "float64", "float32", "strided", "empty"])
def test_both_accept(image):
    for extract in (features.sift, features.dense_sift):
        frames, desc = extract(image)
        assert frames.dtype == np.float32 and desc.dtype == np.uint8


def test_float_images_give_the_uint8_result():
    for extract in (features.sift, features.dense_sift):
        a = extract(U8)[1]
        b = extract(U8 / 255.0)[1]
        assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1


@pytest.mark.parametrize("image,match", [
    (np.full((32, 32), np.nan), "NaN"),
    (np.where(U8 > 100, np.nan, U8 / 255.0), "NaN"),
    (np.full((32, 32), np.inf, np.float32), "NaN"),
    (U8 > 100, "dtype .* got bool"),
    (U8.astype(np.float32), r"\[0, 1\].*divide"),
    (-(U8 / 255.0), r"\[0, 1\]"),
    (U8.astype(np.int32), "dtype"),
    (np.zeros((8, 8, 3), np.uint8), "2-D .* colour"),
    (np.zeros(8, np.uint8), "2-D"),
    (np.zeros((2, 8, 8), np.float32), "2-D"),
])
def test_both_refuse_with_the_same_message(image, match):
    messages = []
    for extract in (features.sift, features.dense_sift):
        with pytest.raises(ValueError, match=match) as e:
            extract(image)
        messages.append(str(e.value).replace("image", "gray"))
    assert messages[0] == messages[1]
