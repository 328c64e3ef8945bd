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
"""
from __future__ import annotations

import numpy as np

from ..exceptions import ParameterError

REFERENCE_SPREAD = 0.7
MIN_SPREAD = 18 / 255
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


def relative_threshold(peak_threshold, gray_u8) -> float:
    """``peak_threshold`` (the threshold of a photo of typical contrast) scaled to the
    contrast of ``gray_u8``."""
    return float(peak_threshold) * max(grey_spread(gray_u8), MIN_SPREAD) / REFERENCE_SPREAD
