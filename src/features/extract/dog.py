"""Sparse DoG SIFT (OpenCV) with RootSIFT.

Frames are float32 (N, 4): x, y, size, and a fourth column that is the orientation in
radians for sparse SIFT and the contrast norm for dense SIFT, as VLFeat does. Descriptors
are uint8 (N, 128) in the usual 4x4x8 order (row of spatial bins, column, orientation).
"""
from __future__ import annotations

import cv2
import numpy as np

from .._shared.checks import check_gray
from ..exceptions import ParameterError
from .contrast import relative_threshold

_EMPTY_FRAMES = np.zeros((0, 4), np.float32)
_EMPTY_DESCRIPTORS = np.zeros((0, 128), np.uint8)


def _as_gray_u8(image, name="image"):
    image = check_gray(image, name)
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if image.dtype == np.uint16:
        return np.ascontiguousarray((image >> 8).astype(np.uint8))
    return np.ascontiguousarray(np.round(image * 255).astype(np.uint8))


def rootsift(descriptors):
    """RootSIFT (Arandjelovic & Zisserman 2012): L1-normalize, square root.

    Returned as uint8 in the SIFT convention (x 512, clamped at 255), so the store keeps one
    descriptor type whatever the recipe.
    """
    d = np.asarray(descriptors, np.float32)
    total = d.sum(axis=1, keepdims=True)
    np.maximum(total, 1e-12, out=total)
    root = np.sqrt(d / total)
    return np.minimum(np.round(root * 512.0), 255).astype(np.uint8)


def sift(gray, *, max_keypoints=0, peak_threshold=0.04, edge_threshold=10.0, sigma=1.6,
         n_octave_layers=3, root=False, relative_contrast=False,
         contrast_measure="spread"):
    """OpenCV's DoG SIFT (Lowe 2004) on a grayscale image.

    Parameters
    ----------
    gray : 2-D array, uint8 (or float in [0, 1], or uint16)
    max_keypoints : int, keep the strongest N keypoints (0 keeps all)
    peak_threshold : float, DoG contrast threshold (OpenCV's ``contrastThreshold``), in the
        [0, 1] intensity scale; with ``relative_contrast``, the threshold of a photo of
        typical contrast, scaled to this image's (:mod:`.contrast`)
    edge_threshold : float, ratio threshold that rejects edge responses
    root : bool, return RootSIFT descriptors
    relative_contrast : bool, scale ``peak_threshold`` by the image's grey-level spread, so
        that dark, hazy or faded images keep the keypoints of their well-exposed versions
    contrast_measure : str, how ``relative_contrast`` measures the image's contrast:
        ``"spread"`` (grey levels) or ``"spread-gradient"`` (the lower of that and the
        gradient strength; see :mod:`.contrast`)

    Returns
    -------
    frames : float32 (N, 4): x, y, size (OpenCV keypoint diameter), orientation in radians
    descriptors : uint8 (N, 128)
    """
    gray = _as_gray_u8(gray, "gray")
    if max_keypoints < 0:
        raise ParameterError(f"max_keypoints must be >= 0, got {max_keypoints!r}")
    if peak_threshold < 0:
        raise ParameterError(f"peak_threshold must be >= 0, got {peak_threshold!r}")
    if edge_threshold <= 0:
        raise ParameterError(f"edge_threshold must be > 0, got {edge_threshold!r}")
    if min(gray.shape, default=0) < 8:
        return _EMPTY_FRAMES.copy(), _EMPTY_DESCRIPTORS.copy()
    if relative_contrast:
        peak_threshold = relative_threshold(peak_threshold, gray, contrast_measure)
    detector = cv2.SIFT_create(nfeatures=int(max_keypoints), nOctaveLayers=int(n_octave_layers),
                               contrastThreshold=float(peak_threshold),
                               edgeThreshold=float(edge_threshold), sigma=float(sigma))
    keypoints, descriptors = detector.detectAndCompute(gray, None)
    if descriptors is None or not keypoints:
        return _EMPTY_FRAMES.copy(), _EMPTY_DESCRIPTORS.copy()
    frames = np.array([(k.pt[0], k.pt[1], k.size, np.deg2rad(k.angle)) for k in keypoints],
                      np.float32)
    descriptors = rootsift(descriptors) if root else np.minimum(descriptors, 255).astype(np.uint8)
    return frames, descriptors
