"""The geometry record: what spatial verification needs of an image, packed at extraction.

The geometry record
-------------------
What verification needs of an image is stored at extraction time as one small record per
image (the ``geometry`` dataset of the store, rows ``offsets[i]:offsets[i + 1]`` as for
``frames``), so that a shortlist candidate costs one contiguous read. One row per feature,
sorted by visual word (matching two images is then a merge), uint16 (uint32 when the
codebook has more than 65,536 words):

======  ==============================================================================
column  value
======  ==============================================================================
0       visual word
1       x: ``round(x / width * 65535)``, x in pixels of the original image
2       y: ``round(y / height * 65535)``
3       size: ``round((log2(size / max(width, height)) + 16) * 4096)``, clipped to
        [0, 65535] (1/4096 of an octave)
4       orientation: ``round(angle / (2 pi) * 65536) mod 65536``; 0 for dense SIFT, whose
        frames are upright
======  ==============================================================================

10 bytes per feature against 18 for ``frames`` + ``words``; the quantization (under 0.01
pixel on a 640-pixel image, 0.02% of the size, 0.006 degree) is far below the noise of the
keypoints themselves.

The verification itself is in :mod:`features.search.spatial`.
"""
from __future__ import annotations

import numpy as np

from ..exceptions import ParameterError

COLUMNS = ("word", "x", "y", "size", "orientation")
_XY = 65535.0
_OCTAVES = 16.0          # log2(size / max side) is kept in [-16, 0]
_STEPS = 4096.0          # per octave
_ANGLE = 65536.0 / (2 * np.pi)


def record_dtype(n_words):
    return np.uint16 if n_words <= 1 << 16 else np.uint32


def keeps_geometry(extractor: str) -> bool:
    """Whether a recipe of this extractor stores geometry records: sparse SIFT, whose frames
    carry a scale and an orientation (dense grids are re-ranked from ``frames`` and
    ``words`` when asked)."""
    return extractor == "sift"


def _pixels(frames, width, height, units):
    """x, y, size of frames in pixels of the original image (float64)."""
    f = np.asarray(frames, np.float32).astype(np.float64)
    width, height = float(width), float(height)
    if units == "normalized":
        return f[:, 0] * width, f[:, 1] * height, f[:, 2] * max(width, height)
    if units != "pixels":
        raise ParameterError(f"units must be 'pixels' or 'normalized', got {units!r}")
    return f[:, 0], f[:, 1], f[:, 2]


def pack_geometry(frames, words, width, height, *, units="pixels", oriented=True,
                  n_words=1 << 16) -> np.ndarray:
    """The geometry record (n x 5, sorted by word) of one image's frames and words."""
    frames = np.asarray(frames)
    words = np.asarray(words)
    if frames.ndim != 2 or frames.shape[1] != 4 or len(words) != len(frames):
        raise ParameterError(f"frames must be n x 4 and words n long, got shapes {frames.shape} "
                         f"and {words.shape}")
    if width < 1 or height < 1:
        raise ParameterError(f"width and height must be >= 1, got {width!r} x {height!r}")
    if len(words) and (words.min() < 0 or words.max() >= n_words):
        raise ParameterError(f"words must lie in [0, {n_words}), got "
                             f"[{words.min()}, {words.max()}]")
    order = np.argsort(words, kind="stable")
    # float64 whatever the types of the inputs, so that a record is reproducible
    width, height = float(width), float(height)
    x, y, size = _pixels(frames[order], width, height, units)
    out = np.empty((len(order), 5), record_dtype(n_words))
    out[:, 0] = words[order]
    out[:, 1] = np.clip(np.rint(x * (_XY / width)), 0, _XY)
    out[:, 2] = np.clip(np.rint(y * (_XY / height)), 0, _XY)
    rel = np.maximum(size, 1e-12) / max(width, height)
    out[:, 3] = np.clip(np.rint((np.log2(rel) + _OCTAVES) * _STEPS), 0, _XY)
    if oriented:
        out[:, 4] = np.rint(frames[order, 3].astype(np.float64) * _ANGLE).astype(np.int64) & 0xFFFF
    else:
        out[:, 4] = 0
    return out


def unpack_geometry(records, widths, heights, offsets=None):
    """Words (int32) and features (float32 n x 4: x, y in pixels, log2 size in pixels,
    orientation in radians) of concatenated geometry records; ``offsets`` (len + 1) splits
    them between images of the given widths and heights (one image when None)."""
    r = np.asarray(records)
    if r.ndim != 2 or r.shape[1] != 5:
        raise ParameterError(f"geometry records must be n x 5, got shape {r.shape}")
    if offsets is None:
        w = np.float32(widths)
        h = np.float32(heights)
        side = np.float32(max(widths, heights))
    else:
        lengths = np.diff(np.asarray(offsets))
        w = np.repeat(np.asarray(widths, np.float32), lengths)
        h = np.repeat(np.asarray(heights, np.float32), lengths)
        side = np.maximum(w, h)
    geom = np.empty((len(r), 4), np.float32)
    geom[:, 0] = r[:, 1] * (w / np.float32(_XY))
    geom[:, 1] = r[:, 2] * (h / np.float32(_XY))
    geom[:, 2] = r[:, 3] * np.float32(1 / _STEPS) + (np.log2(side) - np.float32(_OCTAVES))
    geom[:, 3] = r[:, 4] * np.float32(1 / _ANGLE)
    return r[:, 0].astype(np.int32), geom


def frame_geometry(frames, words, width, height, *, units="pixels", oriented=True):
    """Words and features as :func:`unpack_geometry` gives them, straight from frames
    (unquantized): for a query image, or a store without geometry records."""
    frames = np.asarray(frames)
    words = np.asarray(words)
    order = np.argsort(words, kind="stable")
    x, y, size = _pixels(frames[order], width, height, units)
    geom = np.empty((len(order), 4), np.float32)
    geom[:, 0] = x
    geom[:, 1] = y
    geom[:, 2] = np.log2(np.maximum(size, 1e-12))
    geom[:, 3] = frames[order, 3] if oriented else 0
    if oriented:
        geom[:, 3] = np.mod(geom[:, 3], np.float32(2 * np.pi))
    return words[order].astype(np.int32), geom
