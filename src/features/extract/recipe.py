"""One image through a recipe's extractor: the part of a recipe that extraction reads.

:class:`Extraction` holds the extraction fields of a recipe (a preset's ``Config``), so that
the extractors take plain values, not the whole configuration; :func:`extract_image` runs the
extractor it names on a decoded image and gives frames in the units the store keeps.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..exceptions import ParameterError
from ..presets import EXTRACTORS
from .dense import dense_sift, dense_sift_pyramid
from .geometry import keeps_geometry
from .dog import sift

@dataclass(frozen=True)
class Extraction:
    """The extractor of a recipe and its parameters: the fields of the same names of
    ``features.presets.Config``, where their defaults and meaning are (:meth:`of` takes
    them from a recipe)."""
    extractor: str
    rootsift: bool
    max_keypoints: int
    peak_threshold: float
    relative_contrast: bool
    contrast_measure: str
    edge_threshold: float
    step: int
    sizes: tuple
    magnif: float
    dense_contrast_threshold: float
    scales: tuple
    frame_units: str

    def __post_init__(self):
        if self.extractor not in EXTRACTORS:
            raise ParameterError(f"extractor must be one of {EXTRACTORS}, got "
                                 f"{self.extractor!r}", "extractor")

    @classmethod
    def of(cls, recipe) -> "Extraction":
        return cls(**{f.name: getattr(recipe, f.name) for f in dataclasses.fields(cls)})

    @property
    def keeps_geometry(self) -> bool:
        """Whether images of this recipe get geometry records (:mod:`.geometry`)."""
        return keeps_geometry(self.extractor)


def extract_image(extraction: Extraction, decoded):
    """Extract from a decoded image (``features.decode.Decoded``); frames in the units the
    store keeps (``frame_units``): pixels of the original image, or x / width, y / height,
    size / max side."""
    frames, descriptors, scale = extract(extraction, decoded.gray)
    height, width = decoded.gray.shape
    # the extractors return new arrays: scaled in place (x and y in one operation: a few
    # microseconds each on a strided column)
    if len(frames) and width:
        if extraction.frame_units == "normalized":
            frames[:, :2] /= np.array([width, height], np.float32)
            frames[:, 2] /= np.float32(max(width, height))
        else:
            frames[:, :3] *= np.float32(decoded.width / width)
    return frames, descriptors, scale


def extract(extraction: Extraction, gray):
    """Run the extractor that ``extraction`` names. Returns (frames, descriptors, scale_index)."""
    if extraction.extractor == "sift":
        frames, desc = sift(gray, max_keypoints=extraction.max_keypoints,
                            peak_threshold=extraction.peak_threshold,
                            relative_contrast=extraction.relative_contrast,
                            contrast_measure=extraction.contrast_measure,
                            edge_threshold=extraction.edge_threshold, root=extraction.rootsift)
        return frames, desc, np.zeros(len(frames), np.int8)
    if extraction.extractor == "dense":
        frames, desc = dense_sift(gray, step=extraction.step, sizes=extraction.sizes,
                                  magnif=extraction.magnif,
                                  contrast_threshold=extraction.dense_contrast_threshold)
        sizes = np.asarray(extraction.sizes, np.float32)
        scale = np.argmax(frames[:, 2:3] == sizes[None, :], axis=1).astype(np.int8)
        return frames, desc, scale
    if extraction.extractor == "dense-pyramid":
        return dense_sift_pyramid(gray, bin_size=extraction.sizes[0], step=extraction.step,
                                  scales=extraction.scales,
                                  contrast_threshold=extraction.dense_contrast_threshold)
    raise ParameterError(f"unknown extractor {extraction.extractor!r}", "extractor")
