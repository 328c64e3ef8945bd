"""The codebook step's files for a vocabulary tree (``--tree-branching``): the words learned
by hierarchical k-means and the rest of the tree, between the codebook step and the
store.

``codebook.npy`` holds the words (the tree's leaves) as it holds a flat codebook's, so
that what reads the words alone (the merge's word count, ``--like``'s comparison) is
unchanged; ``codebook-tree.npz`` beside it holds the tree's other arrays
(:meth:`~features.codebook.VocabularyTree.arrays`). The encode step hands the tree to the
shard tasks, which assign by descending it, and to the merge, which writes it as
``codebook/tree`` in ``store.h5``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..codebook import TREE_ALGORITHM, VocabularyTree, hikmeans, tree_depth
from ..exceptions import StoreError
from ..store import atomic_file
from ..store.layout import TREE_FILE


def learn_tree(config, sample, progress=None) -> VocabularyTree:
    """The vocabulary tree of ``config`` (``words``, ``tree_branching``, ``tree_depth``,
    ``kmeans_iters``, ``seed``) over the descriptor sample (memory-mapped: only the rows
    each node learns from are read into memory)."""
    return hikmeans(sample, config.words, config.tree_branching, depth=config.tree_depth,
                    iters=config.kmeans_iters, seed=config.seed, progress=progress)


def save_tree(tree: VocabularyTree, codebook_path):
    """``codebook-tree.npz`` beside ``codebook_path`` (atomically; the words themselves go
    to ``codebook.npy``)."""
    path = Path(codebook_path).with_name(TREE_FILE)
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, branching=np.int64(tree.branching), **tree.arrays())


def load_codebook(config, codebook_path):
    """What the shard tasks assign with: the centroids of ``codebook.npy``, or for a recipe
    with ``tree_branching`` the vocabulary tree whose leaves they are."""
    centroids = np.load(codebook_path)
    if not config.tree_branching:
        return centroids
    path = Path(codebook_path).with_name(TREE_FILE)
    try:
        with np.load(path) as z:
            arrays = {name: z[name] for name in ("child_start", "child_next", "centers")}
            branching = int(z["branching"])
    except (OSError, KeyError, ValueError) as e:
        raise StoreError(f"{path}: cannot read the vocabulary tree ({e}); run `features "
                         f"codebook` again") from None
    return VocabularyTree.from_arrays(centroids, branching=branching, **arrays)


def codebook_attrs(config, codebook) -> dict:
    """The ``codebook`` group's attributes that say how a tree was learned (none for a flat
    codebook)."""
    if not isinstance(codebook, VocabularyTree):
        return {}
    return {"algorithm": TREE_ALGORITHM, "branching": codebook.branching,
            "depth": tree_depth(config.words, config.tree_branching, config.tree_depth),
            "levels": codebook.depth}
