"""A store whose words are a vocabulary tree (--tree-branching, --tree-depth): learned by the
codebook step, kept as codebook/tree, descended by the shards, by queries and by a store
encoded --like it; checked by verify; its options refused with one line when they
contradict."""
import h5py
import numpy as np
import pytest

from conftest import run_cli

import features
from features.codebook import VocabularyTree
from features.exceptions import StoreError
from features.pipeline import run
from features.presets import get_preset
from features.sources import open_source


@pytest.fixture(scope="module")
def tree_store(tmp_path_factory, small_set):
    config = get_preset("sift", words=64, tree_branching=4, tree_depth=3, max_side=256,
                        max_keypoints=400, shard_size=5, sample_images=24)
    out = tmp_path_factory.mktemp("tree") / "store"
    run(config, open_source(str(small_set)), out, progress=False)
    return out


def test_store_keeps_the_tree_and_its_words_are_the_descent(tree_store, small_set):
    with features.open_store(tree_store) as store:
        tree = store.codebook_tree
        assert isinstance(tree, VocabularyTree)
        assert tree.k == 64 and tree.depth == 3 and tree.branching == 4
        assert np.array_equal(tree.centroids, store.centroids)
        attrs = store.h5["codebook"].attrs
        assert "hierarchical k-means" in attrs["algorithm"]
        assert (attrs["branching"], attrs["depth"]) == (4, 3)
        # every image's words are those its descriptors descend to
        for i in range(0, store.n_images, 5):
            assert np.array_equal(store.words(i), tree.assign(store.descriptors(i)))
        # a query by image is encoded exactly as its stored row
        encoder = features.Encoder(store, "bovw")
        i = store.index_of("coins/half.jpg")
        row = encoder.encode(str(small_set / "coins" / "half.jpg"))
        assert np.array_equal(row, store.encoding("bovw", i, i + 1).toarray())


def test_cli_info_verify_search(tree_store, small_set, cli_env):
    info = run_cli("info", tree_store, env=cli_env, check=True).stdout
    assert "64 words (vocabulary tree: 4 branches, 3 levels, 21 nodes)" in info
    assert run_cli("verify", tree_store, env=cli_env).returncode == 0
    hits = run_cli("search", tree_store, small_set / "chelsea" / "half.jpg", "--rerank", "-k",
                   "3", "--json", env=cli_env, check=True).stdout
    assert '"chelsea/half.jpg"' in hits


def test_like_descends_the_same_tree(tree_store, small_set, tmp_path):
    out = tmp_path / "val"
    run(None, open_source(str(small_set)), out, progress=False, like=tree_store, limit=6)
    with features.open_store(tree_store) as a, features.open_store(out) as b:
        ta, tb = a.codebook_tree, b.codebook_tree
        for name, array in ta.arrays().items():
            assert np.array_equal(array, tb.arrays()[name])
        for i in range(b.n_images):
            j = a.index_of(b.keys[i])
            assert np.array_equal(b.words(i), a.words(j))


def test_damaged_tree_is_found(tree_store, tmp_path, cli_env):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(tree_store, copy)
    with h5py.File(copy / "store.h5", "r+") as f:
        centers = f["codebook/tree/centers"]
        centers[0, 0] += 1.0
    proc = run_cli("verify", copy, env=cli_env)
    assert proc.returncode == 1 and "codebook/tree differs from its checksum" in proc.stdout
    with features.open_store(copy) as store:
        with pytest.raises(StoreError, match="codebook/tree"):
            store.codebook_tree


@pytest.mark.parametrize("args, flag", [
    (["--words", "64", "--tree-branching", "4", "--tree-depth", "2"], "--tree-depth"),
    (["--tree-depth", "3"], "--tree-depth"),
    (["--tree-branching", "1"], "--tree-branching"),
])
def test_bad_tree_options_are_one_line(args, flag, small_set, tmp_path, cli_env):
    proc = run_cli("run", small_set, "-o", tmp_path / "s", *args, env=cli_env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0], proc.stderr


def test_like_refuses_another_tree(tree_store, small_set, tmp_path, cli_env):
    proc = run_cli("run", small_set, "-o", tmp_path / "v", "--like", tree_store,
                   "--tree-branching", "8", env=cli_env)
    assert proc.returncode == 2
    assert "tree_branching 8 contradicts" in proc.stderr or "--tree-branching 8" in proc.stderr
