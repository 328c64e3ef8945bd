"""Dense multi-scale SIFT, compatible with VLFeat's ``vl_phow`` / ``vl_dsift``.

The hot loop is the Cython kernel ``features._ext._dsift``; this module checks
the input, works out the geometry that ``vl_phow`` uses and allocates the
outputs.

What is computed, for each bin size ``s`` (``vl_phow`` with ``'fast'``):

1. the image, scaled to [0, 1], is smoothed by a Gaussian of standard deviation
   ``sqrt((s / magnif)**2 - 0.25)`` (the 0.25 removes the nominal 0.5 px blur
   of the image itself; ``vl_phow``'s code passes ``s / magnif``), truncated at
   ``ceil(3 sigma)`` with continuity padding, as ``vl_imsmooth_f`` does;
2. the gradient by central differences (one-sided at the image border); its
   magnitude is split linearly between the two nearest of 8 orientation bins;
3. each orientation plane, padded by continuity, is filtered by a unit-height
   triangle of half-width ``s`` (bilinear spatial binning, VLFeat's flat
   window) and sampled at the 4 x 4 bin centres of every frame; spatial bin
   ``b`` is then weighted by the mean of a Gaussian window of standard
   deviation ``window_size * s`` over the bin (VLFeat's ``windowSize``);
4. the contrast of a frame is the sum of its 128 values divided by
   ``(3 s + 1)**2`` (VLFeat's frame "norm"); the descriptor is L2-normalised,
   clamped at 0.2, L2-normalised again and stored as ``uint8(min(512 v, 255))``
   (truncated, as the MATLAB ``vl_dsift`` does); descriptors whose contrast is
   below ``contrast_threshold`` are set to zero (their frames are kept).

Frames of one size form a grid with ``step`` pixels between centres. The first
frame's top-left bin centre is at ``floor(1.5 (max(sizes) - s))`` from the
bounds' corner, so that the centres of all sizes coincide (``vl_phow``'s
``bounds`` offset; exact when all sizes are even or all odd).
"""
from __future__ import annotations

import functools
import math
import numbers
import os

import numpy as np

from .._ext import load
from .._shared.checks import check_gray, check_int, check_real
from ..exceptions import ParameterError

__all__ = ["dense_sift", "dense_sift_pyramid"]

N_BINS = 4          # spatial bins per side
N_ORIENTATIONS = 8  # orientation bins
DESCRIPTOR_SIZE = N_BINS * N_BINS * N_ORIENTATIONS

_WINDOWS = ("flat",)
# standard deviation of the spatial window, in bins (vl_phow's WindowSize)
WINDOW_SIZE = 1.5
# float64 machine epsilon (DBL_EPSILON, as cv::resize uses it)
_DBL_EPSILON = float(np.finfo(np.float64).eps)


# The builds of the kernel, narrowest first: (name of the switch's value, module, what, the
# module's flag that it was compiled for the instructions, the baseline's CPU check).
_BUILDS = (("baseline", "_dsift", "dense SIFT", None, None),
           ("avx2", "_dsift_avx2", "dense SIFT (AVX2)", "AVX2", "cpu_has_avx2"),
           ("avx512", "_dsift_avx512", "dense SIFT (AVX-512)", "AVX512", "cpu_has_avx512"))
_SIMD_LEVELS = tuple(build[0] for build in _BUILDS)


def _kernel_builds():
    """The builds of the dense SIFT kernel that this installation has and this CPU runs,
    as {level: module}, narrowest first ("baseline", then "avx2", "avx512"). They give
    bit-identical results (tested)."""
    base = load("_dsift", "dense SIFT")
    builds = {"baseline": base}
    for level, name, what, compiled, cpu_check in _BUILDS[1:]:
        check = getattr(base, cpu_check, None)
        if check is None or not check():
            continue
        try:
            module = load(name, what)
        except ImportError:     # an older build, or a platform without the variant
            continue
        if getattr(module, compiled, False):
            builds[level] = module
    return builds


