"""Extraction: local features of one grayscale image, arrays in and arrays out.

- :func:`sift` / :func:`rootsift`: sparse DoG SIFT through OpenCV (:mod:`.dog`);
- :func:`dense_sift` / :func:`dense_sift_pyramid`: dense multi-scale SIFT, VLFeat-compatible,
  on our Cython kernel (:mod:`.dense`);
- :class:`Extraction` / :func:`extract_image`: a recipe's extractor run on a decoded image
  (:mod:`.recipe`);
- the geometry record format that spatial verification reads (:mod:`.geometry`).
"""
from .dense import dense_sift, dense_sift_pyramid, smoothing_sigma
from .geometry import frame_geometry, keeps_geometry, pack_geometry, unpack_geometry
from .recipe import EXTRACTORS, Extraction, extract, extract_image
from .dog import rootsift, sift

__all__ = ["sift", "rootsift", "dense_sift", "dense_sift_pyramid", "smoothing_sigma",
           "Extraction", "EXTRACTORS", "extract", "extract_image", "pack_geometry",
           "unpack_geometry", "frame_geometry", "keeps_geometry"]
