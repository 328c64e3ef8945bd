"""Re-ranking with a fine vocabulary: spatial verification matches features by a coarser
level of the vocabulary tree, where an edited copy's features still meet their originals'."""
import dataclasses

import numpy as np
import pytest

from features.pipeline import run
from features.presets import get_preset
from features.search import MIN_INLIERS, Searcher
from features.search.searcher import match_groups
from features.search.spatial import VerifyParams
from features.sources import open_source
from features.exceptions import ParameterError


@pytest.fixture(scope="module")
def fine_store(tmp_path_factory, small_set):
    # 4096 words for about 9,000 features: most words hold one or two of a photo's features
    config = get_preset("sift", words=4096, tree_branching=8, points_per_word=2,
                        sample_per_image=400, max_side=256, max_keypoints=400, shard_size=5,
                        sample_images=24)
    out = tmp_path_factory.mktemp("fine") / "store"
    run(config, open_source(str(small_set)), out, progress=False)
    return out


def _pair_inliers(searcher, match_words):
    searcher.verify_params = dataclasses.replace(searcher.verify_params,
                                                 match_words=match_words)
    keys = [str(k) for k in searcher.store.keys]
    photo = [k.split("/")[0] for k in keys]
    same, other = [], []
    for i, key in enumerate(keys):
        ids = [j for j in range(len(keys)) if j != i]
        counts, _ = searcher.verify_candidates(searcher.query_from_key(key), ids)
        for j, c in zip(ids, counts.tolist()):
            (same if photo[j] == photo[i] else other).append(c)
    return np.array(same), np.array(other)


def test_coarse_level_finds_the_matches_fine_words_split(fine_store):
    with Searcher(fine_store) as searcher:
        tree = searcher.quantizer
        assert tree.k == 4096 and match_groups(tree, 10**6) is None
        groups = match_groups(tree, 512)
        assert len(np.unique(groups)) <= 512 and np.all(np.diff(groups) >= 0)
        by_word, by_word_other = _pair_inliers(searcher, 10**6)
        by_group, by_group_other = _pair_inliers(searcher, 512)
        # copies: more inliers, and more of them verified, than matching by word alone
        assert np.median(by_group) >= 1.5 * np.median(by_word)
        assert (by_group >= MIN_INLIERS).mean() > (by_word >= MIN_INLIERS).mean()
        # unrelated photos: still below the threshold
        assert by_group_other.max() < MIN_INLIERS
        # the drawn matches are the counted ones
        query = searcher.query_from_key("chelsea/original.jpg")
        j = searcher.store.index_of("chelsea/rotate12.jpg")
        count, _ = searcher.verify_candidates(query, [j])
        assert searcher.matches(query, j)["inliers"] == count[0] >= MIN_INLIERS


def test_match_words_checked():
    with pytest.raises(ParameterError, match="match_words"):
        VerifyParams(match_words=1)