@functools.lru_cache(maxsize=None)
def _kernel():
    """The AVX2 build of the kernel where the CPU runs it (same results; on an AMD Zen 4
    about 1.5x faster than the baseline), else the baseline. The environment variable
    FEATURES_DSIFT_SIMD caps the choice: ``baseline``, ``avx2`` (the default) or ``avx512``,
    which is not the default because on Zen 4 it measured no faster than AVX2 (its 512-bit
    descriptor loops are slower); FEATURES_DSIFT_AVX2=0, the older switch, means
    ``baseline``."""
    level = os.environ.get("FEATURES_DSIFT_SIMD", "").strip().lower() or "avx2"
    if level not in _SIMD_LEVELS:
        raise ParameterError(f"FEATURES_DSIFT_SIMD must be one of {', '.join(_SIMD_LEVELS)}, "
                             f"got {os.environ['FEATURES_DSIFT_SIMD']!r}")
    if os.environ.get("FEATURES_DSIFT_AVX2", "1") == "0":
        level = "baseline"
    allowed = _SIMD_LEVELS[:_SIMD_LEVELS.index(level) + 1]
    return [module for name, module in _kernel_builds().items() if name in allowed][-1]


def _empty():
    return (np.zeros((0, 4), np.float32),
            np.zeros((0, DESCRIPTOR_SIZE), np.uint8))


def _as_float_image(gray, name="gray"):
    """2-D image as C-contiguous float32 in VLFeat's [0, 1] intensity scale.

    uint8 is divided by 255 and uint16 by 65535; float values are used as they
    are, in [0, 1] (the contrast threshold is in that scale). The input contract,
    the same as ``features.sift``'s, is ``features._shared.checks.check_gray``.
    """
    image = check_gray(gray, name)
    if image.dtype == np.uint8:
        out = np.empty(image.shape, np.float32)
        _kernel().unit_float(np.ascontiguousarray(image), out)
        return out
    if image.dtype == np.uint16:
        out = np.multiply(image, np.float32(1.0 / 65535.0), dtype=np.float32)
    else:
        out = image.astype(np.float32)
    return np.ascontiguousarray(out)


def _check_sizes(sizes):
    if isinstance(sizes, numbers.Integral) and not isinstance(sizes, bool):
        sizes = (sizes,)
    try:
        sizes = tuple(sizes)
    except TypeError:
        raise ParameterError(f"sizes must be a sequence of integers, got {sizes!r}") from None
    if not sizes:
        raise ParameterError("sizes must not be empty")
    return tuple(check_int(s, "each of sizes", 1) for s in sizes)


@functools.lru_cache(maxsize=256)
def _size_parameters(size, magnif, window_size, max_radius):
    """Gaussian taps (centre first), their radius and the 4 window means of
    one bin size; cached because every image of a run asks for the same."""
    taps, radius = _gaussian_taps(smoothing_sigma(size, magnif), max_radius)
    taps = taps.astype(np.float32)
    means = _window_means(size, window_size).astype(np.float32)
    taps.flags.writeable = False
    means.flags.writeable = False
    return taps, radius, means


def smoothing_sigma(size, magnif=6.0):
    """Gaussian sigma used before computing the descriptors of bin size ``size``."""
    return math.sqrt(max((size / magnif) ** 2 - 0.25, 0.0))


def _gaussian_taps(sigma, max_radius):
    """Half of a normalised Gaussian kernel truncated at ceil(3 sigma) (and at
    max_radius), centre first."""
    radius = min(int(math.ceil(3.0 * sigma)), max_radius) if sigma > 0 else 0
    x = np.arange(radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (x / sigma) ** 2) if radius else np.ones(1)
    return taps / (taps[0] + 2.0 * taps[1:].sum()), radius


def _window_means(size, window_size):
    """Mean of the Gaussian window over each of the 4 spatial bins (VLFeat's
    flat-window reweighting, ``_vl_dsift_get_bin_window_mean``)."""
    x = np.arange(-size + 1, size, dtype=np.float64)
    centres = size * (np.arange(N_BINS) - 0.5 * (N_BINS - 1))
    z = (x[None, :] - centres[:, None]) / (size * window_size)
    return np.exp(-0.5 * z * z).mean(axis=1)


def _frame_grid(lo, hi, size, step):
    """Number of frames whose 3 s + 1 pixel support fits in [lo, hi]."""
    span = hi - lo - (N_BINS - 1) * size
    return span // step + 1 if span >= 0 else 0


