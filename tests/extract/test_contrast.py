"""The DoG threshold relative to the image's contrast: dark, hazy and low-gain copies of real
photos keep the keypoints of their originals."""
import functools
import json

import cv2
import numpy as np
import pytest

from features.demo import load_photo
from features.extract import Extraction, sift
from features.extract.contrast import (MIN_SPREAD, REFERENCE_SPREAD, grey_spread,
                                       relative_threshold)
from features.presets import Config, get_preset

PHOTOS = ("astronaut.png", "camera.png", "chelsea.png", "coins.png", "moon.png", "text.png")


def _gray(name):
    return cv2.cvtColor(load_photo(name), cv2.COLOR_BGR2GRAY)


@functools.lru_cache(maxsize=None)
def _original(name):
    """A photo and its keypoints (computed once for its three copies)."""
    gray = _gray(name)
    return gray, sift(gray, max_keypoints=2000, relative_contrast=True)[0]


def _affine(gray, gain, offset):
    return np.clip(np.rint(gray.astype(np.float32) * gain + offset), 0, 255).astype(np.uint8)


COPIES = {
    # every grey level squeezed into 85-131: the underexposed copy
    "dark": lambda g: _affine(g, 46 / 255, 85),
    # 35% of the contrast under a light veil
    "hazy": lambda g: _affine(g, 0.35, 0.65 * 215),
    # a night shot: 30% of the exposure, grey levels 0-77
    "low-gain": lambda g: _affine(g, 0.3, 0),
}


def test_spread_of_known_images():
    assert grey_spread(np.full((50, 50), 77, np.uint8)) == 0.0
    assert grey_spread(np.zeros((0, 0), np.uint8)) == 0.0
    ramp = np.tile(np.arange(256, dtype=np.uint8), (4, 1))
    assert grey_spread(ramp) == pytest.approx((253 - 2) / 255)
    # under 1% of outliers at either end do not widen the spread
    image = np.full((100, 100), 100, np.uint8)
    image[:50] = 140
    image.flat[:90] = 255
    image.flat[-90:] = 0
    assert grey_spread(image) == pytest.approx(40 / 255)


def _two_levels(low, high):
    image = np.full((40, 40), low, np.uint8)
    image[::2, ::2] = image[1::2, 1::2] = high
    return image


def test_threshold_scales_with_the_spread():
    levels = round(REFERENCE_SPREAD * 255)
    typical = _two_levels(40, 40 + levels)
    assert relative_threshold(0.04, typical) == pytest.approx(0.04, rel=0.01)
    half = _two_levels(100, 100 + levels // 2)
    assert relative_threshold(0.04, half) == pytest.approx(0.02, rel=0.01)
    wide = _two_levels(0, 255)
    assert relative_threshold(0.04, wide) == pytest.approx(0.04 / REFERENCE_SPREAD)
    # a flat image: the threshold is lowered no further than for MIN_SPREAD
    for flat in (np.full((20, 400), 128, np.uint8), _two_levels(100, 103)):
        assert relative_threshold(0.04, flat) == pytest.approx(0.04 * MIN_SPREAD /
                                                               REFERENCE_SPREAD)


def _matched(frames, reference, tol=1.5):
    """The fraction of ``reference`` keypoints with a keypoint of ``frames`` within ``tol`` px."""
    if not len(frames) or not len(reference):
        return 0.0
    d = np.linalg.norm(reference[:, None, :2] - frames[None, :, :2], axis=2)
    return float(np.mean(d.min(axis=1) <= tol))


@pytest.mark.parametrize("copy", sorted(COPIES))
@pytest.mark.parametrize("name", PHOTOS)
def test_low_contrast_copies_keep_the_keypoints_of_the_original(name, copy):
    gray, original = _original(name)
    edited = COPIES[copy](gray)
    found, desc = sift(edited, max_keypoints=2000, relative_contrast=True)
    absolute, _ = sift(edited, max_keypoints=2000)
    assert len(original) >= 100
    # the absolute threshold loses most of them (the failure this recipe field is for)...
    assert len(absolute) < 0.5 * len(original)
    # ...the relative one keeps them, at the same places
    assert len(found) >= 0.6 * len(original) and desc.shape == (len(found), 128)
    assert _matched(found, original) >= 0.5


def test_flat_and_blank_images_stay_without_keypoints():
    for image in (np.full((200, 300), 77, np.uint8), np.full((64, 64), 128, np.uint8)):
        frames, desc = sift(image, relative_contrast=True)
        assert len(frames) == 0 and desc.shape == (0, 128)


def test_normal_photo_keeps_about_its_threshold():
    """On a well-exposed photo the relative threshold stays near the absolute one."""
    gray = _gray("coffee.png")
    assert 0.8 < relative_threshold(0.04, gray) / 0.04 < 1.5


def test_recipe_field():
    assert get_preset("sift").relative_contrast is True
    assert Extraction.of(get_preset("sift")).relative_contrast is True
    assert get_preset("sift", relative_contrast=False).relative_contrast is False
    # a recipe saved before the field existed: the absolute threshold it was built with
    saved = json.loads(get_preset("sift").to_json())
    del saved["relative_contrast"]
    old = Config.from_json(json.dumps(saved))
    assert old.relative_contrast is False and Extraction.of(old).relative_contrast is False
