"""The DoG contrast threshold relative to an image's own contrast.

OpenCV's ``contrastThreshold`` is absolute: a DoG extremum is kept when its contrast, in the
[0, 1] intensity scale, exceeds it. Darkening, haze, a low exposure or a faded scan multiply
every contrast in an image by the same factor, so an absolute threshold keeps fewer and fewer
of the same keypoints until it keeps none (a photo squeezed into grey levels 85-131 keeps
none to a few dozen of its hundreds). Scaling the threshold by the image's own contrast keeps
the same keypoints whatever that factor, as the descriptors, which are normalized, already
are.

The image's contrast is its **spread**: the range between the 1st and 99th percentiles of
its grey levels, in [0, 1] (robust to a few saturated or dead pixels). The threshold is

    peak_threshold * max(spread, MIN_SPREAD) / REFERENCE_SPREAD

``REFERENCE_SPREAD`` is the spread of a typical photo (0.7: the median of the photos that
scikit-image ships is 0.66, well-exposed ones reach 0.85-0.97), so a normal photo keeps
about the threshold it has always had. ``MIN_SPREAD`` (18 grey levels) bounds how far it
is lowered: below it an image is too flat for its grey-level range to say how strong its
structure is. A uniform image has no DoG extrema whatever the threshold; the noise of a
nearly uniform one can pass this lower threshold where it did not pass 0.04, the price of
finding the structure of a photo squeezed into a few dozen grey levels.

The spread overstates the contrast of an image whose grey levels are spread by a part
without structure: a black border or letterbox, a dark background around a lit object (a
fundus photo: black around a smooth red disk). Its structure then needs a contrast it does
not have, and a crop without the border, whose spread is that of the structure alone, keeps
other keypoints: at 256 pixels a side, a 60% crop of scikit-image's retina and its
original shared no match that one similarity explains (OpenCV's ratio test and RANSAC;
19 with the measure below). The measure ``"spread-gradient"`` (the ``sift`` presets') takes the lower
of the spread and the image's **gradient strength**: the 90th percentile of its gradient
magnitude (Sobel, intensities in [0, 1]), which a border without structure leaves
unchanged and which darkening and haze scale by the same factor as the spread. Over the
photos that scikit-image ships, at 256 and 640 pixels a side, its median is 0.61 and 0.51:
``REFERENCE_GRADIENT`` is 0.55, so a photo of typical structure keeps the threshold it has.
The lower of the two never raises the threshold above the spread's: images whose spread is
the weaker measure keep the keypoints they had. ``MIN_RATIO`` bounds how far either lowers
it (a twentieth: a photo squeezed into 85-131 keeps its dark copy's structure).
"""
from __future__ import annotations

import numpy as np

from ..exceptions import ParameterError
from ..presets import CONTRAST_MEASURES as MEASURES

REFERENCE_SPREAD = 0.7
MIN_SPREAD = 18 / 255
REFERENCE_GRADIENT = 0.55
MIN_RATIO = 0.05
_LOW, _HIGH = 0.01, 0.99   # the percentiles of the spread


def grey_spread(gray_u8) -> float:
    """The range between the 1st and 99th percentiles of a uint8 image's grey levels, in
    [0, 1] (0 for an empty or constant image)."""
    image = np.asarray(gray_u8)
    if image.dtype != np.uint8:
        raise ParameterError(f"gray must be uint8 here, got {image.dtype}", "gray")
    if image.size == 0:
        return 0.0
    # a histogram rather than a sort: one pass, whatever the image's size
    cumulative = np.cumsum(np.bincount(image.ravel(), minlength=256))
    total = cumulative[-1]
    low = int(np.searchsorted(cumulative, _LOW * total, side="right"))
    high = int(np.searchsorted(cumulative, _HIGH * total, side="left"))
    return max(high - low, 0) / 255.0


def gradient_strength(gray_u8) -> float:
    """The 90th percentile of a uint8 image's gradient magnitude (3 x 3 Sobel, intensities
    in [0, 1]; 0 for an image smaller than 3 x 3)."""
    import cv2
    image = np.asarray(gray_u8)
    if image.dtype != np.uint8:
        raise ParameterError(f"gray must be uint8 here, got {image.dtype}", "gray")
    if image.ndim != 2 or min(image.shape) < 3:
        return 0.0
    f = image.astype(np.float32) * np.float32(1 / 255)
    magnitude = cv2.magnitude(cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3),
                              cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3))
    at = int(0.9 * (magnitude.size - 1))
    return float(np.partition(magnitude.ravel(), at)[at])


def relative_threshold(peak_threshold, gray_u8, measure="spread") -> float:
    """``peak_threshold`` (the threshold of a photo of typical contrast) scaled to the
    contrast of ``gray_u8``, as ``measure`` (one of :data:`MEASURES`) measures it."""
    if measure not in MEASURES:
        raise ParameterError(f"contrast_measure must be one of {MEASURES}, got {measure!r}",
                             "contrast_measure")
    ratio = max(grey_spread(gray_u8), MIN_SPREAD) / REFERENCE_SPREAD
    if measure == "spread-gradient":
        ratio = max(min(ratio, gradient_strength(gray_u8) / REFERENCE_GRADIENT), MIN_RATIO)
    return float(peak_threshold) * ratio
