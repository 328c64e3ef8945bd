"""Where descriptors lie in their image, as the pyramids and the spatial augmentation read it.

A descriptor's position is the ``x, y`` of its frame divided by its image's width and height
(frames in pixels, the store's ``frame_units = "pixels"``), or the ``x, y`` themselves (frames
already in [0, 1], ``"normalized"``): :func:`unit_positions`. The pyramids put each
descriptor in the cell of its position (:func:`features.encodings.rows.cell_order`,
:func:`features.encodings.spm.spatial_pyramid`).

Spatial augmentation (``xy_weight``, an option of ``fisher``): each descriptor's PCA-reduced
values get two more, ``xy_weight * (x / width - 0.5, y / height - 0.5)``, before the GMM,
which is then learned on these ``pca_dims + 2`` values (Sanchez, Perronnin and de Campos,
"Modeling the spatial layout of images beyond spatial pyramids", Pattern Recognition Letters
2012): the mixture models where each kind of patch lies, and the Fisher vector says how an
image's patches depart from it, for ``2 x components x 2`` more values rather than a
pyramid's times more cells.  The GMM's variances are per dimension, so the weight mostly
sets how much the positions count in the k-means that starts EM; the vectors'
normalization ((x - mean) / sigma) does not see it.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..exceptions import ParameterError

__all__ = ["unit_positions", "centred_positions", "append_positions", "check_xy_weight"]


def check_xy_weight(value) -> float | None:
    """``xy_weight`` as a float: None (no augmentation) or a finite number > 0."""
    if value is None:
        return None
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value <= 0):
        raise ParameterError(f"xy_weight must be a finite number > 0, got {value!r}",
                             "xy_weight")
    return float(value)


def unit_positions(frames, offsets, widths, heights, units="pixels"):
    """(fx, fy): each descriptor's ``x, y`` as fractions of its image's width and height,
    float64 (M,) each. ``frames`` (M, >= 2) of the images ``offsets`` (n + 1) delimits;
    ``widths``, ``heights`` (n,) in the frames' pixels (a size of 0 counts as 1; ignored for
    ``units = "normalized"``)."""
    if units not in ("pixels", "normalized"):
        raise ParameterError(f"units must be 'pixels' or 'normalized', got {units!r}", "units")
    frames = np.asarray(frames)
    offsets = np.asarray(offsets, np.int64)
    if frames.ndim != 2 or frames.shape[1] < 2 or frames.shape[0] != offsets[-1]:
        raise ParameterError(f"frames must be ({int(offsets[-1])}, >= 2), got {frames.shape}",
                             "frames")
    fx = frames[:, 0].astype(np.float64)
    fy = frames[:, 1].astype(np.float64)
    if units == "pixels":
        image = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        fx /= np.maximum(np.asarray(widths, np.float64), 1)[image]
        fy /= np.maximum(np.asarray(heights, np.float64), 1)[image]
    return fx, fy


def centred_positions(frames, offsets, widths, heights, units="pixels") -> np.ndarray:
    """float32 (M, 2): ``(x / width - 0.5, y / height - 0.5)`` of each descriptor, the
    image's centre at 0 (see :func:`unit_positions`)."""
    fx, fy = unit_positions(frames, offsets, widths, heights, units)
    return np.stack([fx - 0.5, fy - 0.5], axis=1).astype(np.float32)


def append_positions(y, xy, weight) -> np.ndarray:
    """float32 (M, d + 2): the reduced descriptors ``y`` (M, d) followed by ``weight`` times
    their centred positions ``xy`` (M, 2, :func:`centred_positions`)."""
    weight = check_xy_weight(weight)
    y, xy = np.asarray(y, np.float32), np.asarray(xy, np.float32)
    if weight is None:
        raise ParameterError("xy_weight must be a finite number > 0, got None", "xy_weight")
    if y.ndim != 2 or xy.shape != (y.shape[0], 2):
        raise ParameterError(f"positions must be ({y.shape[0]}, 2) for descriptors of shape "
                             f"{y.shape}, got {xy.shape}", "xy")
    out = np.empty((y.shape[0], y.shape[1] + 2), np.float32)
    out[:, :-2] = y
    np.multiply(xy, np.float32(weight), out=out[:, -2:])
    return out
