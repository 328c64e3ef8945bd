"""Checks shared by the public functions of every layer; each raises
:class:`~features.exceptions.ParameterError` (a ``ValueError``) naming the parameter and the
value it got.

:func:`check_gray` is the one input contract of the extractors (``features.sift`` and
``features.dense_sift``).

Accepted: a 2-D array of uint8 (0..255), uint16 (0..65535) or floating point with values in
[0, 1]. Refused with the same ValueError by both: another rank, another dtype (bool and
signed integers included: their intensity scale is a guess), NaN or infinite values, and
float images outside [0, 1] (a float image in 0..255 is an error, not silently rescaled:
divide it by 255 first).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..exceptions import ParameterError


def check_int(value, name, low=-math.inf) -> int:
    """``value`` as an int, refused unless it is an integer (not a bool) >= ``low``."""
    # the common case without the abstract-class check (a few microseconds, several
    # times an image on the batch paths)
    if type(value) is int and value >= low:
        return value
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral)
            or value < low):
        bound = f" >= {low}" if low != -math.inf else ""
        raise ParameterError(f"{name} must be an integer{bound}, got {value!r}", name)
    return int(value)


def check_real(value, name, *, positive=False) -> float:
    """``value`` as a float, refused unless finite and >= 0 (> 0 with ``positive``)."""
    if type(value) is not float:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise ParameterError(f"{name} must be a real number, got {value!r}", name)
        value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ParameterError(f"{name} must be a finite number "
                             f"{'> 0' if positive else '>= 0'}, got {value!r}", name)
    return value


def check_out(out, shape, dtype=np.float32) -> np.ndarray:
    """A caller-allocated output array, or a new one when ``out`` is None; refused unless it
    is a C-contiguous ndarray of exactly ``shape`` and ``dtype`` (kernels write into it)."""
    if out is None:
        return np.empty(shape, dtype)
    if (not isinstance(out, np.ndarray) or out.dtype != dtype or out.shape != tuple(shape)
            or not out.flags.c_contiguous):
        raise ParameterError(f"out must be a C-contiguous {np.dtype(dtype).name} array of "
                             f"shape {tuple(shape)}", "out")
    return out


def check_gray(gray, name="gray") -> np.ndarray:
    """``gray`` as an array after the checks above (not converted, maybe not contiguous)."""
    image = np.asarray(gray)
    if image.ndim != 2:
        raise ParameterError(
            f"{name} must be a 2-D grayscale image, got an array of shape {image.shape}"
            + ("; convert colour images to grayscale first" if image.ndim == 3 else ""))
    if image.dtype.kind == "f":
        if image.size:
            if not np.isfinite(image).all():
                raise ParameterError(f"{name} contains NaN or infinite values")
            lo, hi = float(image.min()), float(image.max())
            if lo < 0 or hi > 1:
                raise ParameterError(f"float {name} must have values in [0, 1], got range "
                                 f"[{lo:g}, {hi:g}]; divide 0..255 images by 255")
    elif image.dtype not in (np.uint8, np.uint16):
        raise ParameterError(f"{name} dtype must be uint8, uint16 or floating point in [0, 1], "
                         f"got {image.dtype}")
    return image
