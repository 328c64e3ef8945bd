"""Large vocabularies: a vocabulary tree learned by hierarchical k-means.

A flat codebook of 100,000 or 1,000,000 words costs k-means over k centroids at every
iteration and a search of k centroids per descriptor. A vocabulary tree (Nister and
Stewenius 2006; VLFeat's ``vl_hikmeans``) splits the descriptors into ``branching`` clusters
by k-means, then each cluster again, on the descriptors that reach it, down to ``depth``
levels: its leaves are the visual words, and a descriptor's word is found by descending
the tree, ``branching`` distances per level instead of one per word.

:func:`hikmeans` learns a tree of exactly ``words`` leaves:

- ``words = branching ** depth`` is ``vl_hikmeans``'s full tree: every node has
  ``branching`` children.
- Fewer words: the leaves below a node are shared among its children in proportion to the
  descriptors that reach each (each child gets at least one, at most what its subtree and
  its descriptors can hold), as if the tree were cut where the data are thin.
- Descriptors spread too unevenly for the full tree (dense SIFT's low-contrast patches
  crowd a few branches): the children holding most of them get more words than a subtree
  of the remaining depth holds, and grow deeper; ``depth`` is that of the full tree, and
  :attr:`VocabularyTree.depth` the longest path. (Splitting such a node flat instead, into
  hundreds of words, made the descent 3 times slower on dense SIFT.)
- Each node's k-means is :func:`~features.codebook.kmeans.kmeans_fit` (k-means++ seeding,
  Lloyd on the exact assignment), seeded by the seed and the node's number, on a seeded
  sample of at most ``node_sample`` rows per center (FAISS caps its k-means training set
  the same way); then every descriptor of the node goes to the child of its nearest final
  center (exact), so the descriptors a subtree learns from are those that descend into it.
- All-zero descriptors (dense SIFT below its contrast threshold) are left out of the
  learning; a node whose descriptors hold fewer distinct rows than its share of words
  keeps the distinct rows as words and repeats one of them for the rest (words no
  descriptor reaches).

Memory: the descriptors (uint8, may be memory-mapped), 12 bytes per row for their children
at the root, and one child's copy at each level below: about ``branching / (branching - 1)``
times the sample; then the words (written into one preallocated float32 array as their
leaves are made) and the centers of every slot (words and internal nodes, float32, for the
descent), which at a million words outweigh the sample (``benchmarks/results/tree_1m.md``).

A descriptor's word (:meth:`VocabularyTree.assign`, ``ext/_tree.pyx``): from the root,
the child of nearest center (float64 distance to the float32 centers, ties to the first
child) until a leaf. It is not the nearest word of all (that is the flat search's), it is
the tree's: the same for a stored image and for a query.

The arrays (what the store keeps, ``codebook/tree``): ``child_start`` (int32, internal
nodes + 1; the children of internal node ``j`` are the slots
``child_start[j]:child_start[j + 1]``, the root is node 0), ``child_next`` (int32, one per
slot: the slot's internal node, or ``-1 - word`` for a leaf) and ``centers`` (float32, the
centers of the slots that are internal nodes, in slot order; a leaf's center is its word's
centroid).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._ext import load
from .._shared.checks import check_int, check_out
from .._shared.threads import one_blas_thread
from ..exceptions import ParameterError
from .assign import Assigner
from .kmeans import KMEANS_TOL, kmeans_fit

__all__ = ["VocabularyTree", "hikmeans", "tree_depth", "TREE_ALGORITHM", "NODE_SAMPLE"]

TREE_ALGORITHM = ("hierarchical k-means (vocabulary tree; greedy k-means++ init, Lloyd, "
                  "exact pruned assignment at each node)")
# Rows per center a node's k-means learns from (a seeded sample of the node's rows).
NODE_SAMPLE = 256
# Rows per block when a node's descriptors are sent to its children.
_BLOCK = 65536
# Children whose float32 distance is within this times (d + 3) (relative) of the nearest's
# are compared again in float64: twice the float32 error bound of a squared distance,
# (d + 3) 2**-24 (ext/_tree.pyx).
_DIST_RTOL = 2.0 * 2.0 ** -24


def tree_depth(words, branching, depth=0) -> int:
    """The tree's depth: ``depth`` if given (checked: ``branching ** depth`` leaves must hold
    ``words``), else the fewest levels that hold them (``vl_hikmeans``'s rule)."""
    words = check_int(words, "words", 2)
    branching = check_int(branching, "tree_branching", 2)
    depth = check_int(depth, "tree_depth", 0)
    if depth == 0:
        depth = max(1, math.ceil(math.log(words) / math.log(branching) - 1e-9))
        while branching ** depth < words:
            depth += 1
        return depth
    if branching ** depth < words:
        raise ParameterError(f"tree_depth {depth} with tree_branching {branching} holds "
                             f"{branching ** depth} words, fewer than the {words} asked; "
                             f"give a larger depth or leave it out", "tree_depth")
    return depth


@dataclass(frozen=True)
class VocabularyTree:
    """A vocabulary tree: its leaves are the words (see the module doc for the arrays)."""
    centroids: np.ndarray     # float32 (words, d): the leaves, by word
    child_start: np.ndarray   # int32 (internal nodes + 1,)
    child_next: np.ndarray    # int32 (slots,)
    centers: np.ndarray       # float32 (internal slots, d)
    branching: int
    depth: int                # the longest path from the root to a leaf

    def __post_init__(self):
        c, start, nxt = self.centroids, self.child_start, self.child_next
        if c.ndim != 2 or c.dtype != np.float32 or len(c) < 1:
            raise ParameterError(f"tree centroids must be float32 (words, d), got "
                                 f"{c.dtype} {c.shape}")
        if (start.dtype != np.int32 or nxt.dtype != np.int32 or start.ndim != 1
                or nxt.ndim != 1 or len(start) < 2 or start[0] != 0
                or start[-1] != len(nxt) or np.any(np.diff(start) < 1)):
            raise ParameterError("tree child_start must be int32 increasing from 0 to the "
                                 "number of slots, and child_next int32 (slots,)")
        internal = nxt >= 0
        leaves = -1 - nxt[~internal]
        if (np.any(nxt[internal] >= len(start) - 1) or np.any(nxt[internal] == 0)
                or len(np.unique(nxt[internal])) != internal.sum()
                or not np.array_equal(np.sort(leaves), np.arange(len(c)))):
            raise ParameterError("tree child_next must name each internal node but the "
                                 "root once and each word once")
        if self.centers.shape != (int(internal.sum()), c.shape[1]):
            raise ParameterError(f"tree centers must be ({int(internal.sum())}, "
                                 f"{c.shape[1]}), got {self.centers.shape}")
        full = np.empty((len(nxt), c.shape[1]), np.float32)
        full[internal] = self.centers
        full[~internal] = c[leaves]
        object.__setattr__(self, "_slots", full)

    def __reduce__(self):
        # sent to every shard task: the arrays only, the slots' centers made again there
        return (_rebuilt, (self.centroids, self.child_start, self.child_next, self.centers,
                           self.branching))

    @property
    def k(self) -> int:
        """Number of words (the leaves)."""
        return len(self.centroids)

    @property
    def d(self) -> int:
        return self.centroids.shape[1]

    def arrays(self) -> dict:
        """The arrays the store keeps under ``codebook/tree`` (the leaves are the codebook's
        ``centroids``)."""
        return {"child_start": self.child_start, "child_next": self.child_next,
                "centers": self.centers}

    @classmethod
    def from_arrays(cls, centroids, child_start, child_next, centers, branching):
        child_start = np.ascontiguousarray(child_start, np.int32)
        child_next = np.ascontiguousarray(child_next, np.int32)
        tree = cls(np.ascontiguousarray(centroids, np.float32), child_start, child_next,
                   np.ascontiguousarray(centers, np.float32), int(branching), 1)
        object.__setattr__(tree, "depth", _longest_path(child_start, child_next))
        return tree

    def assign(self, descriptors, out=None, n_threads=1):
        """The word of each row (uint8, or float: converted to float32), int32 (n,), written
        into ``out`` when given (C-contiguous int32 (n,))."""
        x = np.asarray(descriptors)
        if x.ndim != 2 or x.shape[1] != self.d:
            raise ParameterError(f"descriptors must have shape (n, {self.d}), got {x.shape}")
        if x.dtype != np.uint8:
            if x.dtype.kind != "f":
                raise ParameterError(f"descriptors dtype must be uint8 or float, got {x.dtype}")
            x = x.astype(np.float32)
            if not np.isfinite(x).all():
                raise ParameterError("descriptors contain NaN or infinite values")
        x = np.ascontiguousarray(x)
        n = x.shape[0]
        out = check_out(out, (n,), np.int32)
        if n:
            t = check_int(n_threads, "n_threads", 1)
            widest = int(np.diff(self.child_start).max())
            load("_tree", "vocabulary tree").descend(
                x, self._slots, self.child_start, self.child_next, out, self.depth,
                np.empty((t, self.d), np.float32), np.empty((t, widest), np.float32),
                _DIST_RTOL * (self.d + 3), t)
        return out

    def coarse_words(self, level) -> np.ndarray:
        """Each word's node ``level`` levels below the root, as int32 (words,): the coarser
        vocabulary of that level of the tree, a group named by its smallest word (a leaf
        less deep than ``level`` is a group of its own).

        Two descriptors of one word share its group, and two of different words share it
        when their descent parted below ``level``: what spatial verification needs to find
        the tentative matches that a fine vocabulary splits. A tree learned by
        :func:`hikmeans` numbers each subtree's words contiguously, so the groups are
        non-decreasing in the word (features sorted by word stay sorted by group)."""
        level = check_int(level, "level", 1)
        start, nxt = self.child_start, self.child_next
        n_nodes = len(start) - 1
        slot_node = np.repeat(np.arange(n_nodes, dtype=np.int64), np.diff(start))
        internal = nxt >= 0
        parent = np.full(n_nodes, -1, np.int64)
        parent[nxt[internal]] = slot_node[internal]
        # depth of each internal node (the root 0): a fixed point, one pass per level
        depth = np.zeros(n_nodes, np.int64)
        for _ in range(self.depth):
            depth[1:] = depth[parent[1:]] + 1
        # each leaf's node at `level`: climb from the node holding it
        words = (-1 - nxt[~internal]).astype(np.int64)
        node = slot_node[~internal]
        for _ in range(self.depth):
            node = np.where(depth[node] > level, parent[node], node)
        shallow = depth[node] < level      # the leaf is at `level` or above: its own group
        key = np.where(shallow, n_nodes + words, node)
        first = np.full(n_nodes + self.k, self.k, np.int64)
        np.minimum.at(first, key, words)
        out = np.empty(self.k, np.int32)
        out[words] = first[key]
        return out


def _rebuilt(centroids, child_start, child_next, centers, branching):
    return VocabularyTree.from_arrays(centroids, child_start, child_next, centers, branching)


def _longest_path(child_start, child_next) -> int:
    depth, frontier = 0, [0]
    while frontier:
        depth += 1
        nxt = np.concatenate([child_next[child_start[j]:child_start[j + 1]] for j in frontier])
        frontier = [int(j) for j in nxt[nxt >= 0]]
    return depth


def hikmeans(descriptors, words, branching, *, depth=0, iters=25, seed=0,
             node_sample=NODE_SAMPLE, tol=KMEANS_TOL, progress=None) -> VocabularyTree:
    """A vocabulary tree of exactly ``words`` leaves over the rows of ``descriptors``
    (uint8 or float, (n, d); a memory-mapped array is read, not copied), ``branching``
    children per node, at most ``depth`` levels (0: the fewest that hold ``words``).

    ``iters``, ``tol``: each node's k-means (:func:`~features.codebook.kmeans.kmeans_fit`);
    ``node_sample``: rows per center it learns from; ``progress(done, total)``: words
    learned so far, of ``words``. Same data, options and seed: the same tree.
    """
    x = np.asarray(descriptors)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ParameterError(f"need a non-empty (n, d) array of descriptors, got shape {x.shape}")
    if x.dtype != np.uint8 and x.dtype.kind not in "biuf":
        raise ParameterError(f"descriptors must be numeric, got dtype {x.dtype}")
    depth = tree_depth(words, branching, depth)
    words = int(words)
    iters = check_int(iters, "iters", 1)
    seed = check_int(seed, "seed", 0)
    node_sample = check_int(node_sample, "node_sample", 1)
    x = _without_zero_rows(x)
    if x.shape[0] < words:
        raise ParameterError(f"cannot learn {words} words from {x.shape[0]} descriptors "
                             f"(all-zero ones left out); use fewer words or more images")
    builder = _Builder(x.shape[1], branching, iters, seed, node_sample, tol, words, progress)
    # thousands of small products: a BLAS thread pool costs more than it gives (7x slower
    # on 2 cores when the machine is busy)
    with one_blas_thread():
        builder.node(x, words, depth)
    centroids = builder.leaves
    internal = [c for c in builder.centers if c is not None]
    centers = (np.stack(internal) if internal else np.zeros((0, x.shape[1]), np.float32))
    tree = VocabularyTree(centroids, np.asarray(builder.child_start + [len(builder.child_next)],
                                                np.int32),
                          np.asarray(builder.child_next, np.int32), centers, int(branching),
                          depth)
    object.__setattr__(tree, "depth", _longest_path(tree.child_start, tree.child_next))
    return tree


class _Builder:
    """The tree as it is learned, depth first: the words are numbered in the order their
    leaves are made, the internal nodes in the order they are made, each node's slots
    taken when it is made (so the slots of node ``j`` are contiguous and ``child_start``
    increases)."""

    def __init__(self, d, branching, iters, seed, node_sample, tol, words, progress):
        self.d, self.branching, self.iters, self.seed = d, branching, iters, seed
        self.node_sample, self.tol, self.total, self.progress = node_sample, tol, words, progress
        self.child_start: list[int] = []
        self.child_next: list[int] = []
        self.centers: list = []          # per slot: its float32 center if internal, else None
        # a million words as a list of small arrays cost twice their size, and as much again
        # to gather: each leaf is written in place
        self.leaves = np.empty((words, d), np.float32)
        self.words = 0

    def node(self, x, budget, levels):
        """Learn the subtree of ``budget`` words over the rows ``x``, at most ``levels``
        deep; returns its internal node number."""
        number = len(self.child_start)
        rng = np.random.default_rng([self.seed, number])
        if budget <= self.branching:
            return self._leaves(number, x, budget, rng)
        centers = self._kmeans(x, self.branching, rng)
        if centers is None:
            return self._leaves(number, x, budget, rng)
        labels = _nearest(centers, x)
        counts = np.bincount(labels, minlength=self.branching)
        alloc = _allocate(budget, counts, self.branching ** (levels - 1)) if levels > 1 \
            else None
        if alloc is None:
            # the descriptors are too unevenly spread for the full tree here: the children
            # that hold most of them get more words than their subtree of the full depth
            # holds, and grow deeper
            alloc = _allocate(budget, counts, budget)
        first = self._slots(number, self.branching)
        order = np.argsort(labels, kind="stable")
        del labels
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for j in range(self.branching):
            slot = first + j
            rows = x[order[bounds[j]:bounds[j + 1]]]
            if alloc[j] == 1 or len(rows) == 0:
                self._leaf(slot, centers[j])   # the center the descent compares
                continue
            self.centers[slot] = np.asarray(centers[j], np.float32)
            self.child_next[slot] = self.node(rows, int(alloc[j]), max(levels - 1, 1))
            del rows
        return number

    def _slots(self, number, k):
        self.child_start.append(len(self.child_next))
        self.child_next.extend([0] * k)
        self.centers.extend([None] * k)
        return self.child_start[number]

    def _leaf(self, slot, center):
        self.child_next[slot] = -1 - self.words
        self.leaves[self.words] = center
        self.words += 1
        if self.progress is not None:
            self.progress(self.words, self.total)

    def _leaves(self, number, x, budget, rng):
        """A node whose children are ``budget`` leaves: k-means with that many centers."""
        first = self._slots(number, budget)
        if budget == 1:
            centers = x.mean(axis=0, dtype=np.float64)[None, :]
        else:
            centers = self._kmeans(x, budget, rng)
            if centers is None:
                centers = _distinct_padded(x, budget)
        for j in range(budget):
            self._leaf(first + j, centers[j])
        return number

    def _kmeans(self, x, k, rng):
        """k-means centers of the node's rows (a seeded sample of ``node_sample`` per
        center), or None when they hold fewer than k distinct rows."""
        m = self.node_sample * k
        sample = x if len(x) <= m else x[np.sort(rng.choice(len(x), m, replace=False))]
        try:
            return kmeans_fit(np.ascontiguousarray(sample), k, iters=self.iters,
                              seed=int(rng.integers(2 ** 31)), tol=self.tol).centroids
        except ParameterError:
            if len(x) > len(sample):
                # the sample was short of distinct rows; the whole node may not be
                return self._kmeans_all(x, k, rng)
            return None

    def _kmeans_all(self, x, k, rng):
        try:
            return kmeans_fit(np.ascontiguousarray(x), k, iters=self.iters,
                              seed=int(rng.integers(2 ** 31)), tol=self.tol).centroids
        except ParameterError:
            return None


def _without_zero_rows(x):
    """The rows that are not all zero (a copy only when some are). Dense SIFT gives the
    same all-zero descriptor to every patch below its contrast threshold, a fifth of an
    sbow sample: learned from, that one point would get a fifth of the words, all copies
    of it. Left out, a zero descriptor gets the word its descent reaches like any other."""
    keep = np.empty(len(x), bool)
    for s in range(0, len(x), _BLOCK):
        keep[s:s + _BLOCK] = np.asarray(x[s:s + _BLOCK]).any(axis=1)
    return x if keep.all() else x[keep]


def _nearest(centers, x):
    """The nearest center of every row (exact), block by block (bounded scratch)."""
    assigner = Assigner(centers)
    labels = np.empty(len(x), np.int32)
    for s in range(0, len(x), _BLOCK):
        assigner.assign(np.ascontiguousarray(x[s:s + _BLOCK]), out=labels[s:s + _BLOCK])
    return labels


def _allocate(budget, counts, cap):
    """Words per child: at least one each, at most ``cap`` (what its subtree holds) and its
    rows, shared in proportion to the rows; None when the children cannot hold ``budget``."""
    k = len(counts)
    caps = np.maximum(1, np.minimum(cap, counts)).astype(np.int64)
    if caps.sum() < budget:
        return None
    alloc = np.ones(k, np.int64)
    weight = counts.astype(np.float64) + 1e-9
    while alloc.sum() < budget:
        left = budget - int(alloc.sum())
        room = caps - alloc
        open_ = np.flatnonzero(room > 0)
        share = left * weight[open_] / weight[open_].sum()
        add = np.minimum(np.floor(share).astype(np.int64), room[open_])
        if add.sum() == 0:
            # less than one word each: to the largest shares first
            best = open_[np.argsort(-share, kind="stable")[:left]]
            alloc[best] += 1
        else:
            alloc[open_] += add
    return alloc


def _distinct_padded(x, k):
    """The node's distinct rows, in order of first appearance, then the first repeated up
    to ``k`` rows (the repeats are words no descriptor reaches: ties go to the first)."""
    rows = np.ascontiguousarray(x)
    _, first = np.unique(rows, axis=0, return_index=True)
    distinct = rows[np.sort(first)].astype(np.float32)
    pad = np.repeat(distinct[:1], k - len(distinct), axis=0)
    return np.concatenate([distinct, pad])[:k]