def dense_sift(gray, *, step=4, sizes=(4, 6, 8, 10), magnif=6.0,
               contrast_threshold=0.005, window="flat", bounds=None,
               window_size=WINDOW_SIZE, n_threads=1):
    """Dense multi-scale SIFT, as VLFeat's ``vl_phow`` (gray, fast mode).

    Parameters
    ----------
    gray : (H, W) array
        Grayscale image: uint8 (divided by 255), uint16 (divided by 65535),
        or float with intensities in [0, 1] (VLFeat's convention for
        single images; ``contrast_threshold`` is in this scale). Any strides.
    step : int
        Grid step in pixels between the centres of neighbouring frames.
    sizes : sequence of int
        Spatial bin sizes in pixels; a descriptor covers 4 x 4 bins.
    magnif : float
        Smoothing before the descriptors of size ``s``: Gaussian of standard
        deviation ``sqrt((s / magnif)**2 - 0.25)``.
    contrast_threshold : float
        Descriptors whose contrast (frame column 3) is below this are zero.
    window : {"flat"}
        Spatial weighting; only VLFeat's fast flat-window mode is provided.
    bounds : (x_min, y_min, x_max, y_max) or None
        Inclusive 0-based pixel box that the bin centres of every descriptor
        (a square of 3 s + 1 pixels) must lie in, clipped to the image, as
        ``vl_dsift``'s bounds; None is the whole image. The per-size
        ``vl_phow`` alignment offset is added to the minimum corner.
    window_size : float
        Standard deviation of the Gaussian window, in bins, used to reweight
        the spatial bins (``vl_phow``'s ``WindowSize``, 1.5).
    n_threads : int
        Threads sharing the sizes (needs the kernel built with OpenMP; the
        result does not depend on it).

    Returns
    -------
    frames : float32 (N, 4)
        x, y (0-based column and row of the descriptor centre; ``vl_phow``
        reports them 1-based), size (the bin size ``s``), contrast norm.
        Ordered by size as given, then row-major (y, then x) on the grid.
    descriptors : uint8 (N, 128)
        Element ``8 * (4 * by + bx) + t`` is the histogram of spatial bin
        (``bx`` along x, ``by`` along y, from the top-left) and orientation
        ``t``, the bin centred on angle ``2 pi t / 8`` of ``atan2(dy, dx)``
        with x to the right and y down the rows. This is the layout of VLFeat's
        ``vl_dsift``/``vl_phow`` output after their transpose to image axes.
    """
    step = check_int(step, "step", 1)
    sizes = _check_sizes(sizes)
    magnif = check_real(magnif, "magnif", positive=True)
    contrast_threshold = check_real(contrast_threshold, "contrast_threshold")
    window_size = check_real(window_size, "window_size", positive=True)
    n_threads = check_int(n_threads, "n_threads", 1)
    if window not in _WINDOWS:
        raise ParameterError(f"window must be one of {_WINDOWS}, got {window!r}")
    image = _as_float_image(gray)
    return _dense_sift(image, step, sizes, magnif, contrast_threshold, bounds, window_size,
                       n_threads)


def _dense_sift(image, step, sizes, magnif, contrast_threshold, bounds, window_size,
                n_threads):
    """:func:`dense_sift` on arguments already checked: ``image`` a C-contiguous float32
    array in [0, 1]."""
    height, width = image.shape
    if bounds is None:
        x_min, y_min, x_max, y_max = 0, 0, width - 1, height - 1
    else:
        try:
            x_min, y_min, x_max, y_max = (check_int(b, "each of bounds", -math.inf)
                                          for b in bounds)
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"bounds must be four integers (x_min, y_min, x_max, "
                             f"y_max), got {bounds!r}") from exc
        if x_min > x_max or y_min > y_max:
            raise ParameterError(f"bounds must have x_min <= x_max and y_min <= y_max, "
                             f"got {bounds!r}")
        x_min, y_min = max(x_min, 0), max(y_min, 0)
        x_max, y_max = min(x_max, width - 1), min(y_max, height - 1)
    if image.size == 0:
        return _empty()
    layout = _layout(height, width, step, sizes, magnif, window_size,
                     (x_min, y_min, x_max, y_max))
    frames = np.empty((layout[3], 4), np.float32)
    descriptors = np.empty((layout[3], DESCRIPTOR_SIZE), np.uint8)
    _run_kernel(image, layout, contrast_threshold, frames, descriptors, n_threads)
    return frames, descriptors


