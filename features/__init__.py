"""features: classic-vision features for image collections.

SIFT descriptors (dense multi-scale SIFT of our own, OpenCV's DoG SIFT), bag-of-visual-words
codebooks and encodings, an HDF5 store and FAISS similarity search.

For notebooks (the README's "Python API"): ``open_store`` reads a store as NumPy arrays,
``scipy.sparse`` matrices and model objects; ``Searcher`` searches it by key, image or
vector; ``Encoder`` encodes new images as the store's rows; ``run`` and the steps build one.

The names below are loaded on first use (PEP 562): ``import features`` imports no FAISS,
h5py, OpenCV or SciPy, so a command or a script pays only for what it uses.
"""
import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    "dense_sift": "features.extract.dense",
    "dense_sift_pyramid": "features.extract.dense",
    "sift": "features.extract.dog",
    "rootsift": "features.extract.dog",
    "fisher_vector": "features.encodings.fisher",
    "vlad": "features.encodings.vlad",
    "Config": "features.presets",
    "PRESETS": "features.presets",
    "get_preset": "features.presets",
    "Store": "features.store.reader",
    "open_store": "features.store.reader",
    "read_encoding": "features.store.reader",
    "Searcher": "features.search.searcher",
    "Encoder": "features.search.encoder",
    "fit_pca": "features.encodings.pca",
    "fit_gmm": "features.encodings.gmm",
    "kmeans": "features.codebook.kmeans",
    "run": "features.pipeline.steps",
    "sample_descriptors": "features.pipeline.steps",
    "train_codebook": "features.pipeline.steps",
    "encode_images": "features.pipeline.steps",
    "build_index": "features.pipeline.steps",
}

__all__ = sorted(_API)


def __getattr__(name):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'features' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value       # later lookups do not come here again
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
