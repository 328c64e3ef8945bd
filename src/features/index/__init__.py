"""The search index of a store: a FAISS index over one stored encoding, or for a large
vocabulary an inverted file.

- :mod:`.factory`: which index (exact below 50,000 images, IVF-PQ with a refine stage
  above, or any factory string), made, trained and parametrized;
- :mod:`.builder`: built from the store's shards as tasks, kept when current;
- :mod:`.ondisk`: FAISS's file format written part by part and merged on disk;
- :mod:`.refine`: the sparse refine stage (``index.refine``);
- :mod:`.inverted`: the inverted file of large vocabularies (``index.inverted``);
- :mod:`.hamming`: its Hamming embedding option (``index.hamming``);
- :mod:`.layout`: its files, in a folder of their build's generation that the manifest names;
- :mod:`.files`: the files checked against the manifest's sizes and checksums, and held open;
- :mod:`.load`: opened for search, memory-mapped or copied into memory;
- :mod:`.params`: search-time parameters (``nprobe``, ``k_factor``, FAISS's others);
- :mod:`.verify`: the index half of ``features verify``.
"""
from .builder import build, fill_part, index_record, indexable, is_current, train_index
from .factory import AUTO, EXACT_BELOW, SPARSE_REFINE, auto_factory, default_params, split_factory
from .layout import INDEX_FILE, REFINE_FILE, current_index_paths, index_paths
from .load import index_memory, load_index, search_vectors
from .ondisk import index_header
from .params import apply_params, current_params, parse_params

__all__ = ["build", "fill_part", "train_index", "indexable", "is_current", "index_record",
           "auto_factory", "default_params", "split_factory", "apply_params", "current_params",
           "parse_params", "AUTO", "EXACT_BELOW", "SPARSE_REFINE",
           "INDEX_FILE", "REFINE_FILE", "current_index_paths", "index_paths", "index_memory", "load_index", "search_vectors", "index_header"]