def _run_kernel(image, layout, contrast_threshold, frames, descriptors, n_threads):
    """The kernel on one image with its :func:`_layout`, into ``frames`` and ``descriptors``
    (C-contiguous, as many rows as the layout's frames; nothing to do for none)."""
    kernel_step, n_kernel, arrays, total = layout
    if total:
        _kernel().dsift(image, kernel_step, *arrays, contrast_threshold, frames, descriptors,
                        min(n_threads, n_kernel))


@functools.lru_cache(maxsize=1024)
def _layout(height, width, step, sizes, magnif, window_size, bounds):
    """The kernel's geometry arguments for an image size: (step, number of sizes,
    (sizes, bmin_x, bmin_y, n_x, n_y, taps, radius, window_mean), frame count). Cached
    (read-only arrays): a run sees few image sizes, and working them out cost about as
    much as the descriptors of a quarter-size image."""
    x_min, y_min, x_max, y_max = bounds
    n = len(sizes)
    max_size = max(sizes)
    # Sizes without a frame (larger than the image or the bounds) are passed
    # to the kernel as empty placeholders: no smoothing kernel, no window.
    kernel_sizes = np.ones(n, np.int32)
    bmin_x = np.zeros(n, np.int32)
    bmin_y = np.zeros(n, np.int32)
    n_x = np.zeros(n, np.int32)
    n_y = np.zeros(n, np.int32)
    radius = np.zeros(n, np.int32)
    window_mean = np.ones((n, N_BINS), np.float32)
    taps_list = [np.ones(1, np.float32)] * n
    # a Gaussian wider than the image only ever sees the replicated border
    max_radius = max(height, width)
    for i, size in enumerate(sizes):
        offset = int(math.floor(1.5 * (max_size - size)))
        frames_x = _frame_grid(x_min + offset, x_max, size, step)
        frames_y = _frame_grid(y_min + offset, y_max, size, step)
        if frames_x == 0 or frames_y == 0:
            continue
        taps_list[i], radius[i], window_mean[i] = _size_parameters(
            size, magnif, window_size, max_radius)
        kernel_sizes[i] = size
        bmin_x[i], bmin_y[i] = x_min + offset, y_min + offset
        n_x[i], n_y[i] = frames_x, frames_y
    taps = np.zeros((n, int(radius.max()) + 1), np.float32)
    for i, size_taps in enumerate(taps_list):
        taps[i, :len(size_taps)] = size_taps
    total = int((n_x.astype(np.int64) * n_y).sum())
    # with more than one frame per axis step <= the image size; beyond
    # that only its gcd with the sizes matters, which does not change the
    # result, so keep it in the range of a C int
    kernel_step = min(step, max(height, width) + 1)
    arrays = (kernel_sizes, bmin_x, bmin_y, n_x, n_y, taps, radius, window_mean)
    for array in arrays:
        array.flags.writeable = False
    return kernel_step, n, arrays, total


def _integer_factors(width, height, size):
    """Whether OpenCV's INTER_AREA takes its block-mean path from (width, height) to
    ``size``: a factor within DBL_EPSILON of an integer on both axes (cv::resize)."""
    fx, fy = 1.0 / (size[0] / width), 1.0 / (size[1] / height)
    return abs(fx - round(fx)) < _DBL_EPSILON and abs(fy - round(fy)) < _DBL_EPSILON


@functools.lru_cache(maxsize=None)
def _block_mean_is_opencvs():
    """Whether the area kernel's integer-factor path gives the installed OpenCV's pixels.
    Its float 2 x 2 block mean adds the pairs first in the columns of OpenCV's vector loop,
    whose width is the build's (``FLOAT_BLOCK_LANES`` of the kernel: 4, the SSE and NEON
    baselines); with another OpenCV the integer factors stay with it. Widths 5 to 29
    tell 4 lanes from 8 and 16."""
    import cv2

    image = np.random.default_rng(0).random((4, 58), dtype=np.float32)
    for width in (5, 7, 13, 29):
        out = np.empty((2, width), np.float32)
        load("_area", "area resize").area_resize(image[:, :2 * width].copy(), out)
        expected = cv2.resize(image[:, :2 * width], (width, 2), interpolation=cv2.INTER_AREA)
        if not np.array_equal(out, expected):
            return False
    return True


