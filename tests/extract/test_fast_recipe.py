"""The `sift-fast` preset: the `sift` recipe with images shrunk to a smaller side before
detection. Its side is refused with one ParameterError naming it when out of range, is
recorded in the store's recipe, extracts a query as the store's images were, and is what a
store made `--like` it uses."""
import dataclasses

import numpy as np
import pytest

import features
from features.decode import decode_gray
from features.exceptions import ParameterError
from features.pipeline import run
from features.presets import Config, get_preset
from features.sources import open_source

SMALL = dict(words=32, tree_branching=4, max_keypoints=400, shard_size=5, sample_images=24)


@pytest.fixture(scope="module")
def fast_store(tmp_path_factory, small_set):
    out = tmp_path_factory.mktemp("fast") / "store"
    run(get_preset("sift-fast", **SMALL), open_source(str(small_set)), out, progress=False)
    return out


def test_sift_fast_is_sift_at_a_smaller_side():
    sift, fast = get_preset("sift"), get_preset("sift-fast")
    assert fast.preset == "sift-fast" and fast.max_side == 256 < sift.max_side
    differ = {f.name for f in dataclasses.fields(Config)
              if getattr(sift, f.name) != getattr(fast, f.name)}
    assert differ == {"preset", "max_side"}


@pytest.mark.parametrize("side", [0, 15, -256])
def test_side_out_of_range_is_refused_naming_it(side):
    with pytest.raises(ParameterError, match="max_side must be >= 16") as e:
        get_preset("sift-fast", max_side=side)
    assert e.value.param == "max_side"


def test_side_is_recorded_and_a_query_is_extracted_at_it(fast_store, small_set):
    path = small_set / "chelsea" / "original.jpg"
    with features.open_store(fast_store) as store:
        assert store.config.preset == "sift-fast" and store.config.max_side == 256
        encoder = features.Encoder(store, "bovw")
        f = encoder.features(str(path))
        assert max(f.decoded.gray.shape) == 256
        # frames are in pixels of the original, larger, image
        full = decode_gray(path.read_bytes())
        assert max(full.gray.shape) > 256
        assert f.frames[:, 0].max() > 256 * 1.1 or f.frames[:, 1].max() > 256 * 1.1
        i = store.index_of("chelsea/original.jpg")
        assert np.array_equal(encoder.encode(str(path)),
                              store.encoding("bovw", i, i + 1).toarray())


def test_like_reproduces_the_side(fast_store, small_set, tmp_path):
    out = tmp_path / "val"
    run(None, open_source(str(small_set)), out, progress=False, like=fast_store, limit=6)
    with features.open_store(fast_store) as a, features.open_store(out) as b:
        assert b.config == a.config and b.config.max_side == 256
        for i in range(b.n_images):
            j = a.index_of(b.keys[i])
            assert np.array_equal(b.words(i), a.words(j))
            assert np.array_equal(b.descriptors(i), a.descriptors(j))


def test_search_by_image_finds_the_copies(fast_store, small_set):
    with features.Searcher(fast_store) as searcher:
        hits = searcher.search(str(small_set / "coins" / "half.jpg"), k=4, rerank=True)
    assert hits[0]["key"] == "coins/half.jpg"
    assert sum(h["key"].startswith("coins/") for h in hits) >= 3
