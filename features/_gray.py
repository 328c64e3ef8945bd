"""The one input contract of the extractors (``features.sift`` and ``features.dense_sift``).

Accepted: a 2-D array of uint8 (0..255), uint16 (0..65535) or floating point with values in
[0, 1]. Refused with the same ValueError by both: another rank, another dtype (bool and
signed integers included: their intensity scale is a guess), NaN or infinite values, and
float images outside [0, 1] (a float image in 0..255 is an error, not silently rescaled:
divide it by 255 first).
"""
from __future__ import annotations

import numpy as np


def check_gray(gray, name="gray") -> np.ndarray:
    """``gray`` as an array after the checks above (not converted, maybe not contiguous)."""
    image = np.asarray(gray)
    if image.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D grayscale image, got an array of shape {image.shape}"
            + ("; convert colour images to grayscale first" if image.ndim == 3 else ""))
    if image.dtype.kind == "f":
        if image.size:
            if not np.isfinite(image).all():
                raise ValueError(f"{name} contains NaN or infinite values")
            lo, hi = float(image.min()), float(image.max())
            if lo < 0 or hi > 1:
                raise ValueError(f"float {name} must have values in [0, 1], got range "
                                 f"[{lo:g}, {hi:g}]; divide 0..255 images by 255")
    elif image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{name} dtype must be uint8, uint16 or floating point in [0, 1], "
                         f"got {image.dtype}")
    return image