def _resize(image, scale):
    """Downscale with area averaging (pixel-centre aligned), as
    ``cv2.resize(..., INTER_AREA)``: bit-identical, done by ``features._ext._area``
    (fractional factors about twice as fast as OpenCV on one thread, integer ones about
    as fast, without its call)."""
    height, width = image.shape
    size = (max(int(round(width * scale)), 1), max(int(round(height * scale)), 1))
    if size == (width, height):
        return image
    if _integer_factors(width, height, size) and not _block_mean_is_opencvs():
        import cv2

        out = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    else:
        out = np.empty((size[1], size[0]), np.float32)
        load("_area", "area resize").area_resize(image, out)
    # area weights in float32 can sum a white area to 1.0000001, which the input contract
    # of dense_sift refuses: averages of values in [0, 1] stay there (sums of products of
    # values and weights >= 0 are >= 0: the upper side is the one to clip). It rarely
    # happens, and np.minimum with a scalar costs three times the maximum.
    if out.max() > 1:
        np.minimum(out, np.float32(1), out=out)
    return out


def dense_sift_pyramid(gray, *, bin_size=5, step=10, scales=(1.0, 0.5, 0.25),
                       contrast_threshold=0.005, magnif=6.0, n_threads=1):
    """Dense SIFT at several image scales: the ILSVRC-2010 ``sbow`` geometry.

    The image is resized by each factor of ``scales`` (area averaging) and
    :func:`dense_sift` runs with one bin size ``bin_size`` and grid ``step``
    (defaults: 20 x 20 pixel patches every 10 pixels at full, half and
    quarter size).

    Returns
    -------
    frames : float32 (N, 4)
        x, y, size in the coordinates of the input image (a frame found at
        ``(x, y)`` in an image resized by ``f`` is reported at
        ``((x + 0.5) / f - 0.5, (y + 0.5) / f - 0.5)`` with size
        ``bin_size / f``), then the contrast norm.
    descriptors : uint8 (N, 128), as :func:`dense_sift`.
    scale_index : int8 (N,)
        Index into ``scales`` of the scale each descriptor comes from.
    """
    bin_size = check_int(bin_size, "bin_size", 1)
    step = check_int(step, "step", 1)
    try:
        scales = tuple(scales)
    except TypeError:
        raise ParameterError(f"scales must be a sequence of numbers, got {scales!r}") from None
    if not scales or len(scales) > 127:
        raise ParameterError(f"scales must have 1 to 127 entries, got {len(scales)}")
    scales = tuple(check_real(f, "each of scales", positive=True) for f in scales)
    if any(f > 1 for f in scales):
        raise ParameterError(f"scales must be in (0, 1], got {scales!r}")
    contrast_threshold = check_real(contrast_threshold, "contrast_threshold")
    magnif = check_real(magnif, "magnif", positive=True)
    n_threads = check_int(n_threads, "n_threads", 1)
    # checked once: the smaller scales are area averages of it, in [0, 1] (_resize)
    image = _as_float_image(gray)
    if image.size == 0:
        frames, descriptors = _empty()
        return frames, descriptors, np.zeros(0, np.int8)
    levels = []
    for factor in scales:
        resized = _resize(image, factor)
        height, width = resized.shape
        levels.append((resized, _layout(height, width, step, (bin_size,), magnif, WINDOW_SIZE,
                                        (0, 0, width - 1, height - 1))))
    # the outputs of all scales allocated once, each scale's rows written in place
    total = sum(layout[3] for _, layout in levels)
    frames = np.empty((total, 4), np.float32)
    descriptors = np.empty((total, DESCRIPTOR_SIZE), np.uint8)
    scale_index = np.empty(total, np.int8)
    at = 0
    for index, (factor, (resized, layout)) in enumerate(zip(scales, levels)):
        count = layout[3]
        f = frames[at:at + count]
        _run_kernel(resized, layout, contrast_threshold, f, descriptors[at:at + count],
                    n_threads)
        if resized is not image:
            # x and y at once, in place, with the float32 operations of each column alone
            # (at a scale of 1 the image is not resized, and x + 0.5 - 0.5 is x exactly)
            xy = f[:, :2]
            xy += np.float32(0.5)
            xy /= np.array([resized.shape[1] / image.shape[1],
                            resized.shape[0] / image.shape[0]], np.float32)
            xy -= np.float32(0.5)
        f[:, 2] = bin_size / factor
        scale_index[at:at + count] = index
        at += count
    return frames, descriptors, scale_index
