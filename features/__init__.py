"""features: classic-vision features for image collections.

SIFT descriptors (dense multi-scale SIFT of our own, OpenCV's DoG SIFT), bag-of-visual-words
codebooks and encodings, an HDF5 store and FAISS similarity search.
"""
__version__ = "0.1.0"

from .dense import dense_sift, dense_sift_pyramid
from .encodings import fisher_vector, vlad
from .pipeline import build_index, encode_images, run, sample_descriptors, train_codebook
from .presets import PRESETS, Config, get_preset
from .sift import rootsift, sift
from .store import Store

__all__ = ["dense_sift", "dense_sift_pyramid", "sift", "rootsift", "Config", "PRESETS",
           "get_preset", "Store", "run", "sample_descriptors", "train_codebook",
           "encode_images", "build_index", "fisher_vector", "vlad"]
