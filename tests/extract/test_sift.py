import numpy as np
import pytest

from features.demo import load_photo
from features.extract import rootsift, sift


@pytest.fixture(scope="module")
def gray():
    import cv2
    return cv2.cvtColor(load_photo("chelsea.png"), cv2.COLOR_BGR2GRAY)


def test_shapes_and_types(gray):
    frames, desc = sift(gray)
    assert frames.dtype == np.float32 and frames.shape[1] == 4
    assert desc.dtype == np.uint8 and desc.shape == (len(frames), 128)
    assert len(frames) > 100
    h, w = gray.shape
    assert (frames[:, 0] >= 0).all() and (frames[:, 0] < w).all()
    assert (frames[:, 1] >= 0).all() and (frames[:, 1] < h).all()
    assert (np.abs(frames[:, 3]) <= 2 * np.pi).all()


def test_max_keypoints_keeps_strongest(gray):
    frames, desc = sift(gray, max_keypoints=50)
    assert 50 <= len(frames) <= 55  # OpenCV keeps ties at the cut
    assert len(desc) == len(frames)


def test_rootsift_is_unit_norm(gray):
    _, desc = sift(gray, root=True)
    norms = np.linalg.norm(desc.astype(np.float64) / 512.0, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=0.03)


def test_rootsift_of_known_vector():
    d = np.zeros((2, 128), np.float32)
    d[0, :16] = 7.0     # sqrt(1/16) = 0.25 -> 128
    d[1, 0] = 3.0       # sqrt(1) * 512 clamps to 255
    r = rootsift(d)
    assert r[0, :16].tolist() == [128] * 16 and r[0, 16:].sum() == 0
    assert r[1, 0] == 255 and r[1, 1:].sum() == 0


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_dtypes_give_same_keypoints(gray, dtype):
    if dtype == np.uint16:
        image = gray.astype(np.uint16) << 8
    elif np.dtype(dtype).kind == "f":
        image = gray.astype(dtype) / 255.0
    else:
        image = gray
    f_ref, _ = sift(gray)
    f, _ = sift(image)
    np.testing.assert_allclose(f, f_ref, atol=1e-4)


@pytest.mark.parametrize("shape", [(0, 0), (1, 1), (5, 300), (7, 7)])
def test_tiny_images_give_empty_results(shape):
    frames, desc = sift(np.zeros(shape, np.uint8))
    assert frames.shape == (0, 4) and desc.shape == (0, 128)


def test_flat_image_has_no_keypoints():
    frames, desc = sift(np.full((64, 64), 128, np.uint8))
    assert len(frames) == 0 and desc.shape == (0, 128)


def test_non_contiguous_input(gray):
    f_ref, d_ref = sift(np.ascontiguousarray(gray[:, ::2]))
    f, d = sift(gray[:, ::2])
    np.testing.assert_array_equal(d, d_ref)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((10, 10, 3), np.uint8), "2-D"),
    (np.zeros((10, 10), np.int64), "dtype"),
    (np.full((10, 10), 2.0), r"\[0, 1\]"),
])
def test_bad_images_raise_value_error(bad, match):
    with pytest.raises(ValueError, match=match):
        sift(bad)


@pytest.mark.parametrize("kwargs", [{"max_keypoints": -1}, {"peak_threshold": -0.1},
                                    {"edge_threshold": 0}])
def test_bad_parameters_name_the_value(gray, kwargs):
    with pytest.raises(ValueError, match=str(list(kwargs.values())[0])):
        sift(gray, **kwargs)
