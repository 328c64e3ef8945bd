"""The DoG threshold relative to the image's contrast: dark, hazy and low-gain copies of real
photos keep the keypoints of their originals."""
import functools
import json

import cv2
import numpy as np
import pytest

from features.demo import load_photo
from features.extract import Extraction, sift
from features.extract.contrast import (MIN_RATIO, MIN_SPREAD, REFERENCE_GRADIENT,
                                       REFERENCE_SPREAD, gradient_strength, grey_spread,
                                       relative_threshold)
from features.exceptions import ParameterError
from features.presets import Config, get_preset

PHOTOS = ("astronaut.png", "camera.png", "chelsea.png", "coins.png", "moon.png", "text.png")


def _gray(name):
    return cv2.cvtColor(load_photo(name), cv2.COLOR_BGR2GRAY)


@functools.lru_cache(maxsize=None)
def _original(name, measure="spread"):
    """A photo and its keypoints (computed once for its three copies)."""
    gray = _gray(name)
    return gray, sift(gray, max_keypoints=2000, relative_contrast=True,
                      contrast_measure=measure)[0]


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


@pytest.mark.parametrize("measure", ["spread", "spread-gradient"])
@pytest.mark.parametrize("copy", sorted(COPIES))
@pytest.mark.parametrize("name", PHOTOS)
def test_low_contrast_copies_keep_the_keypoints_of_the_original(name, copy, measure):
    gray, original = _original(name, measure)
    edited = COPIES[copy](gray)
    found, desc = sift(edited, max_keypoints=2000, relative_contrast=True,
                       contrast_measure=measure)
    absolute, _ = sift(edited, max_keypoints=2000)
    assert len(original) >= 100
    # the absolute threshold loses most of them (the failure this recipe field is for)...
    assert len(absolute) < 0.5 * len(original)
    # ...the relative one keeps them, at the same places
    assert len(found) >= 0.6 * len(original) and desc.shape == (len(found), 128)
    assert _matched(found, original) >= 0.5


@pytest.mark.parametrize("measure", ["spread", "spread-gradient"])
def test_flat_and_blank_images_stay_without_keypoints(measure):
    for image in (np.full((200, 300), 77, np.uint8), np.full((64, 64), 128, np.uint8)):
        frames, desc = sift(image, relative_contrast=True, contrast_measure=measure)
        assert len(frames) == 0 and desc.shape == (0, 128)


def test_gradient_strength_of_known_images():
    assert gradient_strength(np.full((50, 50), 77, np.uint8)) == 0.0
    assert gradient_strength(np.zeros((2, 9), np.uint8)) == 0.0
    # a ramp of 2 grey levels a pixel: Sobel's 3 x 3 sums 8 times the step
    ramp = np.tile(np.arange(0, 200, 2, dtype=np.uint8), (20, 1))
    assert gradient_strength(ramp) == pytest.approx(8 * 2 / 255, rel=1e-5)
    with pytest.raises(ParameterError, match="uint8"):
        gradient_strength(ramp.astype(np.float32))
    with pytest.raises(ParameterError, match="contrast_measure.*'local'"):
        relative_threshold(0.04, ramp, "local")


def _bordered(gray, pad):
    """``gray`` inside a black border ``pad`` pixels wide: a letterbox, or the dark
    surround of a fundus photo."""
    return cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)


def test_a_black_border_does_not_raise_the_threshold_of_spread_gradient():
    """A dim photo's grey-level spread doubles in a black border, its gradient strength
    barely moves: "spread-gradient" keeps its threshold, "spread" raises it."""
    dim = _affine(_gray("camera.png"), 0.35, 120)
    framed = _bordered(dim, 40)
    spread = relative_threshold(0.04, framed) / relative_threshold(0.04, dim)
    lower = (relative_threshold(0.04, framed, "spread-gradient")
             / relative_threshold(0.04, dim, "spread-gradient"))
    assert spread > 1.8
    assert 0.8 < lower < 1.1


def test_spread_gradient_never_raises_the_threshold_above_the_spread():
    for name in PHOTOS + ("grass.png", "gravel.png", "retina.jpg"):
        gray = _gray(name)
        assert (relative_threshold(0.04, gray, "spread-gradient")
                <= relative_threshold(0.04, gray) + 1e-12)
    # and lowers it no further than MIN_RATIO, however weak the structure
    faint = _two_levels(100, 101)
    assert relative_threshold(0.04, faint, "spread-gradient") == pytest.approx(
        0.04 * max(MIN_RATIO, min(MIN_SPREAD / REFERENCE_SPREAD,
                                  gradient_strength(faint) / REFERENCE_GRADIENT)))


def _inliers(a, b):
    """Matches of two images' SIFT (ratio test) that one similarity transform explains."""
    (ka, da), (kb, db) = a, b
    if len(ka) < 4 or len(kb) < 4:
        return 0
    pairs = cv2.BFMatcher().knnMatch(da.astype(np.float32), db.astype(np.float32), k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
    if len(good) < 4:
        return 0
    pa = np.float32([ka[m.queryIdx][:2] for m in good])
    pb = np.float32([kb[m.trainIdx][:2] for m in good])
    _, mask = cv2.estimateAffinePartial2D(pa, pb, method=cv2.RANSAC, ransacReprojThreshold=3)
    return 0 if mask is None else int(mask.sum())


def test_a_crop_without_the_border_matches_its_original():
    """scikit-image's retina (a smooth red disk on black) and its central 60%, both at 256
    pixels a side: with "spread" they share few verified matches (the crop, without the
    black, gets a threshold 3 times lower and keeps other keypoints: 8 here); with
    "spread-gradient" several times more (51)."""
    gray = _gray("retina.jpg")
    h, w = gray.shape
    crop = gray[int(0.2 * h):int(0.8 * h), int(0.2 * w):int(0.8 * w)]

    def at_256(image):
        s = 256 / max(image.shape)
        return cv2.resize(image, (round(image.shape[1] * s), round(image.shape[0] * s)),
                          interpolation=cv2.INTER_AREA)

    found = {}
    for measure in ("spread", "spread-gradient"):
        found[measure] = _inliers(*(sift(at_256(im), root=True, relative_contrast=True,
                                         contrast_measure=measure)
                                    for im in (gray, crop)))
    assert found["spread-gradient"] >= max(20, 3 * found["spread"])


def test_normal_photo_keeps_about_its_threshold():
    """On a well-exposed photo the relative threshold stays near the absolute one."""
    gray = _gray("coffee.png")
    assert 0.8 < relative_threshold(0.04, gray) / 0.04 < 1.5


def test_recipe_field():
    assert get_preset("sift").relative_contrast is True
    assert get_preset("sift").contrast_measure == "spread-gradient"
    assert Extraction.of(get_preset("sift-fast")).contrast_measure == "spread-gradient"
    with pytest.raises(ParameterError, match="contrast_measure"):
        get_preset("sift", contrast_measure="local")
    assert Extraction.of(get_preset("sift")).relative_contrast is True
    assert get_preset("sift", relative_contrast=False).relative_contrast is False
    # a recipe saved before the field existed: the absolute threshold it was built with
    saved = json.loads(get_preset("sift").to_json())
    del saved["relative_contrast"]
    del saved["contrast_measure"]
    old = Config.from_json(json.dumps(saved))
    assert old.relative_contrast is False and Extraction.of(old).relative_contrast is False
    # and one saved before the gradient: the grey-level spread it was built with
    saved = json.loads(get_preset("sift").to_json())
    del saved["contrast_measure"]
    assert Config.from_json(json.dumps(saved)).contrast_measure == "spread"
