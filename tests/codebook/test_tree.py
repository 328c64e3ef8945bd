"""The vocabulary tree: hierarchical k-means (exactly `words` leaves, vl_hikmeans's full tree
when words = branching ** depth) and assignment by descending it (ext/_tree.pyx)."""
import numpy as np
import pytest

from features.codebook import (Assigner, VocabularyTree, hikmeans, kmeans, quantization_error,
                               quantizer, tree_depth)
from features.exceptions import ParameterError


def blobs(n=6000, d=16, centers=80, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    c = rng.random((centers, d)) * 200
    x = c[rng.integers(centers, size=n)] + rng.normal(0, 8, (n, d))
    return np.clip(x, 0, 255).astype(dtype)


def descend_reference(tree, x):
    """The descent in NumPy: float64 distances, ties to the first child."""
    slots = np.empty((len(tree.child_next), tree.d), np.float32)
    internal = tree.child_next >= 0
    slots[internal] = tree.centers
    slots[~internal] = tree.centroids[-1 - tree.child_next[~internal]]
    out = np.empty(len(x), np.int32)
    for i, row in enumerate(x.astype(np.float64)):
        node = 0
        while True:
            lo, hi = tree.child_start[node], tree.child_start[node + 1]
            dist = ((slots[lo:hi].astype(np.float64) - row) ** 2).sum(axis=1)
            nxt = tree.child_next[lo + int(np.argmin(dist))]
            if nxt < 0:
                out[i] = -1 - nxt
                break
            node = nxt
    return out


def test_full_tree_is_vl_hikmeans_shape():
    x = blobs()
    tree = hikmeans(x, 64, 4, depth=3, seed=0)
    # branching ** depth words: every internal node has exactly `branching` children
    assert tree.k == 64 and tree.depth == 3 and tree.branching == 4
    assert len(tree.child_start) - 1 == 1 + 4 + 16
    assert (np.diff(tree.child_start) == 4).all()
    assert sorted(-1 - tree.child_next[tree.child_next < 0]) == list(range(64))
    words = tree.assign(x)
    # the leaves are learned from the rows that descend to them: none is left empty
    assert np.bincount(words, minlength=64).min() > 0


@pytest.mark.parametrize("words, branching, depth", [(50, 4, 0), (100, 3, 5), (7, 10, 0),
                                                     (37, 2, 0)])
def test_exactly_the_words_asked(words, branching, depth):
    x = blobs(seed=words)
    tree = hikmeans(x, words, branching, depth=depth, seed=1)
    assert tree.k == words == len(tree.centroids)
    # a branch grows deeper only where the descriptors crowd
    assert tree.depth <= tree_depth(words, branching, depth) + 2
    assert np.diff(tree.child_start).max() <= branching
    assert np.bincount(tree.assign(x), minlength=words).min() > 0


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_descent_kernel_equals_reference(dtype):
    x = blobs(dtype=dtype)
    tree = hikmeans(x, 60, 4, seed=2)
    q = blobs(n=500, seed=9, dtype=dtype)
    assert np.array_equal(tree.assign(q), descend_reference(tree, q))
    out = np.full(len(q), -7, np.int32)
    assert tree.assign(q, out=out) is out and (out >= 0).all()
    # float64 input is rounded to float32, as the flat assignment does
    assert np.array_equal(tree.assign(q.astype(np.float64)), tree.assign(q))


def test_one_level_is_exact_flat_assignment():
    x = blobs()
    tree = hikmeans(x, 12, 12, seed=0)
    assert tree.depth == 1
    q = blobs(n=2000, seed=5)
    assert np.array_equal(tree.assign(q), Assigner(tree.centroids).assign(q))
    assert quantizer(tree) is tree
    assert isinstance(quantizer(tree.centroids), Assigner)


def test_seeded_and_a_quantizer_near_flat_kmeans():
    data = blobs(n=15000, centers=200)
    x, held = data[:12000], data[12000:]
    a = hikmeans(x, 64, 4, seed=3)
    b = hikmeans(x, 64, 4, seed=3)
    for name in ("child_start", "child_next", "centers"):
        assert np.array_equal(a.arrays()[name], b.arrays()[name])
    assert np.array_equal(a.centroids, b.centroids)
    assert not np.array_equal(hikmeans(x, 64, 4, seed=4).centroids, a.centroids)
    words = a.assign(held)
    tree_err = float(((held.astype(np.float64) - a.centroids[words]) ** 2).sum(1).mean())
    flat_err = quantization_error(kmeans(x, 64, seed=3), held)
    random_err = quantization_error(x[:64].astype(np.float32), held)
    print(f"\nheld-out error: tree {tree_err:.0f}, flat {flat_err:.0f}, random {random_err:.0f}")
    # the tree's words are a codebook of about flat k-means's quality, not a random one
    assert tree_err < 1.3 * flat_err and tree_err < 0.7 * random_err


def test_few_distinct_rows():
    # a texture repeating itself: fewer distinct rows than words
    rng = np.random.default_rng(0)
    distinct = rng.integers(1, 255, (5, 8)).astype(np.uint8)
    x = distinct[rng.integers(5, size=300)]
    tree = hikmeans(x, 16, 4, seed=0)
    assert tree.k == 16
    words = tree.assign(x)
    # each distinct row its own word
    assert len(np.unique(words)) == 5
    for row in distinct:
        assert len(np.unique(words[(x == row).all(1)])) == 1


def test_zero_rows_are_not_learned_from():
    # dense SIFT below its contrast threshold: a fifth of the rows all zero
    x = blobs()
    with_zeros = np.concatenate([x, np.zeros((1500, x.shape[1]), np.uint8)])
    a, b = hikmeans(with_zeros, 40, 4, seed=0), hikmeans(x, 40, 4, seed=0)
    assert np.array_equal(a.centroids, b.centroids)
    # they get the word their descent reaches, one for all
    assert len(np.unique(a.assign(with_zeros[-1500:]))) == 1
    with pytest.raises(ParameterError, match="all-zero"):
        hikmeans(np.zeros((500, 8), np.uint8), 4, 2)


def test_memory_mapped_sample(tmp_path):
    x = blobs()
    np.save(tmp_path / "s.npy", x)
    mapped = np.load(tmp_path / "s.npy", mmap_mode="r")
    assert np.array_equal(hikmeans(mapped, 40, 4, seed=0).centroids,
                          hikmeans(x, 40, 4, seed=0).centroids)


def test_progress_counts_words():
    seen = []
    hikmeans(blobs(), 30, 4, seed=0, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (30, 30) and [d for d, _ in seen] == list(range(1, 31))


@pytest.mark.parametrize("kwargs, name", [
    (dict(words=100, branching=4, depth=3), "tree_depth"),     # 4**3 = 64 < 100
    (dict(words=100, branching=1), "tree_branching"),
    (dict(words=1, branching=4), "words"),
    (dict(words=20000, branching=4), None),                    # more words than rows
])
def test_bad_parameters(kwargs, name):
    with pytest.raises(ParameterError) as e:
        hikmeans(blobs(n=500), **kwargs)
    assert e.value.param == name


def test_tree_depth_rule():
    assert tree_depth(100000, 10) == 5 and tree_depth(1000000, 10) == 6
    assert tree_depth(64, 4) == 3 and tree_depth(65, 4) == 4 and tree_depth(8, 10) == 1
    assert tree_depth(64, 4, 5) == 5


def test_malformed_arrays_refused():
    tree = hikmeans(blobs(), 16, 4, seed=0)
    a = tree.arrays()
    bad_next = a["child_next"].copy()
    bad_next[bad_next < 0] = -1          # every leaf the same word
    with pytest.raises(ParameterError):
        VocabularyTree.from_arrays(tree.centroids, a["child_start"], bad_next, a["centers"], 4)
    with pytest.raises(ParameterError):
        VocabularyTree.from_arrays(tree.centroids, a["child_start"][::-1], a["child_next"],
                                   a["centers"], 4)
    same = VocabularyTree.from_arrays(tree.centroids, branching=4, **a)
    assert same.depth == tree.depth
    q = blobs(n=300, seed=3)
    assert np.array_equal(same.assign(q), tree.assign(q))
    with pytest.raises(ParameterError, match="shape"):
        tree.assign(q[:, :8])


def test_pickled_for_tasks():
    import pickle
    tree = hikmeans(blobs(), 40, 4, seed=0)
    data = pickle.dumps(tree)
    # the slots' centers are not sent: about the words and the inner centers only
    assert len(data) < 1.3 * (tree.centroids.nbytes + tree.centers.nbytes) + 4096
    again = pickle.loads(data)
    q = blobs(n=300, seed=2)
    assert np.array_equal(again.assign(q), tree.assign(q)) and again.depth == tree.depth


def _node_at(tree, x, level):
    """The node (or leaf, as -1 - word) each row's descent reaches after ``level`` steps."""
    out = np.empty(len(x), np.int64)
    for i, row in enumerate(x.astype(np.float64)):
        node = 0
        for _ in range(level):
            lo, hi = tree.child_start[node], tree.child_start[node + 1]
            centers = tree._slots[lo:hi].astype(np.float64)
            node = int(tree.child_next[lo + int(np.argmin(((centers - row) ** 2).sum(1)))])
            if node < 0:
                break
        out[i] = node
    return out


def test_coarse_words_are_the_nodes_of_a_level():
    x = blobs()
    tree = hikmeans(x, 64, 4, depth=3, seed=0)     # the full tree: 4 x 4 x 4
    words = np.arange(64)
    for level, size in ((1, 16), (2, 4)):
        np.testing.assert_array_equal(tree.coarse_words(level), words // size * size)
    np.testing.assert_array_equal(tree.coarse_words(3), words)
    np.testing.assert_array_equal(tree.coarse_words(9), words)
    # an uneven tree: two descriptors share a group exactly when their descents share
    # the node of that level, and a group is a run of words named by its first
    tree = hikmeans(x, 50, 4, seed=0)
    for level in (1, 2):
        groups = tree.coarse_words(level)
        assert np.all(np.diff(groups) >= 0) and len(np.unique(groups)) <= 4 ** level
        for g in np.unique(groups):
            members = np.flatnonzero(groups == g)
            assert members[0] == g and members[-1] == g + len(members) - 1
        by_group = groups[tree.assign(x)]
        by_node = _node_at(tree, x, level)
        pairs = set(zip(by_group.tolist(), by_node.tolist()))
        assert len(pairs) == len(set(by_group.tolist())) == len(set(by_node.tolist()))
    with pytest.raises(ParameterError, match="level"):
        tree.coarse_words(0)
