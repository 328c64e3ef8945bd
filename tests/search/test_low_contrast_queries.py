"""Dark, hazy and low-gain copies of real photos as queries: the `sift` recipe finds their
features and retrieves their originals; a store saved before the recipe had
`relative_contrast` encodes its queries with the absolute threshold its images had."""
import json
import shutil

import cv2
import h5py
import numpy as np
import pytest

from features.exceptions import QueryError
from features.search import Searcher

COPIES = {
    "dark": (46 / 255, 85),              # grey levels squeezed into 85-131
    "hazy": (0.35, 0.65 * 215),          # 35% of the contrast under a light veil
    "low-gain": (0.3, 0),                # 30% of the exposure
}


def _copy(small_set, photo, copy, out):
    gain, offset = COPIES[copy]
    image = cv2.imread(str(small_set / photo / "original.jpg"))
    edited = np.clip(np.rint(image.astype(np.float32) * gain + offset), 0, 255).astype(np.uint8)
    path = out / f"{photo}-{copy}.jpg"
    cv2.imwrite(str(path), edited, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


@pytest.mark.parametrize("copy", sorted(COPIES))
@pytest.mark.parametrize("photo", ["astronaut", "chelsea", "coins", "rocket"])
def test_low_contrast_copy_finds_its_original(small_store, small_set, tmp_path, photo, copy):
    query_path = _copy(small_set, photo, copy, tmp_path)
    with Searcher(small_store) as searcher:
        original = searcher.query_from_key(f"{photo}/original.jpg")
        query = searcher.query(str(query_path))
        assert len(query.words) >= 0.5 * len(original.words)
        hits = searcher.search(query, k=6, rerank=True)
    # every copy of the photo is a right answer; the original is among the first three
    assert all(h["key"].startswith(f"{photo}/") for h in hits[:3])
    assert f"{photo}/original.jpg" in [h["key"] for h in hits[:3]]


def test_store_of_an_older_recipe_keeps_its_absolute_threshold(small_store, small_set,
                                                               tmp_path):
    """A store written before the field existed has no `relative_contrast` in its recipe: its
    queries are extracted with the absolute threshold, as its images were."""
    old = tmp_path / "old"
    shutil.copytree(small_store, old)
    with h5py.File(old / "store.h5", "r+") as f:
        saved = json.loads(f.attrs["config"])
        assert saved["relative_contrast"] is True
        del saved["relative_contrast"]
        f.attrs["config"] = json.dumps(saved, sort_keys=True)
    query_path = _copy(small_set, "astronaut", "dark", tmp_path)
    with Searcher(old) as searcher:
        assert searcher.store.config.relative_contrast is False
        try:
            before = len(searcher.query(str(query_path)).words)
        except QueryError as e:           # none at all: the failure the field is for
            assert "no features" in str(e)
            before = 0
    with Searcher(small_store) as searcher:
        now = len(searcher.query(str(query_path)).words)
    assert before < 0.5 * now
